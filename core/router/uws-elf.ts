/**
 * A small ELF64 little-endian reader and the one patch gw applies to a uWebSockets.js binary built
 * against glibc >= 2.38 so that it loads on an older glibc (Debian 12 has 2.36).
 *
 * Why a patch is needed at all: glibc 2.38 added C23 variants of the strto* and *scanf families
 * (`__isoc23_strtol`, `__isoc23_sscanf`, …) and its headers redirect to them whenever _GNU_SOURCE
 * is defined — which g++ always defines. A binary built there imports them at version GLIBC_2.38;
 * an older glibc lacks them, so the whole module fails to load although nothing else in it needs
 * 2.38.
 *
 * What the C23 variants change (glibc 2.38 sources):
 *  - `__isoc23_strtol`/`strtoul`/…: also accept a `0b`/`0B` binary prefix when base is 0 or 2.
 *    Nothing else differs, so the classic `strtol` is the exact target but for binary literals.
 *  - `__isoc23_sscanf`/…: `__vfscanf_internal(…, SCANF_ISOC99_A | SCANF_ISOC23_BIN_CST)`, i.e.
 *    `__isoc99_sscanf` (C99 `%a` = a floating-point conversion) plus binary integers for `%i`.
 *    The plain `sscanf` symbol is NOT the right target: it keeps GNU's historic meaning of `%as`,
 *    `%aS`, `%a[` ("allocate the string"), so a format with `%a` would read differently. The
 *    patch therefore renames `__isoc23_Xscanf` to `__isoc99_Xscanf` (same length, in place).
 *
 * The patch, on a copy of the file (the package's own file is never touched):
 *  1. every undefined dynamic symbol `__isoc23_X` that libc.so.6 must supply gets a new name:
 *     `X` for the strto* family (st_name moved 9 bytes on, onto the suffix of the same string),
 *     `__isoc99_X` for the *scanf family (the two digits rewritten in place in .dynstr);
 *  2. its .gnu.version entry is set to the version this machine's libc defines the target at
 *     (read from libc's own version definitions, e.g. strtol@@GLIBC_2.2.5, __isoc99_sscanf@@GLIBC_2.7
 *     on x86-64; everything @@GLIBC_2.17 on arm64), reusing the binary's vernaux for it when it
 *     has one; a version it lacks takes over the now-unused GLIBC_2.38 vernaux (name rewritten
 *     in place, hash recomputed);
 *  3. a GLIBC_2.38 vernaux nothing uses any more is marked VER_FLG_WEAK, so ld.so does not
 *     require that version (glibc's `match_symbol` skips a missing weak version).
 * Hash tables need no change: .gnu.hash lists defined symbols only, and a stale .hash bucket for an
 * undefined symbol is never consulted (lookups in this object are for its definitions).
 * The patch refuses (with the reason) anything it does not understand: another class/endianness,
 * a symbol it would redirect that shares its version with a symbol it would not, a libc without
 * the target, a binary that needs a glibc version this libc lacks for other symbols.
 */

export const ELF_CLASS64 = 2;
export const ELF_DATA_LE = 1;
const SHT_DYNSYM = 11;
const SHT_GNU_VERDEF = 0x6ffffffd;
const SHT_GNU_VERNEED = 0x6ffffffe;
const SHT_GNU_VERSYM = 0x6fffffff;
const VER_FLG_WEAK = 0x2;
const SHN_UNDEF = 0;
const MACHINES: Record<number, string> = { 62: 'x86-64', 183: 'aarch64' };

export class ElfError extends Error {}

interface Section {
  type: number;
  offset: number;
  size: number;
  link: number;
  info: number;
  entsize: number;
}

export interface Vernaux {
  /** File offset of the vernaux entry. */
  at: number;
  hash: number;
  flags: number;
  /** vna_other: the index .gnu.version entries use. */
  index: number;
  name: string;
  nameOff: number;
}

export interface Verneed {
  file: string;
  aux: Vernaux[];
}

export interface DynSym {
  index: number;
  /** File offset of the Elf64_Sym. */
  at: number;
  nameOff: number;
  name: string;
  undefined: boolean;
}

/** The dynamic-linking view of an ELF64 LE shared object. */
export class Elf {
  readonly machine: string;
  readonly syms: DynSym[] = [];
  readonly verneed: Verneed[] = [];
  /** Version definitions (a library's own versions): index → name. */
  readonly verdef = new Map<number, string>();
  private readonly dynstrOff: number;
  private readonly dynstrSize: number;
  private readonly versymOff: number;

