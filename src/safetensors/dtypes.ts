/**
 * safetensors element types and exact conversions between IEEE half / bfloat16 / float32.
 * All multi-byte values in safetensors are little-endian.
 */

export type SafetensorsDtype =
  | 'F64' | 'F32' | 'F16' | 'BF16'
  | 'I64' | 'I32' | 'I16' | 'I8'
  | 'U64' | 'U32' | 'U16' | 'U8'
  | 'BOOL';

const BYTE_SIZES: Readonly<Record<SafetensorsDtype, number>> = {
  F64: 8, F32: 4, F16: 2, BF16: 2,
  I64: 8, I32: 4, I16: 2, I8: 1,
  U64: 8, U32: 4, U16: 2, U8: 1,
  BOOL: 1,
};

export const SAFETENSORS_DTYPES: readonly SafetensorsDtype[] = Object.keys(BYTE_SIZES) as SafetensorsDtype[];

export function dtypeByteSize(dtype: SafetensorsDtype): number {
  return BYTE_SIZES[dtype];
}

export function isSafetensorsDtype(s: string): s is SafetensorsDtype {
  return Object.prototype.hasOwnProperty.call(BYTE_SIZES, s);
}

const scratch = new DataView(new ArrayBuffer(4));

/** Typed-array fast paths reinterpret bytes in platform order, valid only on little-endian hosts. */
const LITTLE_ENDIAN = new Uint8Array(Uint16Array.of(1).buffer)[0] === 1;

/** Exact value of an IEEE 754 binary16 bit pattern (subnormals, ±0, ±inf, NaN). */
export function float16BitsToFloat32(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >>> 10) & 0x1f;
  const mantissa = bits & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  if (exponent === 0x1f) return mantissa === 0 ? sign * Infinity : NaN;
  return sign * (1024 + mantissa) * 2 ** (exponent - 25);
}

/** Exact value of a bfloat16 bit pattern (the upper 16 bits of a float32). */
export function bfloat16BitsToFloat32(bits: number): number {
  scratch.setUint32(0, (bits & 0xffff) << 16 >>> 0);
  return scratch.getFloat32(0);
}

function float32Bits(x: number): number {
  scratch.setFloat32(0, x);
  return scratch.getUint32(0);
}

/** float32 (x is first rounded to float32) → binary16 bits, round-to-nearest-even, overflow → ±inf. */
export function float32ToFloat16Bits(x: number): number {
  const u = float32Bits(x);
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  const mant = u & 0x7fffff;
  if (exp === 0xff) {
    // inf stays inf; NaN keeps its top payload bits and is made quiet.
    return mant === 0 ? sign | 0x7c00 : sign | 0x7e00 | (mant >>> 13);
  }
  const e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    // Result is subnormal (or zero): value = q · 2^-24 with q = full · 2^(E+1), E = exp - 127.
    if (exp === 0) return sign; // float32 subnormals are far below half's smallest subnormal
    const full = mant | 0x800000;
    const shift = 127 - exp - 1; // = -(E + 1) ≥ 14
    if (shift > 24) return sign;
    let q = full >>> shift;
    const rem = full & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (q & 1) === 1)) q += 1;
    return sign | q;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1) === 1)) h += 1; // carry may reach 0x7c00 = inf
  return sign | h;
}

/** float32 (x is first rounded to float32) → bfloat16 bits, round-to-nearest-even, NaN kept (quiet). */
export function float32ToBfloat16Bits(x: number): number {
  const u = float32Bits(x);
  if ((u & 0x7f800000) === 0x7f800000 && (u & 0x7fffff) !== 0) return ((u >>> 16) | 0x40) & 0xffff;
  const lsb = (u >>> 16) & 1;
  return ((u + 0x7fff + lsb) >>> 16) & 0xffff;
}

let f16Table: Float32Array | undefined;
let bf16Table: Float32Array | undefined;

/** 65536-entry lookup table of every binary16 value. */
function float16Table(): Float32Array {
  if (f16Table === undefined) {
    f16Table = new Float32Array(65536);
    for (let i = 0; i < 65536; i++) f16Table[i] = float16BitsToFloat32(i);
  }
  return f16Table;
}

function bfloat16Table(): Float32Array {
  if (bf16Table === undefined) {
    const words = new Uint32Array(65536);
    for (let i = 0; i < 65536; i++) words[i] = i << 16 >>> 0;
    bf16Table = new Float32Array(words.buffer);
  }
  return bf16Table;
}

