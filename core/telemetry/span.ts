/**
 * A plugin call inside its span (telemetry/tracing.ts makes the spans): no dependency, so the
 * plugin glue can use it without loading the OpenTelemetry SDK when traces are off.
 */

/** A plugin call's span; `end` once, with the call's failure or null. */
export interface PluginSpan {
  end(error: Error | null): void;
}

/** Runs `call`, ending `span` when it returns, throws, or (a promise) settles. */
export function inSpan<T>(span: PluginSpan, call: () => T | Promise<T>): T | Promise<T> {
  let r: T | Promise<T>;
  try {
    r = call();
  } catch (err) {
    span.end(err as Error);
    throw err;
  }
  if (r === null || typeof r !== 'object' || typeof (r as { then?: unknown }).then !== 'function') {
    span.end(null);
    return r;
  }
  return (r as Promise<T>).then(
    (v) => {
      span.end(null);
      return v;
    },
    (err: Error) => {
      span.end(err);
      throw err;
    },
  );
}