  constructor(readonly buf: Buffer) {
    if (buf.length < 64 || buf.readUInt32BE(0) !== 0x7f454c46) throw new ElfError('not an ELF file');
    if (buf[4] !== ELF_CLASS64 || buf[5] !== ELF_DATA_LE) throw new ElfError('not a 64-bit little-endian ELF file');
    const em = buf.readUInt16LE(18);
    this.machine = MACHINES[em] ?? `machine ${em}`;
    const shoff = num(buf.readBigUInt64LE(0x28));
    const shentsize = buf.readUInt16LE(0x3a);
    const shnum = buf.readUInt16LE(0x3c);
    if (shoff === 0 || shnum === 0 || shentsize < 64) throw new ElfError('no section headers');
    if (shoff + shnum * shentsize > buf.length) throw new ElfError('section headers past the end of the file');
    const sections: Section[] = [];
    for (let i = 0; i < shnum; i++) {
      const o = shoff + i * shentsize;
      sections.push({
        type: buf.readUInt32LE(o + 4),
        offset: num(buf.readBigUInt64LE(o + 24)),
        size: num(buf.readBigUInt64LE(o + 32)),
        link: buf.readUInt32LE(o + 40),
        info: buf.readUInt32LE(o + 44),
        entsize: num(buf.readBigUInt64LE(o + 56)),
      });
    }
    for (const s of sections) {
      if (s.type !== 0 && s.type !== 8 /* NOBITS */ && s.offset + s.size > buf.length) throw new ElfError('a section runs past the end of the file');
    }
    const dynsym = sections.find((s) => s.type === SHT_DYNSYM);
    if (!dynsym) throw new ElfError('no .dynsym');
    const dynstr = sections[dynsym.link];
    if (!dynstr) throw new ElfError('.dynsym links to no string table');
    this.dynstrOff = dynstr.offset;
    this.dynstrSize = dynstr.size;
    const versym = sections.find((s) => s.type === SHT_GNU_VERSYM);
    if (!versym) throw new ElfError('no .gnu.version (the binary has no symbol versions)');
    this.versymOff = versym.offset;
    const count = dynsym.size / 24;
    if (versym.size < count * 2) throw new ElfError('.gnu.version is shorter than .dynsym');
    for (let i = 0; i < count; i++) {
      const at = dynsym.offset + i * 24;
      const nameOff = buf.readUInt32LE(at);
      this.syms.push({ index: i, at, nameOff, name: this.str(nameOff), undefined: buf.readUInt16LE(at + 6) === SHN_UNDEF });
    }
    const vn = sections.find((s) => s.type === SHT_GNU_VERNEED);
    if (vn) {
      let o = vn.offset;
      for (let n = 0; n < vn.info; n++) {
        const cnt = buf.readUInt16LE(o + 2);
        const file = this.str(buf.readUInt32LE(o + 4));
        const aux: Vernaux[] = [];
        let a = o + buf.readUInt32LE(o + 8);
        for (let k = 0; k < cnt; k++) {
          const nameOff = buf.readUInt32LE(a + 8);
          aux.push({ at: a, hash: buf.readUInt32LE(a), flags: buf.readUInt16LE(a + 4), index: buf.readUInt16LE(a + 6) & 0x7fff, nameOff, name: this.str(nameOff) });
          const next = buf.readUInt32LE(a + 12);
          if (next === 0) break;
          a += next;
        }
        this.verneed.push({ file, aux });
        const next = buf.readUInt32LE(o + 12);
        if (next === 0) break;
        o += next;
      }
    }
    const vd = sections.find((s) => s.type === SHT_GNU_VERDEF);
    if (vd) {
      let o = vd.offset;
      for (let n = 0; n < vd.info; n++) {
        const ndx = buf.readUInt16LE(o + 4);
        const cnt = buf.readUInt16LE(o + 6);
        if (cnt > 0) this.verdef.set(ndx, this.str(buf.readUInt32LE(o + buf.readUInt32LE(o + 12))));
        const next = buf.readUInt32LE(o + 16);
        if (next === 0) break;
        o += next;
      }
    }
  }

