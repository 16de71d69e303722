/**
 * The device OKT's host side, on machines without a GPU (the device run itself: native/test/okt-gpu-check.mjs):
 *  - the C++ polar factor of the Procrustes step (native/ops/okt/okt_host.cpp, addon oktPolar) against numpy's
 *    SVD (test/fixtures/quant/make_okt_polar_reference.py → okt_polar_reference.safetensors, committed) and
 *    against src/linalg/procrustes.ts, including the zero-column completion;
 *  - learnOkt hands its call to options.device with the other options unchanged;
 *  - the binding (src/runtime/device-okt.ts) passes oktStart's factors and the options' defaults to rtOkt;
 *  - the CPU backend's OKT (native/ops/okt/okt_cpu.cpp, rtOkt on a CPU model, a CPU engine's learnOkt) against the
 *    TypeScript reference learnOkt from the same start (with and without the activation term and smoothing stages).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import { SafetensorsFile } from '../../src/safetensors/reader.js';
import { procrustes } from '../../src/linalg/procrustes.js';
import { Rng } from '../../src/linalg/random.js';
import { loadAddon } from '../../src/native/loader.js';
import { learnOkt, oktStart, type OktOptions, type OktResult } from '../../src/quant/okt.js';
import { deviceOkt, hasOktBinding, type NativeOktResult, type OktAddon } from '../../src/runtime/device-okt.js';
import { createRuntimeBlockEngine } from '../../src/runtime/block-runner.js';
import { loadRuntimeModel, type RuntimeModelHandle } from '../../src/runtime/load.js';
import { runtimeAddon } from '../../src/runtime/engine.js';
import { openModelDir, type ModelDir } from '../../src/model/model-dir.js';
import { DEFAULT_MODEL_DIR } from '../../src/package-paths.js';
import { maxAbsDiff } from '../helpers/reference-math.js';
import { orthogonalityError } from '../../src/linalg/dense.js';

const fixture = fileURLToPath(new URL('../fixtures/quant/okt_polar_reference.safetensors', import.meta.url));
const ref = new Map<string, Float64Array>();
const addon = loadAddon() as unknown as { oktPolar(m: Float64Array, n: number): Float64Array };

beforeAll(async () => {
  const file = await SafetensorsFile.open(fixture);
  try {
    for (const name of file.names()) ref.set(name, new Float64Array((await file.readBytes(name)).slice().buffer));
  } finally {
    await file.close();
  }
});

function get(name: string): Float64Array {
  const t = ref.get(name);
  if (t === undefined) throw new Error(`fixture has no tensor ${name}`);
  return t;
}



describe('the device OKT\'s polar factor (okt_host.cpp)', () => {
  it('equals numpy\'s U Vᵀ and procrustes.ts on random matrices of the factor sizes', () => {
    for (const n of [1, 2, 7, 64, 86]) {
      const m = get(`m.${n}`);
      const r = addon.oktPolar(m, n);
      expect(maxAbsDiff(r, get(`r.${n}`))).toBeLessThan(1e-11);
      expect(maxAbsDiff(r, procrustes(m, n))).toBeLessThan(1e-12);
      expect(orthogonalityError(r, n)).toBeLessThan(1e-13);
    }
  });

  it('keeps the unique factor of a badly conditioned matrix (singular values down to 1e-9)', () => {
    const m = get('m.ill');
    const r = addon.oktPolar(m, 32);
    expect(maxAbsDiff(r, get('r.ill'))).toBeLessThan(1e-6);
    expect(maxAbsDiff(r, procrustes(m, 32))).toBeLessThan(1e-9);
    expect(orthogonalityError(r, 32)).toBeLessThan(1e-13);
  });

  it('completes U like svd.ts where singular values are zero (zero columns, the zero matrix)', () => {
    const n = 9;
    const rng = new Rng(5);
    const m = new Float64Array(n * n);
    for (let i = 0; i < n; i++) for (let j = 0; j < n - 3; j++) m[i * n + j] = rng.normal();
    const r = addon.oktPolar(m, n);
    expect(maxAbsDiff(r, procrustes(m, n))).toBeLessThan(1e-12);
    expect(orthogonalityError(r, n)).toBeLessThan(1e-13);
    const zero = addon.oktPolar(new Float64Array(n * n), n);
    expect(maxAbsDiff(zero, procrustes(new Float64Array(n * n), n))).toBe(0);
    expect(orthogonalityError(zero, n)).toBe(0);
  });

  it('refuses a matrix that is not n x n in one line', () => {
    expect(() => addon.oktPolar(new Float64Array(5), 2)).toThrow(/oktPolar needs an n x n matrix/);
  });
});

describe('learnOkt with a device implementation', () => {
  const rng = new Rng(3);
  const cols = 24;
  const w = { data: Float64Array.from({ length: 10 * cols }, () => rng.normal()), rows: 10 };
  const x = { data: Float32Array.from({ length: 6 * cols }, () => rng.normal()), rows: 6 };

  it('hands the whole call to options.device with the other options as given', async () => {
    const calls: Array<{ cols: number; options: OktOptions }> = [];
    const answer: OktResult = {
      r1: new Float64Array([1]), r2: new Float64Array([1]), a: 4, b: 6, history: [0.5, 0.25], iterations: 1, converged: true,
      weightError: { before: 0.5, after: 0.25 }, activationTail: undefined,
    };
    const options: OktOptions = { iterations: 3, tolerance: 1e-3, init: 'random', seed: 9, activations: x, activationWeight: 0.1, anneal: [0.5], annealIterations: 2 };
    const res = await learnOkt([w], cols, { ...options, device: async (ws, c, o) => { calls.push({ cols: c, options: o }); expect(ws[0]).toBe(w); return answer; } });
    expect(res).toBe(answer);
    expect(calls).toEqual([{ cols, options }]);
  });

  it('passes oktStart\'s factors, the options (with learnOkt\'s defaults) and float32 rows to rtOkt', async () => {
    const seen: unknown[][] = [];
    const native: NativeOktResult = {
      r1: permutation(4), r2: permutation(6), history: new Float64Array([0.4, 0.3, 0.2]),
      iterations: 2, converged: false, weightBefore: 0.4, weightAfter: 0.2, tailBefore: 1.5, tailAfter: 1.25,
    };
    const fake: OktAddon = { rtOkt: (...args) => { seen.push(args); return Promise.resolve(native); } };
    const handle = {} as RuntimeModelHandle;
    const okt = deviceOkt(fake, handle);
    const res = await okt([w], cols, { init: 'random', seed: 9, activations: x, activationWeight: 0.1 });
    const start = oktStart(cols, { init: 'random', seed: 9 });
    const [h, weights, rows, k, a, b, acts, tokens, params, anneal, r1, r2] = seen[0]!;
    expect(h).toBe(handle);
    expect(weights).toEqual([Float32Array.from(w.data)]);
    expect([rows, k, a, b, tokens]).toEqual([Int32Array.of(10), 24, 4, 6, 6]);
    expect(acts).toBe(x.data); // float32 already: no copy
    expect(params).toEqual(Float64Array.of(0.1, 20, 1e-7, 10));
    expect(anneal).toEqual(new Float64Array(0));
    expect([r1, r2]).toEqual([start.r1, start.r2]);
    expect(start.r1).not.toEqual(oktStart(cols, { init: 'identity' }).r1);
    expect(res).toEqual({
      r1: native.r1, r2: native.r2, a: 4, b: 6, history: [0.4, 0.3, 0.2], iterations: 2, converged: false,
      weightError: { before: 0.4, after: 0.2 }, activationTail: { before: 1.5, after: 1.25 },
    });
    // without the activation term no rows go to the device and there is no tail
    const plain = await okt([w], cols, { iterations: 5, activations: x });
    expect(seen[1]![6]).toBeNull();
    expect(seen[1]![7]).toBe(0);
    expect(plain.activationTail).toBeUndefined();
  });

  it('refuses an answer that breaks what the EM guarantees: a rising objective, non-orthogonal factors, NaN', async () => {
    const answer = (patch: Partial<NativeOktResult>): NativeOktResult => ({
      r1: permutation(4), r2: permutation(6), history: new Float64Array([0.4, 0.3, 0.3]),
      iterations: 2, converged: true, weightBefore: 0.4, weightAfter: 0.3, tailBefore: 0, tailAfter: 0, ...patch,
    });
    const run = (patch: Partial<NativeOktResult>) => deviceOkt({ rtOkt: () => Promise.resolve(answer(patch)) }, {} as RuntimeModelHandle)([w], cols, {});
    await expect(run({})).resolves.toMatchObject({ history: [0.4, 0.3, 0.3] });
    await expect(run({ history: new Float64Array([0.4, 0.3, 0.31]) })).rejects.toThrow('device OKT: objective rose from 0.3 to 0.31 at step 2 (the EM never raises it)');
    await expect(run({ history: new Float64Array([0.4, Number.NaN]) })).rejects.toThrow('device OKT: objective NaN at step 1');
    const skewed = permutation(6);
    skewed[0] = 1.01;
    await expect(run({ r2: skewed })).rejects.toThrow(/^device OKT: factors not orthogonal \(max \|RᵀR − I\| = 1\.02/);
  });
});

/** A permutation matrix (orthogonal, not the identity): row i has its 1 in column (i + 1) mod n. */
function permutation(n: number): Float64Array {
  const p = new Float64Array(n * n);
  for (let i = 0; i < n; i++) p[i * n + ((i + 1) % n)] = 1;
  return p;
}

