import { describe, expect, test } from 'vitest';
import { causalMask, inverseFrequencies, ropeTables } from '../../src/onnx/rope.js';
import { ProtoWriter } from '../../src/onnx/protobuf.js';
import type { ModelConfig } from '../../src/model/config.js';

function config(rope: ModelConfig['rope'], headDim = 16): ModelConfig {
  return { headDim, rope, modelType: 'llama' } as ModelConfig;
}

describe('rope tables', () => {
  test('default: inv_freq = θ^(-2i/d); cos/sin duplicated halves at each position', () => {
    const c = config({ theta: 10000, type: 'default' });
    const inv = inverseFrequencies(c);
    expect(inv.length).toBe(8);
    for (let i = 0; i < 8; i++) expect(Math.abs(inv[i]! / 10000 ** (-(2 * i) / 16) - 1)).toBeLessThan(1e-6);
    const { cos, sin, dim } = ropeTables(c, 5);
    expect(dim).toBe(16);
    for (let p = 0; p < 5; p++) {
      for (let i = 0; i < 8; i++) {
        expect(cos[p * 16 + i]).toBe(cos[p * 16 + 8 + i]);
        expect(Math.abs(sin[p * 16 + i]! - Math.sin(p * inv[i]!))).toBeLessThan(1e-6);
      }
    }
    expect(cos[0]).toBe(1);
    expect(sin[0]).toBe(0);
  });

  test('linear divides by factor; llama3 keeps high, divides low and blends medium frequencies', () => {
    const base = inverseFrequencies(config({ theta: 50000, type: 'default' }));
    const linear = inverseFrequencies(config({ theta: 50000, type: 'linear', factor: 2 }));
    for (let i = 0; i < 8; i++) expect(linear[i]).toBe(Math.fround(base[i]! / 2));
    const l3 = inverseFrequencies(config({ theta: 50000, type: 'llama3', factor: 4, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 32 }));
    let regimes = new Set<string>();
    for (let i = 0; i < 8; i++) {
      const wavelen = (2 * Math.PI) / base[i]!;
      // independent float64 restatement of transformers' _compute_llama3_parameters
      let expected: number;
      if (wavelen < 32 / 4) { expected = base[i]!; regimes.add('high'); }
      else if (wavelen > 32 / 1) { expected = base[i]! / 4; regimes.add('low'); }
      else {
        const s = (32 / wavelen - 1) / (4 - 1);
        expected = ((1 - s) * base[i]!) / 4 + s * base[i]!;
        regimes.add('medium');
      }
      expect(Math.abs(l3[i]! / expected - 1)).toBeLessThan(1e-6);
    }
    expect(regimes).toEqual(new Set(['high', 'medium', 'low']));
    expect(() => inverseFrequencies(config({ theta: 1e4, type: 'yarn', factor: 4 }))).toThrow(/rope type "yarn" is not supported/);
  });

  test('partial rotary factor shortens the tables', () => {
    const { dim } = ropeTables(config({ theta: 1e4, type: 'default', partialRotaryFactor: 0.5 }, 32), 3);
    expect(dim).toBe(16);
  });
});

describe('causal mask', () => {
  const L = -3.4028234663852886e38;
  test('causal', () => {
    expect(Array.from(causalMask(3))).toEqual([0, L, L, 0, 0, L, 0, 0, 0]);
  });
  test('sliding window w: key j visible from query i iff i - w < j <= i', () => {
    expect(Array.from(causalMask(4, 2))).toEqual([0, L, L, L, 0, 0, L, L, L, 0, 0, L, L, L, 0, 0]);
  });
});

describe('protobuf wire format', () => {
  test('varints (incl. negative int64 as 10 bytes), strings, fixed32 floats, nested messages', () => {
    expect(Array.from(new ProtoWriter().int(1, 150).finish())).toEqual([0x08, 0x96, 0x01]);
    expect(Array.from(new ProtoWriter().int(3, -1).finish())).toEqual([0x18, 255, 255, 255, 255, 255, 255, 255, 255, 255, 0x01]);
    expect(Array.from(new ProtoWriter().int(1, 2 ** 40).finish())).toEqual([0x08, 0x80, 0x80, 0x80, 0x80, 0x80, 0x20]);
    expect(Array.from(new ProtoWriter().string(2, 'testing').finish())).toEqual([0x12, 0x07, 0x74, 0x65, 0x73, 0x74, 0x69, 0x6e, 0x67]);
    expect(Array.from(new ProtoWriter().float(2, 1).finish())).toEqual([0x15, 0, 0, 0x80, 0x3f]);
    const inner = new ProtoWriter().int(1, 150);
    expect(Array.from(new ProtoWriter().message(3, inner).finish())).toEqual([0x1a, 0x03, 0x08, 0x96, 0x01]);
    expect(Array.from(new ProtoWriter().packedInts(4, [3, 270, 86942]).finish())).toEqual([0x22, 0x06, 0x03, 0x8e, 0x02, 0x9e, 0xa7, 0x05]);
    const big = new Uint8Array(1000).fill(7);
    const out = new ProtoWriter().bytes(9, big).int(1, 1).finish();
    expect(Array.from(out.subarray(0, 3))).toEqual([0x4a, 0xe8, 0x07]);
    expect(out.length).toBe(3 + 1000 + 2);
    expect(Array.from(out.subarray(1003))).toEqual([0x08, 0x01]);
  });
});
