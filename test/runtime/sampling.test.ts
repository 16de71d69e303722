/** src/runtime/sampling.ts: greedy ties, temperature, top-p nucleus, the seeded PRNG and its exact draws. */
import { describe, expect, test } from 'vitest';
import { argmax, createRandom, drawFrom, nucleus, sampleToken, softmax } from '../../src/runtime/sampling.js';

const LOGITS = Float32Array.from([1, 2, 0.5, 2, -1, 0]);

describe('argmax / greedy', () => {
  test('lowest index on ties; NaN never wins; all -Infinity gives 0', () => {
    expect(argmax([1, 3, 3, 2])).toBe(1);
    expect(argmax([5, 5, 5])).toBe(0);
    expect(argmax([NaN, 1, NaN, 2])).toBe(3);
    expect(argmax([-Infinity, -Infinity])).toBe(0);
  });

  test('temperature 0 is argmax and draws no random number', () => {
    const random = (): number => {
      throw new Error('greedy must not draw');
    };
    expect(sampleToken(LOGITS, { temperature: 0, topP: 0.5 }, random)).toBe(1);
  });
});

describe('softmax', () => {
  test('float64, sums to 1, scaled by the temperature', () => {
    const p = softmax([0, Math.log(2)], 1);
    expect(p).toBeInstanceOf(Float64Array);
    expect(p[0]).toBeCloseTo(1 / 3, 15);
    expect(p[1]).toBeCloseTo(2 / 3, 15);
    const hot = softmax([0, Math.log(2)], 2); // exp(ln2 / 2) = sqrt(2)
    expect(hot[1]! / hot[0]!).toBeCloseTo(Math.SQRT2, 12);
    const cold = softmax(LOGITS, 0.01);
    expect(cold[1]).toBeCloseTo(0.5, 12); // the two tied maxima share the mass
    expect(cold[3]).toBeCloseTo(0.5, 12);
    expect(softmax([1000, 0, -Infinity], 1)).toEqual(Float64Array.from([1, 0, 0])); // max-subtracted: no overflow
    expect(() => softmax([1], 0)).toThrow(RangeError);
  });
});

describe('top-p nucleus', () => {
  const probs = Float64Array.from([0.1, 0.4, 0.2, 0.3]);

  test('the smallest highest-probability set with mass >= p, renormalized', () => {
    const n = nucleus(probs, 0.7);
    expect(Array.from(n.ids)).toEqual([1, 3]);
    expect(n.probs[0]).toBeCloseTo(4 / 7, 12);
    expect(n.probs[1]).toBeCloseTo(3 / 7, 12);
    expect(Array.from(nucleus(probs, 0.71).ids)).toEqual([1, 3, 2]);
    expect(Array.from(nucleus(probs, 0.3).ids)).toEqual([1]);
  });

  test('ties are ordered by index; p = 1 keeps every token in id order', () => {
    expect(Array.from(nucleus(Float64Array.from([0.25, 0.25, 0.25, 0.25]), 0.5).ids)).toEqual([0, 1]);
    expect(Array.from(nucleus(Float64Array.from([0.2, 0.3, 0.2, 0.3]), 0.5).ids)).toEqual([1, 3]);
    const all = nucleus(probs, 1);
    expect(Array.from(all.ids)).toEqual([0, 1, 2, 3]);
    expect(Array.from(all.probs)).toEqual(Array.from(probs));
    expect(() => nucleus(probs, 0)).toThrow(RangeError);
    expect(() => nucleus(probs, 1.01)).toThrow(RangeError);
  });

  test('a draw is the first token whose cumulative probability exceeds u', () => {
    const n = nucleus(probs, 0.71); // ids 1, 3, 2 with 4/9, 3/9, 2/9
    expect(drawFrom(n, 0)).toBe(1);
    expect(drawFrom(n, 4 / 9 - 1e-9)).toBe(1);
    expect(drawFrom(n, 4 / 9 + 1e-9)).toBe(3);
    expect(drawFrom(n, 0.999999)).toBe(2);
  });

  test('top-p excludes the tail from sampling', () => {
    const random = createRandom(3);
    const seen = new Set<number>();
    for (let i = 0; i < 2000; i++) seen.add(sampleToken(LOGITS, { temperature: 1.5, topP: 0.5 }, random));
    expect([...seen].sort()).toEqual([1, 3]);
  });
});

describe('seeded sampling', () => {
  test('mulberry32 values for seeds 0 and 42', () => {
    const r = createRandom(0);
    expect([r(), r(), r()]).toEqual([0.26642920868471265, 0.0003297457005828619, 0.2232720274478197]);
    const q = createRandom(42);
    expect([q(), q()]).toEqual([0.6011037519201636, 0.44829055899754167]);
  });

  test('exact ids for a fixed logits vector and seed; same seed, same ids', () => {
    const draw = (seed: number, temperature: number, topP: number): number[] => {
      const random = createRandom(seed);
      return Array.from({ length: 12 }, () => sampleToken(LOGITS, { temperature, topP }, random));
    };
    expect(draw(7, 1, 1)).toEqual([0, 0, 5, 3, 2, 1, 1, 1, 2, 3, 1, 1]);
    expect(draw(7, 0.7, 0.9)).toEqual([1, 1, 0, 3, 3, 1, 3, 1, 3, 3, 1, 1]);
    expect(draw(7, 0.7, 0.9)).toEqual(draw(7, 0.7, 0.9));
    expect(draw(8, 1, 1)).not.toEqual(draw(7, 1, 1));
  });

  test('draws follow softmax(logits / T)', () => {
    const temperature = 0.8;
    const expected = softmax(LOGITS, temperature);
    const counts = new Float64Array(LOGITS.length);
    const random = createRandom(11);
    const draws = 40_000;
    for (let i = 0; i < draws; i++) counts[sampleToken(LOGITS, { temperature, topP: 1 }, random)]! += 1;
    for (let i = 0; i < LOGITS.length; i++) expect(Math.abs(counts[i]! / draws - expected[i]!)).toBeLessThan(0.01);
  });
});