/**
 * Converts raw little-endian tensor bytes of any dtype to a new Float32Array (values rounded to
 * float32; BOOL → 0/1). `bytes.length` must be a multiple of the dtype size.
 */
export function bytesToFloat32(bytes: Uint8Array, dtype: SafetensorsDtype): Float32Array {
  const size = dtypeByteSize(dtype);
  if (bytes.byteLength % size !== 0) {
    throw new RangeError(`${bytes.byteLength} bytes is not a whole number of ${dtype} elements`);
  }
  const n = bytes.byteLength / size;
  const out = new Float32Array(n);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  switch (dtype) {
    case 'F32':
      if (LITTLE_ENDIAN) new Uint8Array(out.buffer).set(bytes);
      else for (let i = 0; i < n; i++) out[i] = view.getFloat32(i * 4, true);
      break;
    case 'F64':
      for (let i = 0; i < n; i++) out[i] = view.getFloat64(i * 8, true);
      break;
    case 'F16':
    case 'BF16': {
      const table = dtype === 'F16' ? float16Table() : bfloat16Table();
      if (dtype === 'BF16' && LITTLE_ENDIAN && bytes.byteOffset % 2 === 0) {
        // the bf16 bits are the float32's high half: shifted into place, every value (NaN payloads too) exactly
        const halves = new Uint16Array(bytes.buffer, bytes.byteOffset, n);
        const words = new Uint32Array(out.buffer);
        for (let i = 0; i < n; i++) words[i] = halves[i]! << 16;
      } else if (LITTLE_ENDIAN && bytes.byteOffset % 2 === 0) {
        const halves = new Uint16Array(bytes.buffer, bytes.byteOffset, n);
        for (let i = 0; i < n; i++) out[i] = table[halves[i]!]!;
      } else {
        for (let i = 0; i < n; i++) out[i] = table[view.getUint16(i * 2, true)]!;
      }
      break;
    }
    case 'I64':
      for (let i = 0; i < n; i++) out[i] = Number(view.getBigInt64(i * 8, true));
      break;
    case 'U64':
      for (let i = 0; i < n; i++) out[i] = Number(view.getBigUint64(i * 8, true));
      break;
    case 'I32':
      for (let i = 0; i < n; i++) out[i] = view.getInt32(i * 4, true);
      break;
    case 'U32':
      for (let i = 0; i < n; i++) out[i] = view.getUint32(i * 4, true);
      break;
    case 'I16':
      for (let i = 0; i < n; i++) out[i] = view.getInt16(i * 2, true);
      break;
    case 'U16':
      for (let i = 0; i < n; i++) out[i] = view.getUint16(i * 2, true);
      break;
    case 'I8':
      for (let i = 0; i < n; i++) out[i] = view.getInt8(i);
      break;
    case 'U8':
      for (let i = 0; i < n; i++) out[i] = bytes[i]!;
      break;
    case 'BOOL':
      for (let i = 0; i < n; i++) out[i] = bytes[i] === 0 ? 0 : 1;
      break;
  }
  return out;
}

/** Float32 values → raw little-endian bytes of a float dtype (F32, F16, BF16, F64). */
export function float32ToBytes(values: Float32Array, dtype: 'F32' | 'F16' | 'BF16' | 'F64'): Uint8Array {
  const size = dtypeByteSize(dtype);
  const out = new Uint8Array(values.length * size);
  const view = new DataView(out.buffer);
  switch (dtype) {
    case 'F32':
      if (LITTLE_ENDIAN) out.set(new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
      else for (let i = 0; i < values.length; i++) view.setFloat32(i * 4, values[i]!, true);
      break;
    case 'F64':
      for (let i = 0; i < values.length; i++) view.setFloat64(i * 8, values[i]!, true);
      break;
    case 'F16':
      for (let i = 0; i < values.length; i++) view.setUint16(i * 2, float32ToFloat16Bits(values[i]!), true);
      break;
    case 'BF16':
      if (LITTLE_ENDIAN) {
        // same rounding as float32ToBfloat16Bits on the raw bits (whole models go through here)
        const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
        const halves = new Uint16Array(out.buffer);
        for (let i = 0; i < bits.length; i++) {
          const u = bits[i]!;
          halves[i] = (u & 0x7f800000) === 0x7f800000 && (u & 0x7fffff) !== 0
            ? ((u >>> 16) | 0x40) & 0xffff
            : ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
        }
      } else {
        for (let i = 0; i < values.length; i++) view.setUint16(i * 2, float32ToBfloat16Bits(values[i]!), true);
      }
      break;
  }
  return out;
}