describe('the native OKT on the CPU backend (okt_cpu.cpp)', () => {
  let model: ModelDir;
  let loaded: { handle: RuntimeModelHandle } | undefined;
  const rt = runtimeAddon();
  beforeAll(async () => {
    model = await openModelDir(DEFAULT_MODEL_DIR);
    loaded = await loadRuntimeModel(rt, model, 'cpu');
  });
  afterAll(async () => {
    if (loaded !== undefined) rt.rtFree(loaded.handle);
    await model.checkpoint.close();
  });

  it('a CPU block engine has learnOkt (quantize runs the native OKT there)', async () => {
    const engine = await createRuntimeBlockEngine(model, { device: 'cpu' });
    try {
      expect(engine.device.startsWith('cpu')).toBe(true);
      expect(typeof engine.learnOkt).toBe('function');
      const rng = new Rng(2);
      const w = { data: Float32Array.from({ length: 12 * 24 }, () => rng.normal()), rows: 12 };
      const options: OktOptions = { iterations: 4, init: 'random', seed: 3 };
      const res = await engine.learnOkt!([w], 24, options);
      expectSameOkt(res, await learnOkt([w], 24, options));
    } finally {
      await engine.close();
    }
  });

  /** K = 24 = 4 × 6: stacked matrices of different scales, activation rows with heavy-tailed (cubed) entries. */
  function randomCase(seed: number): { weights: Array<{ data: Float32Array; rows: number }>; x: { data: Float32Array; rows: number } } {
    const rng = new Rng(seed);
    const matrix = (rows: number, scale: number) => ({ data: Float32Array.from({ length: rows * 24 }, () => scale * rng.normal()), rows });
    const x = { data: Float32Array.from({ length: 40 * 24 }, () => rng.normal() ** 3), rows: 40 };
    x.data.fill(0, 5 * 24, 6 * 24); // one zero row: no token weight
    return { weights: [matrix(9, 1), matrix(7, 0.02), matrix(5, 3)], x };
  }
  const cases: Array<[string, (c: ReturnType<typeof randomCase>) => OktOptions]> = [
    ['weights only, identity start', () => ({ iterations: 12, tolerance: 0 })],
    ['weights only, random start, smoothing stages', () => ({ iterations: 10, init: 'random', seed: 4, anneal: [1, 0.3], annealIterations: 4 })],
    ['with activations, random start', (c) => ({ iterations: 10, init: 'random', seed: 5, activations: c.x, activationWeight: 0.05 })],
    ['with activations and smoothing stages', (c) => ({ iterations: 8, init: 'random', seed: 6, activations: c.x, activationWeight: 0.2, anneal: [0.5], annealIterations: 3 })],
  ];
  for (const [name, make] of cases) {
    it(`equals the TypeScript reference from the same start: ${name}`, async () => {
      for (const seed of [11, 12]) {
        const c = randomCase(seed);
        const options = make(c);
        const okt = deviceOkt(rt as unknown as OktAddon, loaded!.handle);
        const native = await okt(c.weights, 24, options);
        const reference = await learnOkt(c.weights, 24, options);
        expectSameOkt(native, reference);
        expect(reference.history.at(-1)!).toBeLessThan(reference.history[0]!); // the case does move
      }
    });
  }

  it('equals the TypeScript reference with the 128-wide R2 of K = 256 (2 × 128, the default factor rule)', async () => {
    const rng = new Rng(21);
    const cols = 256;
    // 96 rows: the M-step matrices have full rank (rows·a ≥ b), so their polar factors are unique
    const w = { data: Float32Array.from({ length: 96 * cols }, () => rng.normal() * (rng.next() < 0.05 ? 5 : 1)), rows: 96 };
    const x = { data: Float32Array.from({ length: 32 * cols }, () => rng.normal() ** 3), rows: 32 };
    const options: OktOptions = { iterations: 6, init: 'random', seed: 9, activations: x, activationWeight: 0.1 };
    const native = await deviceOkt(rt as unknown as OktAddon, loaded!.handle)([w], cols, options);
    const reference = await learnOkt([w], cols, options);
    expect([reference.a, reference.b]).toEqual([2, 128]);
    expectSameOkt(native, reference);
    expect(reference.history.at(-1)!).toBeLessThan(reference.history[0]!);
  });

  it('refuses a malformed problem in one line', async () => {
    const okt = deviceOkt(rt as unknown as OktAddon, loaded!.handle);
    const w = { data: new Float32Array(8 * 16), rows: 8 };
    await expect(okt([w], 16, { iterations: 2, tolerance: -1 })).rejects.toThrow(/^OKT: tolerance and activation weight must be >= 0$/);
  });
});

