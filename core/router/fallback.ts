/**
 * What the router answers when no endpoint route matched (never on the hot path):
 * 405 for a known path with another method, the trailing-slash and fixed-path redirects of
 * KrakenD's gin router (301 for GET, 307 otherwise), else 404.
 */
export interface RouteEntry {
  readonly method: string;
  /** Route segments, `:name` for parameters. */
  readonly segments: readonly string[];
}

export type FallbackDecision =
  | { kind: 'redirect'; location: string; status: 301 | 307 }
  | { kind: 'method-not-allowed'; allow: string[] }
  | { kind: 'not-found' };

export interface FallbackOptions {
  redirectTrailingSlash: boolean;
  redirectFixedPath: boolean;
  handleMethodNotAllowed: boolean;
}

export class FallbackRouter {
  private readonly routes: RouteEntry[] = [];

  constructor(private readonly opts: FallbackOptions) {}

  add(method: string, route: string): void {
    this.routes.push({ method, segments: route.split('/').slice(1) });
  }

  private match(path: string, caseInsensitive: boolean): RouteEntry[] {
    const segs = path.split('/').slice(1);
    return this.routes.filter((r) => {
      if (r.segments.length !== segs.length) return false;
      for (let i = 0; i < segs.length; i++) {
        const want = r.segments[i]!;
        const have = segs[i]!;
        if (want.startsWith(':')) {
          if (have === '') return false;
          continue;
        }
        if (caseInsensitive ? want.toLowerCase() !== have.toLowerCase() : want !== have) return false;
      }
      return true;
    });
  }

  /** Rebuilds the concrete path of `route` from `path`, keeping parameter values as sent. */
  private static concrete(route: RouteEntry, path: string): string {
    const segs = path.split('/').slice(1);
    return '/' + route.segments.map((s, i) => (s.startsWith(':') ? segs[i] : s)).join('/');
  }

  decide(method: string, path: string, query: string): FallbackDecision {
    const status = method === 'GET' ? 301 : 307;
    const q = query ? '?' + query : '';
    const exact = this.match(path, false);
    if (exact.some((r) => r.method === method)) {
      // Routed by uWS normally; reaching here means an empty parameter or similar.
      return { kind: 'not-found' };
    }
    if (this.opts.redirectTrailingSlash && path !== '/') {
      const alt = path.endsWith('/') ? path.slice(0, -1) : path + '/';
      if (this.match(alt, false).some((r) => r.method === method)) return { kind: 'redirect', location: alt + q, status };
    }
    if (this.opts.redirectFixedPath) {
      const cleaned = cleanPath(path);
      for (const candidate of [cleaned, cleaned.endsWith('/') && cleaned !== '/' ? cleaned.slice(0, -1) : cleaned + '/']) {
        const hit = this.match(candidate, true).find((r) => r.method === method);
        if (hit) {
          const fixed = FallbackRouter.concrete(hit, candidate);
          if (fixed !== path) return { kind: 'redirect', location: fixed + q, status };
        }
      }
    }
    if (this.opts.handleMethodNotAllowed && exact.length > 0) {
      return { kind: 'method-not-allowed', allow: [...new Set(exact.map((r) => r.method))].sort() };
    }
    return { kind: 'not-found' };
  }
}

/** Go's path.Clean for URL paths: collapses `//`, resolves `.` and `..`, keeps a trailing slash. */
export function cleanPath(p: string): string {
  if (p === '') return '/';
  const trailing = p.length > 1 && p.endsWith('/');
  const out: string[] = [];
  for (const seg of p.split('/')) {
    if (seg === '' || seg === '.') continue;
    if (seg === '..') out.pop();
    else out.push(seg);
  }
  let r = '/' + out.join('/');
  if (trailing && r !== '/') r += '/';
  return r;
}
