import { readFileSync } from 'node:fs';
import { describe, expect, test } from 'vitest';
import {
  bfloat16BitsToFloat32, bytesToFloat32, dtypeByteSize, float16BitsToFloat32, float32ToBfloat16Bits,
  float32ToBytes, float32ToFloat16Bits, isSafetensorsDtype,
} from '../../src/safetensors/dtypes.js';

const rounding = JSON.parse(readFileSync('test/fixtures/safetensors/rounding.json', 'utf8')) as {
  f32_bits: number[]; f16_bits: number[]; bf16_bits: number[];
};

function f32FromBits(bits: number): number {
  const v = new DataView(new ArrayBuffer(4));
  v.setUint32(0, bits);
  return v.getFloat32(0);
}

describe('dtype table', () => {
  test('byte sizes', () => {
    expect(['F64', 'F32', 'F16', 'BF16', 'I64', 'I32', 'I16', 'I8', 'U64', 'U32', 'U16', 'U8', 'BOOL'].map((d) =>
      dtypeByteSize(d as never))).toEqual([8, 4, 2, 2, 8, 4, 2, 1, 8, 4, 2, 1, 1]);
  });
  test('isSafetensorsDtype', () => {
    expect(isSafetensorsDtype('BF16')).toBe(true);
    expect(isSafetensorsDtype('F8_E4M3')).toBe(false);
    expect(isSafetensorsDtype('f32')).toBe(false);
    expect(isSafetensorsDtype('toString')).toBe(false);
  });
});

describe('half and bfloat16 decoding', () => {
  test('float16 special values', () => {
    expect(float16BitsToFloat32(0x0000)).toBe(0);
    expect(Object.is(float16BitsToFloat32(0x8000), -0)).toBe(true);
    expect(float16BitsToFloat32(0x3c00)).toBe(1);
    expect(float16BitsToFloat32(0x7bff)).toBe(65504);
    expect(float16BitsToFloat32(0x0001)).toBe(2 ** -24);
    expect(float16BitsToFloat32(0x03ff)).toBe(1023 * 2 ** -24);
    expect(float16BitsToFloat32(0x0400)).toBe(2 ** -14);
    expect(float16BitsToFloat32(0x7c00)).toBe(Infinity);
    expect(float16BitsToFloat32(0xfc00)).toBe(-Infinity);
    expect(float16BitsToFloat32(0x7e00)).toBeNaN();
    expect(float16BitsToFloat32(0xfc01)).toBeNaN();
  });
  test('bfloat16 special values', () => {
    expect(bfloat16BitsToFloat32(0x3f80)).toBe(1);
    expect(Object.is(bfloat16BitsToFloat32(0x8000), -0)).toBe(true);
    expect(bfloat16BitsToFloat32(0x7f7f)).toBe(3.3895313892515355e38);
    expect(bfloat16BitsToFloat32(0x0001)).toBe(9.183549615799121e-41);
    expect(bfloat16BitsToFloat32(0x7f80)).toBe(Infinity);
    expect(bfloat16BitsToFloat32(0xff80)).toBe(-Infinity);
    expect(bfloat16BitsToFloat32(0x7fc0)).toBeNaN();
  });
  test('every float16 pattern round-trips through float32 (NaN stays NaN)', () => {
    for (let b = 0; b < 65536; b++) {
      const x = float16BitsToFloat32(b);
      if (Number.isNaN(x)) {
        expect(Number.isNaN(float16BitsToFloat32(float32ToFloat16Bits(x)))).toBe(true);
      } else if (float32ToFloat16Bits(x) !== b) {
        throw new Error(`f16 pattern ${b.toString(16)} -> ${x} -> ${float32ToFloat16Bits(x).toString(16)}`);
      }
    }
  });
  test('every bfloat16 pattern round-trips through float32 (NaN stays NaN)', () => {
    for (let b = 0; b < 65536; b++) {
      const x = bfloat16BitsToFloat32(b);
      if (Number.isNaN(x)) {
        expect(Number.isNaN(bfloat16BitsToFloat32(float32ToBfloat16Bits(x)))).toBe(true);
      } else if (float32ToBfloat16Bits(x) !== b) {
        throw new Error(`bf16 pattern ${b.toString(16)} -> ${x} -> ${float32ToBfloat16Bits(x).toString(16)}`);
      }
    }
  });
});

