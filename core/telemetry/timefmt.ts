/**
 * Go time layouts (`2006/01/02 - 15:04:05.000`), compiled once into a formatter of local time.
 * KrakenD's log formats (`telemetry/logging`, `custom_format`'s `%{time:layout}`) are written in
 * them; gw renders the same text.
 */

type Part = string | ((d: Date, ms: number) => string);

const MONTHS = ['January', 'February', 'March', 'April', 'May', 'June', 'July', 'August', 'September', 'October', 'November', 'December'];
const DAYS = ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday'];

const p2 = (n: number) => (n < 10 ? '0' + n : String(n));
const p3 = (n: number) => (n < 10 ? '00' + n : n < 100 ? '0' + n : String(n));

function offset(d: Date, colon: boolean, z: boolean): string {
  const off = -d.getTimezoneOffset();
  if (z && off === 0) return 'Z';
  const a = Math.abs(off);
  return `${off < 0 ? '-' : '+'}${p2(Math.floor(a / 60))}${colon ? ':' : ''}${p2(a % 60)}`;
}

/** Fractional seconds: `.000` keeps zeros, `.999` trims them (Go's rule). */
function fraction(digits: number, trim: boolean): (d: Date, ms: number) => string {
  return (_d, ms) => {
    let s = p3(ms);
    s = digits <= 3 ? s.slice(0, digits) : s + '0'.repeat(digits - 3);
    if (trim) {
      s = s.replace(/0+$/, '');
      return s === '' ? '' : '.' + s;
    }
    return '.' + s;
  };
}

// Longest tokens first, as Go's layout scanner prefers them.
const TOKENS: [string, Part][] = [
  ['January', (d) => MONTHS[d.getMonth()]!],
  ['Monday', (d) => DAYS[d.getDay()]!],
  ['Z07:00', (d) => offset(d, true, true)],
  ['-07:00', (d) => offset(d, true, false)],
  ['Z0700', (d) => offset(d, false, true)],
  ['-0700', (d) => offset(d, false, false)],
  ['2006', (d) => String(d.getFullYear())],
  ['Jan', (d) => MONTHS[d.getMonth()]!.slice(0, 3)],
  ['Mon', (d) => DAYS[d.getDay()]!.slice(0, 3)],
  ['MST', (d) => offset(d, false, false)],
  ['-07', (d) => offset(d, false, false).slice(0, 3)],
  ['002', (d) => p3(Math.floor((d.getTime() - new Date(d.getFullYear(), 0, 0).getTime()) / 86_400_000))],
  ['01', (d) => p2(d.getMonth() + 1)],
  ['02', (d) => p2(d.getDate())],
  ['_2', (d) => String(d.getDate()).padStart(2, ' ')],
  ['06', (d) => p2(d.getFullYear() % 100)],
  ['15', (d) => p2(d.getHours())],
  ['03', (d) => p2(d.getHours() % 12 || 12)],
  ['04', (d) => p2(d.getMinutes())],
  ['05', (d) => p2(d.getSeconds())],
  ['PM', (d) => (d.getHours() < 12 ? 'AM' : 'PM')],
  ['pm', (d) => (d.getHours() < 12 ? 'am' : 'pm')],
  ['1', (d) => String(d.getMonth() + 1)],
  ['2', (d) => String(d.getDate())],
  ['3', (d) => String(d.getHours() % 12 || 12)],
  ['4', (d) => String(d.getMinutes())],
  ['5', (d) => String(d.getSeconds())],
];

/** Compiles a Go layout into a function of a Date. */
export function goTimeFormat(layout: string): (d: Date) => string {
  const parts: Part[] = [];
  let lit = '';
  let i = 0;
  outer: while (i < layout.length) {
    // .000 / .999 / ,000: fractional seconds
    const c = layout[i]!;
    if ((c === '.' || c === ',') && (layout[i + 1] === '0' || layout[i + 1] === '9')) {
      const digit = layout[i + 1]!;
      let j = i + 1;
      while (layout[j] === digit) j++;
      // Go only treats it as a fraction when no other digit follows.
      if (!/[0-9]/.test(layout[j] ?? '')) {
        if (lit !== '') parts.push(lit), (lit = '');
        const f = fraction(j - i - 1, digit === '9');
        parts.push(c === ',' ? (d, ms) => f(d, ms).replace('.', ',') : f);
        i = j;
        continue;
      }
    }
    for (const [tok, fn] of TOKENS) {
      if (layout.startsWith(tok, i)) {
        if (lit !== '') parts.push(lit), (lit = '');
        parts.push(fn);
        i += tok.length;
        continue outer;
      }
    }
    lit += c;
    i++;
  }
  if (lit !== '') parts.push(lit);
  return (d) => {
    const ms = d.getMilliseconds();
    let s = '';
    for (const p of parts) s += typeof p === 'string' ? p : p(d, ms);
    return s;
  };
}