  /** A NUL-terminated string of .dynstr. */
  str(off: number): string {
    if (off >= this.dynstrSize) throw new ElfError(`string offset ${off} is outside .dynstr`);
    const start = this.dynstrOff + off;
    const end = this.buf.indexOf(0, start);
    if (end === -1 || end >= this.dynstrOff + this.dynstrSize) throw new ElfError('unterminated .dynstr string');
    return this.buf.toString('latin1', start, end);
  }

  /** .gnu.version entry of a symbol (bit 15 = hidden). */
  versym(i: number): number {
    return this.buf.readUInt16LE(this.versymOff + i * 2);
  }

  setVersym(i: number, v: number): void {
    this.buf.writeUInt16LE(v, this.versymOff + i * 2);
  }

  setSymName(sym: DynSym, nameOff: number): void {
    this.buf.writeUInt32LE(nameOff, sym.at);
  }

  /** Overwrites a .dynstr string in place; `s` must not be longer than the string it replaces. */
  rewriteStr(off: number, s: string): void {
    const old = this.str(off);
    if (s.length > old.length) throw new ElfError(`cannot rewrite "${old}" as the longer "${s}"`);
    const at = this.dynstrOff + off;
    this.buf.fill(0, at, at + old.length);
    this.buf.write(s, at, 'latin1');
  }

  /** Default (non-hidden) version name of each symbol a library defines. */
  definitions(): Map<string, string> {
    const out = new Map<string, string>();
    for (const s of this.syms) {
      if (s.undefined || s.name === '') continue;
      const v = this.versym(s.index);
      if (v & 0x8000) continue; // hidden: a compat version, not what a new link binds to
      const name = this.verdef.get(v & 0x7fff);
      if (name !== undefined) out.set(s.name, name);
    }
    return out;
  }
}

function num(b: bigint): number {
  if (b > BigInt(Number.MAX_SAFE_INTEGER)) throw new ElfError('offset too large');
  return Number(b);
}

/** The System V ELF hash, as stored in vna_hash. */
export function elfHash(name: string): number {
  let h = 0;
  for (let i = 0; i < name.length; i++) {
    h = ((h << 4) + name.charCodeAt(i)) >>> 0;
    const g = h & 0xf0000000;
    if (g !== 0) h ^= g >>> 24;
    h &= ~g >>> 0;
    h >>>= 0;
  }
  return h;
}

/** What the host libc offers: each symbol's default version, and every version it defines. */
export interface LibcDefs {
  symbols: ReadonlyMap<string, string>;
  versions: ReadonlySet<string>;
}

export function libcDefs(libc: Buffer): LibcDefs {
  const elf = new Elf(libc);
  return { symbols: elf.definitions(), versions: new Set(elf.verdef.values()) };
}

export interface Redirect {
  from: string;
  to: string;
  version: string;
}

export interface PatchResult {
  /** The redirects applied, in symbol order. */
  redirects: Redirect[];
  /** Versions no longer required (marked weak) or renamed (`GLIBC_2.38→GLIBC_2.7`). */
  versions: string[];
}

const C23 = '__isoc23_';

/**
 * Patches `buf` in place (pass a copy). Throws ElfError with the reason when the binary cannot be
 * made to load on a libc described by `libc`.
 */