describe('float32 -> half / bfloat16 rounding matches PyTorch', () => {
  test(`float16: ${rounding.f32_bits.length} patterns (ties, subnormals, overflow, random)`, () => {
    let mismatches = 0;
    rounding.f32_bits.forEach((bits, i) => {
      const x = f32FromBits(bits);
      const got = float32ToFloat16Bits(x);
      const want = rounding.f16_bits[i]!;
      if (Number.isNaN(x)) {
        if (!Number.isNaN(float16BitsToFloat32(got))) mismatches++;
      } else if (got !== want) {
        mismatches++;
        console.error(`f16 mismatch for ${bits.toString(16)} (${x}): got ${got.toString(16)} want ${want.toString(16)}`);
      }
    });
    expect(mismatches).toBe(0);
  });
  test(`bfloat16: ${rounding.f32_bits.length} patterns`, () => {
    let mismatches = 0;
    rounding.f32_bits.forEach((bits, i) => {
      const x = f32FromBits(bits);
      const got = float32ToBfloat16Bits(x);
      const want = rounding.bf16_bits[i]!;
      if (Number.isNaN(x)) {
        if (!Number.isNaN(bfloat16BitsToFloat32(got))) mismatches++;
      } else if (got !== want) {
        mismatches++;
        console.error(`bf16 mismatch for ${bits.toString(16)} (${x}): got ${got.toString(16)} want ${want.toString(16)}`);
      }
    });
    expect(mismatches).toBe(0);
  });
  test('analytic round-to-nearest-even cases', () => {
    expect(float32ToFloat16Bits(1 + 2 ** -11)).toBe(0x3c00); // tie -> even (down)
    expect(float32ToFloat16Bits(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie -> even (up)
    expect(float32ToFloat16Bits(65519)).toBe(0x7bff);
    expect(float32ToFloat16Bits(65520)).toBe(0x7c00); // tie at the top rounds to inf
    expect(float32ToFloat16Bits(2 ** -25)).toBe(0x0000); // half of the smallest subnormal -> 0
    expect(float32ToFloat16Bits(1.5 * 2 ** -24)).toBe(0x0002); // subnormal tie -> even
    expect(float32ToFloat16Bits(2.5 * 2 ** -24)).toBe(0x0002);
    expect(float32ToFloat16Bits(2 ** -14 - 2 ** -25)).toBe(0x0400); // carries into the smallest normal
    expect(float32ToFloat16Bits(-0)).toBe(0x8000);
    expect(float32ToBfloat16Bits(1 + 2 ** -8)).toBe(0x3f80);
    expect(float32ToBfloat16Bits(1 + 3 * 2 ** -8)).toBe(0x3f82);
    expect(float32ToBfloat16Bits(3.4028234663852886e38)).toBe(0x7f80);
    expect(float32ToBfloat16Bits(-Infinity)).toBe(0xff80);
    expect(Number.isNaN(bfloat16BitsToFloat32(float32ToBfloat16Bits(NaN)))).toBe(true);
  });
});

describe('bytesToFloat32', () => {
  test('integer dtypes, little-endian', () => {
    const le = (...b: number[]): Uint8Array => Uint8Array.from(b);
    expect([...bytesToFloat32(le(0xff, 0x7f, 0x00, 0x80), 'I16')]).toEqual([32767, -32768]);
    expect([...bytesToFloat32(le(0xff, 0xff, 0x01, 0x00), 'U16')]).toEqual([65535, 1]);
    expect([...bytesToFloat32(le(0xfe, 0xff, 0xff, 0xff), 'I32')]).toEqual([-2]);
    expect([...bytesToFloat32(le(0xfe, 0xff, 0xff, 0xff), 'U32')]).toEqual([Math.fround(4294967294)]);
    expect([...bytesToFloat32(le(0x80, 0x7f), 'I8')]).toEqual([-128, 127]);
    expect([...bytesToFloat32(le(0x80, 0x7f), 'U8')]).toEqual([128, 127]);
    expect([...bytesToFloat32(le(0, 1, 2), 'BOOL')]).toEqual([0, 1, 1]);
    expect([...bytesToFloat32(le(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), 'I64')]).toEqual([-1]);
    expect([...bytesToFloat32(le(0, 0, 0, 0, 0, 0, 0, 0x80), 'U64')]).toEqual([2 ** 63]);
  });
  test('unaligned input views', () => {
    const buf = new Uint8Array(9);
    new DataView(buf.buffer).setFloat64(1, -2.5, true);
    expect([...bytesToFloat32(buf.subarray(1), 'F64')]).toEqual([-2.5]);
    const f32 = new Uint8Array(5);
    new DataView(f32.buffer).setFloat32(1, 1.25, true);
    expect([...bytesToFloat32(f32.subarray(1), 'F32')]).toEqual([1.25]);
    const halves = Uint8Array.from([0xaa, 0x00, 0x3c, 0x00, 0xc1]); // odd offset: F16 1, -2.5
    expect([...bytesToFloat32(halves.subarray(1), 'F16')]).toEqual([1, -2.5]);
    expect([...bytesToFloat32(Uint8Array.from([0x00, 0x3c, 0x00, 0xc1]), 'F16')]).toEqual([1, -2.5]);
    const bf = Uint8Array.from([0xaa, 0x80, 0x3f, 0x20, 0xc0]); // odd offset: BF16 1, -2.5
    expect([...bytesToFloat32(bf.subarray(1), 'BF16')]).toEqual([1, -2.5]);
    expect([...bytesToFloat32(Uint8Array.from([0x80, 0x3f, 0x20, 0xc0]), 'BF16')]).toEqual([1, -2.5]);
  });
  test('BF16: every pattern becomes the float32 whose high half it is, bit for bit (aligned and unaligned bytes)', () => {
    const bits = Uint16Array.from({ length: 65536 }, (_, i) => i);
    const aligned = new Uint8Array(bits.buffer);
    const odd = new Uint8Array(2 * 65536 + 1);
    odd.set(aligned, 1);
    for (const bytes of [aligned, odd.subarray(1)]) {
      const words = new Uint32Array(bytesToFloat32(bytes, 'BF16').buffer);
      let wrong = -1;
      for (let i = 0; i < 65536 && wrong < 0; i++) {
        // the unaligned path goes through float32 loads, which may quiet a signalling NaN's payload
        const x = bfloat16BitsToFloat32(i);
        if (words[i] !== (i << 16) >>> 0 && !(bytes !== aligned && Number.isNaN(x))) wrong = i;
      }
      expect(wrong, `pattern ${wrong.toString(16)}`).toBe(-1);
    }
  });
  test('rejects a partial element', () => {
    expect(() => bytesToFloat32(new Uint8Array(3), 'F16')).toThrow(/not a whole number/);
  });
  test('float32ToBytes inverts bytesToFloat32 for representable values', () => {
    const values = Float32Array.from([0, -0, 1, -2.5, 65504, 2 ** -24, Infinity, -Infinity]);
    for (const dtype of ['F32', 'F16', 'BF16', 'F64'] as const) {
      const back = bytesToFloat32(float32ToBytes(values, dtype), dtype);
      for (let i = 0; i < values.length; i++) {
        const want = dtype === 'BF16' && values[i] === 65504 ? 65536 : values[i]!; // 65504 is not a bfloat16
        expect(Object.is(back[i], want)).toBe(true);
      }
    }
  });
});
