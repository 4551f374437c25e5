# gw: an API gateway that runs KrakenD v3 configurations.
# Build for both architectures:  docker buildx build --platform linux/amd64,linux/arm64 -t gw .
# Run:  docker run -p 8080:8080 -v "$PWD/krakend.json:/etc/gw/gw.json:ro" gw
# (test/container.test.ts runs these exact steps in a temporary folder: keep the instructions to
#  FROM, WORKDIR, ENV, COPY, RUN, USER, EXPOSE, HEALTHCHECK, ENTRYPOINT and CMD.)

# ---- build: TypeScript to dist/ (dev dependencies stay in this stage) ----
FROM node:20-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json tsconfig.json ./
RUN npm ci --no-audit --no-fund
COPY core ./core
COPY cli ./cli
COPY plugins ./plugins
RUN npm run build

# ---- runtime: production dependencies and dist/ only, as a non-root user ----
FROM node:20-bookworm-slim
ENV NODE_ENV=production
WORKDIR /opt/gw
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY --from=build /src/dist ./dist
COPY examples ./examples
# The configuration lives where KrakenD's image keeps it (/etc/krakend/krakend.json): mount yours
# at /etc/gw/gw.json. The bundled one is the hello-world example (no other service needed).
COPY examples/hello.json /etc/gw/gw.json
# uWebSockets.js's glibc-compat copy (if the build needs one) is cached under $HOME/.cache.
USER node
EXPOSE 8080
# The port is the config's (8080 here), or KRAKEND_PORT when set.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.KRAKEND_PORT||8080)+'/__health').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
ENTRYPOINT ["node", "/opt/gw/dist/cli/gw.js"]
CMD ["run", "-c", "/etc/gw/gw.json"]