export function patchIsoc23(buf: Buffer, libc: LibcDefs): PatchResult {
  const elf = new Elf(buf);
  const libcNeed = elf.verneed.find((v) => /^libc\.so\.\d+$/.test(v.file));
  if (!libcNeed) throw new ElfError('the binary needs no versioned libc symbols');
  const auxByIndex = new Map(libcNeed.aux.map((a) => [a.index, a]));
  const targets: { sym: DynSym; to: string; version: string; scanf: boolean }[] = [];
  const dropped = new Set<number>();
  for (const s of elf.syms) {
    if (!s.undefined || !s.name.startsWith(C23)) continue;
    const aux = auxByIndex.get(elf.versym(s.index) & 0x7fff);
    if (!aux) continue; // not bound to a libc version
    if (libc.versions.has(aux.name)) continue; // this libc has the C23 variant's version: keep it
    const suffix = s.name.slice(C23.length);
    const scanf = /scanf$/.test(suffix);
    const to = scanf ? `__isoc99_${suffix}` : suffix;
    const version = libc.symbols.get(to);
    if (version === undefined) throw new ElfError(`${s.name}: this libc does not define ${to}`);
    targets.push({ sym: s, to, version, scanf });
    dropped.add(aux.index);
  }
  if (targets.length === 0) throw new ElfError(`no ${C23}* symbol needs a glibc version this libc lacks`);
  const redirected = new Set(targets.map((t) => t.sym.index));
  for (const s of elf.syms) {
    if (redirected.has(s.index)) continue;
    const v = elf.versym(s.index) & 0x7fff;
    if (dropped.has(v)) throw new ElfError(`${s.name} also needs ${auxByIndex.get(v)!.name}, which this libc lacks`);
  }

  // Versions the targets need: an existing vernaux of libc, or a dropped one renamed.
  const versions: string[] = [];
  const indexOf = new Map(libcNeed.aux.filter((a) => !dropped.has(a.index)).map((a) => [a.name, a.index]));
  const spare = libcNeed.aux.filter((a) => dropped.has(a.index));
  for (const t of targets) {
    if (indexOf.has(t.version)) continue;
    const aux = spare.shift();
    if (!aux) throw new ElfError(`no spare version entry to require ${t.version} (for ${t.to})`);
    // The old name's bytes must belong to this vernaux alone.
    const lo = aux.nameOff;
    const hi = aux.nameOff + aux.name.length;
    const shares = (off: number) => off >= lo && off <= hi;
    if (elf.syms.some((s) => shares(s.nameOff)) || elf.verneed.some((n) => n.aux.some((a) => a !== aux && shares(a.nameOff)))) {
      throw new ElfError(`the string "${aux.name}" is shared; cannot rename it to ${t.version}`);
    }
    elf.rewriteStr(aux.nameOff, t.version);
    buf.writeUInt32LE(elfHash(t.version), aux.at);
    buf.writeUInt16LE(aux.flags & ~VER_FLG_WEAK, aux.at + 4);
    versions.push(`${aux.name}→${t.version}`);
    indexOf.set(t.version, aux.index);
  }
  for (const aux of spare) {
    buf.writeUInt16LE(aux.flags | VER_FLG_WEAK, aux.at + 4);
    versions.push(`${aux.name} weak`);
  }
  const redirects: Redirect[] = [];
  for (const t of targets) {
    if (t.scanf) {
      // "__isoc23_sscanf" → "__isoc99_sscanf": the digits sit at offsets 7–8 of this string.
      const shares = elf.syms.some((s) => !redirected.has(s.index) && s.nameOff >= t.sym.nameOff && s.nameOff <= t.sym.nameOff + 8);
      if (shares) throw new ElfError(`the string "${t.sym.name}" is shared; cannot rename it`);
      elf.rewriteStr(t.sym.nameOff, t.to);
    } else {
      elf.setSymName(t.sym, t.sym.nameOff + C23.length);
    }
    elf.setVersym(t.sym.index, indexOf.get(t.version)!);
    redirects.push({ from: t.sym.name, to: t.to, version: t.version });
  }

  // Re-read the result: every libc version it still requires must exist on this libc.
  const after = new Elf(buf);
  const need = after.verneed.find((v) => v.file === libcNeed.file)!;
  for (const a of need.aux) {
    if (a.flags & VER_FLG_WEAK || libc.versions.has(a.name)) continue;
    const users = after.syms.filter((s) => (after.versym(s.index) & 0x7fff) === a.index).map((s) => s.name);
    throw new ElfError(`needs ${a.name}, which this libc lacks (${users.slice(0, 3).join(', ') || 'no symbol'})`);
  }
  for (const t of targets) {
    const s = after.syms[t.sym.index]!;
    const v = need.aux.find((a) => a.index === (after.versym(s.index) & 0x7fff));
    if (s.name !== t.to || v?.name !== t.version) throw new ElfError(`patch check failed for ${t.sym.name}`);
  }
  return { redirects, versions };
}

/** Versions a binary requires from its libc that `libc` does not define (weak ones excepted). */
export function missingLibcVersions(buf: Buffer, libc: LibcDefs): string[] {
  const elf = new Elf(buf);
  const need = elf.verneed.find((v) => /^libc\.so\.\d+$/.test(v.file));
  return need ? need.aux.filter((a) => !(a.flags & VER_FLG_WEAK) && !libc.versions.has(a.name)).map((a) => a.name) : [];
}
