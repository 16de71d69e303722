/**
 * Parsing and full validation of a safetensors header (pure; no I/O).
 *
 * Layout: [u64 LE header length N][N bytes UTF-8 JSON header][data region].
 * Each validation failure throws a one-line BwqError naming the file.
 */
import { BwqError } from '../errors.js';
import { dtypeByteSize, isSafetensorsDtype, type SafetensorsDtype } from './dtypes.js';

export interface HeaderEntry {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  /** Offsets relative to the start of the data region. */
  begin: number;
  end: number;
}

export interface ParsedHeader {
  /** Tensors in header order. */
  entries: HeaderEntry[];
  metadata: Record<string, string>;
}

/** Largest header accepted (the Rust safetensors crate uses the same limit). */
export const MAX_HEADER_BYTES = 100_000_000;

/** Reads the 8-byte little-endian header length and checks it against the file size. */
export function parseHeaderLength(prefix: Uint8Array, fileSize: number, file: string): number {
  if (fileSize < 8 || prefix.byteLength < 8) {
    throw new BwqError(`not a safetensors file: ${fileSize} bytes is shorter than the 8-byte header length`, { file });
  }
  const n = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(fileSize - 8)) {
    throw new BwqError(`invalid safetensors header: header length ${n} exceeds the ${fileSize - 8} bytes after the length field`, { file });
  }
  if (n > BigInt(MAX_HEADER_BYTES)) {
    throw new BwqError(`invalid safetensors header: header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit`, { file });
  }
  if (n < 2n) {
    throw new BwqError(`invalid safetensors header: header length ${n} is too small for a JSON object`, { file });
  }
  return Number(n);
}

/**
 * Top-level keys of a JSON object text, in order, including duplicates (which JSON.parse would
 * silently collapse). Assumes `text` is valid JSON whose top-level value is an object.
 */
export function topLevelKeys(text: string): string[] {
  const keys: string[] = [];
  let depth = 0;
  let expectKey = false;
  let i = 0;
  while (i < text.length) {
    const c = text[i]!;
    if (c === '"') {
      let j = i + 1;
      while (j < text.length && text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      if (depth === 1 && expectKey) {
        keys.push(JSON.parse(text.slice(i, j + 1)) as string);
        expectKey = false;
      }
      i = j + 1;
      continue;
    }
    if (c === '{' || c === '[') {
      depth += 1;
      if (depth === 1) expectKey = c === '{';
    } else if (c === '}' || c === ']') {
      depth -= 1;
    } else if (c === ',' && depth === 1) {
      expectKey = true;
    }
    i += 1;
  }
  return keys;
}

function describe(value: unknown): string {
  const s = JSON.stringify(value);
  if (s === undefined) return String(value);
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Validates header bytes against the size of the data region that follows them.
 * Rules: UTF-8 JSON object; unique keys; `__metadata__` a string→string map; every other entry has
 * a known dtype, a shape of non-negative integers and integer data_offsets [begin, end] with
 * begin ≤ end ≤ dataSize and end − begin = dtype size × Π shape; the ranges, sorted, tile the data
 * region exactly (no overlap, no gap, no trailing bytes).
 */
export function parseHeader(headerBytes: Uint8Array, dataSize: number, file: string): ParsedHeader {
  const fail = (problem: string): never => {
    throw new BwqError(`invalid safetensors header: ${problem}`, { file });
  };
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(headerBytes);
  } catch {
    return fail('header is not valid UTF-8');
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    return fail(`header is not valid JSON (${error instanceof Error ? error.message.split('\n')[0] : String(error)})`);
  }
  if (!isPlainObject(json)) return fail('header JSON is not an object');

  const seen = new Set<string>();
  for (const key of topLevelKeys(text)) {
    if (seen.has(key)) fail(`duplicate tensor name '${key}'`);
    seen.add(key);
  }

  const metadata: Record<string, string> = {};
  const entries: HeaderEntry[] = [];
  for (const [name, value] of Object.entries(json)) {
    if (name === '__metadata__') {
      if (!isPlainObject(value)) fail('__metadata__ is not an object');
      for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
        if (typeof v !== 'string') fail(`__metadata__ value of '${k}' is not a string (got ${describe(v)})`);
        metadata[k] = v as string;
      }
      continue;
    }
    if (!isPlainObject(value)) fail(`tensor '${name}': entry is not an object`);
    const entry = value as Record<string, unknown>;
    for (const field of ['dtype', 'shape', 'data_offsets']) {
      if (!(field in entry)) fail(`tensor '${name}': missing '${field}'`);
    }
    const { dtype, shape, data_offsets: offsets } = entry;
    if (typeof dtype !== 'string') fail(`tensor '${name}': dtype is not a string (got ${describe(dtype)})`);
    if (!isSafetensorsDtype(dtype as string)) fail(`tensor '${name}': unknown dtype '${String(dtype)}'`);
    if (!Array.isArray(shape)) fail(`tensor '${name}': shape is not an array (got ${describe(shape)})`);
    for (const d of shape as unknown[]) {
      if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0) {
        fail(`tensor '${name}': shape ${describe(shape)} has a dimension that is not a non-negative integer`);
      }
    }
    if (!Array.isArray(offsets) || offsets.length !== 2) {
      fail(`tensor '${name}': data_offsets is not a [begin, end] pair (got ${describe(offsets)})`);
    }
    const [begin, end] = offsets as unknown[];
    for (const o of [begin, end]) {
      if (typeof o !== 'number' || !Number.isSafeInteger(o) || o < 0) {
        fail(`tensor '${name}': data_offsets ${describe(offsets)} are not non-negative integers`);
      }
    }
    const b = begin as number;
    const e = end as number;
    if (b > e) fail(`tensor '${name}': data_offsets begin ${b} is after end ${e}`);
    if (e > dataSize) fail(`tensor '${name}': data_offsets end ${e} is beyond the ${dataSize}-byte data region`);
    const dims = shape as number[];
    const typed = dtype as SafetensorsDtype;
    let elements = 1;
    for (const d of dims) elements *= d;
    const expected = elements * dtypeByteSize(typed);
    if (expected !== e - b) {
      fail(`tensor '${name}': ${typed} [${dims.join(', ')}] needs ${expected} bytes but data_offsets span ${e - b}`);
    }
    entries.push({ name, dtype: typed, shape: [...dims], begin: b, end: e });
  }

  const sorted = [...entries].sort((x, y) => x.begin - y.begin || x.end - y.end);
  let cursor = 0;
  let previous: HeaderEntry | undefined;
  for (const entry of sorted) {
    if (entry.begin < cursor) {
      fail(`tensors '${previous!.name}' and '${entry.name}' have overlapping data ranges`);
    }
    if (entry.begin > cursor) {
      fail(`gap of ${entry.begin - cursor} unused bytes before tensor '${entry.name}' in the data region`);
    }
    cursor = entry.end;
    previous = entry;
  }
  if (cursor !== dataSize) {
    fail(`${dataSize - cursor} trailing bytes after the last tensor in the data region`);
  }
  return { entries, metadata };
}
