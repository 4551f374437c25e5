import { STATUS_CODES } from 'node:http';

const lines: string[] = [];

/** `"200 OK"`-style status lines for uWS, built once per code. */
export function statusLine(code: number): string {
  let l = lines[code];
  if (l === undefined) {
    l = `${code} ${STATUS_CODES[code] ?? 'status code ' + code}`;
    if (code >= 100 && code < 1000) lines[code] = l;
  }
  return l;
}