/** Same factors (1e-4), histories (1e-5 relative), iteration counts and errors as the reference. */
function expectSameOkt(got: OktResult, want: OktResult): void {
  expect([got.a, got.b]).toEqual([want.a, want.b]);
  expect(got.history.length).toBe(want.history.length);
  for (let i = 0; i < want.history.length; i++) {
    expect(Math.abs(got.history[i]! - want.history[i]!)).toBeLessThanOrEqual(1e-5 * Math.abs(want.history[i]!));
  }
  expect([got.iterations, got.converged]).toEqual([want.iterations, want.converged]);
  expect(maxAbsDiff(got.r1, want.r1)).toBeLessThan(1e-4);
  expect(maxAbsDiff(got.r2, want.r2)).toBeLessThan(1e-4);
  expect(Math.abs(got.weightError.before - want.weightError.before)).toBeLessThan(1e-6 * Math.abs(want.weightError.before));
  expect(Math.abs(got.weightError.after - want.weightError.after)).toBeLessThan(1e-5 * Math.abs(want.weightError.after));
  if (want.activationTail === undefined) {
    expect(got.activationTail).toBeUndefined();
  } else {
    expect(Math.abs(got.activationTail!.before - want.activationTail.before)).toBeLessThan(1e-6 * want.activationTail.before);
    expect(Math.abs(got.activationTail!.after - want.activationTail.after)).toBeLessThan(1e-5 * want.activationTail.after);
  }
}
