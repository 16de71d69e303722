/** The Householder QR on the CPU kernels' threads (native/ops/linalg/qr_cpu.cpp) equals the reference (src/linalg/qr.ts)
 *  bit for bit, and so does a randomized SVD with it. */
import { describe, expect, it } from 'vitest';
import { Rng } from '../../src/linalg/random.js';
import { qr } from '../../src/linalg/qr.js';
import { randomizedSvd } from '../../src/linalg/randomized-svd.js';
import { nativeQr } from '../../src/native/qr.js';
import { runtimeAvailable } from '../../src/eval/backend.js';

describe('native Householder QR', () => {
  it.runIf(runtimeAvailable())('equals the reference bit for bit (tall, square, rank-deficient, float32 input)', () => {
    const native = nativeQr();
    expect(native).toBeDefined();
    const rng = new Rng(3);
    const cases: Array<[Float64Array | Float32Array, number, number]> = [];
    cases.push([Float64Array.from({ length: 1000 * 40 }, () => rng.normal()), 1000, 40]);
    cases.push([Float64Array.from({ length: 33 * 33 }, () => rng.normal()), 33, 33]);
    // rank-deficient: a zero column and a repeated one (Householder vectors of zero norm)
    const deficient = Float64Array.from({ length: 200 * 12 }, () => rng.normal());
    for (let i = 0; i < 200; i++) {
      deficient[i * 12 + 3] = 0;
      deficient[i * 12 + 7] = deficient[i * 12 + 6]!;
    }
    cases.push([deficient, 200, 12]);
    cases.push([Float32Array.from({ length: 500 * 24 }, () => rng.normal()), 500, 24]);
    for (const [a, m, n] of cases) {
      const want = qr(a, m, n);
      const got = native!(a, m, n);
      expect(Array.from(got.q), `${m}x${n} q`).toEqual(Array.from(want.q));
      expect(Array.from(got.r), `${m}x${n} r`).toEqual(Array.from(want.r));
    }
    expect(() => native!(new Float64Array(6), 2, 3)).toThrow(/rows >= cols/);
    // the randomized SVD with either QR
    const m = 300, n = 220;
    const x = Float32Array.from({ length: m * n }, (_, i) => Math.sin(i * 0.013) + 0.1 * rng.normal());
    const ref = randomizedSvd(x, m, n, 6, { seed: 2 });
    const withNative = randomizedSvd(x, m, n, 6, { seed: 2, qr: native! });
    return Promise.all([ref, withNative]).then(([r, g]) => {
      expect(Array.from(g.s)).toEqual(Array.from(r.s));
      expect(Array.from(g.u)).toEqual(Array.from(r.u));
    });
  });
});
