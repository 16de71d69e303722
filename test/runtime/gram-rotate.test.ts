import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Rng } from '../../src/linalg/random.js';
import { jsMatmul } from '../../src/linalg/matmul.js';
import { openModelDir, type ModelDir } from '../../src/model/model-dir.js';
import type { Progress } from '../../src/progress.js';
import { DEFAULT_MODEL_DIR } from '../../src/package-paths.js';
import { collectStats } from '../../src/pipeline/quantize.js';
import { deviceStream, hostStream } from '../../src/pipeline/calibration-stream.js';
import { rotateRows } from '../../src/quant/kronecker.js';
import { randomOrthogonal } from '../../src/quant/okt.js';
import { createRuntimeBlockEngine, type BlockEngine, type GramTapName } from '../../src/runtime/block-runner.js';
import { runtimeAvailable } from '../../src/eval/backend.js';
import { relDiff } from '../helpers/reference-math.js';

const silent: Progress = { start() {}, update() {}, succeed() {}, fail() {}, info() {} };
const GRAM_TAPS: GramTapName[] = ['attn_input', 'attn_context', 'mlp_input', 'mlp_hidden'];

/** Xᵀ X [cols, cols] in float64 of rows x [rows, cols] (the reference: a plain loop). */
function gramOf(x: Float32Array, rows: number, cols: number): Float64Array {
  const h = new Float64Array(cols * cols);
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    for (let i = 0; i < cols; i++) {
      const v = x[o + i]!;
      if (v === 0) continue;
      for (let j = 0; j < cols; j++) h[i * cols + j] = h[i * cols + j]! + v * x[o + j]!;
    }
  }
  return h;
}

function normals(rng: Rng, n: number): Float32Array {
  return Float32Array.from({ length: n }, () => rng.normal());
}

describe.runIf(runtimeAvailable())('the runtime block engine\'s Gram matrices and Kronecker rotation (CPU backend)', () => {
  let model: ModelDir;
  let engine: BlockEngine;
  let hidden: Float32Array;
  const seq = 24;
  const batches = [2, 1]; // the second run has another batch size: a new session, the same accumulators
  const total = batches.reduce((a, b) => a + b, 0);
  beforeAll(async () => {
    model = await openModelDir(DEFAULT_MODEL_DIR);
    engine = await createRuntimeBlockEngine(model, { device: 'cpu' });
    const ids = Int32Array.from({ length: total * seq }, (_, i) => (i * 37 + 11) % model.config.vocabSize);
    hidden = await engine.embed(ids, total, seq);
  });
  afterAll(async () => {
    await engine.close();
    await model.checkpoint.close();
  });

  it('the native kron_rotate equals the JS rotation (src/quant/kronecker.ts) to float32 rounding', async () => {
    expect(engine.rotateRows).toBeDefined();
    const rng = new Rng(5);
    // b % 16 = 0 (the vector path), b % 16 ≠ 0, and a = 1 (one dense factor)
    for (const [rows, a, b] of [[37, 8, 32], [29, 6, 10], [5, 1, 13]] as const) {
      const x = normals(rng, rows * a * b);
      const r1 = randomOrthogonal(a, rng);
      const r2 = randomOrthogonal(b, rng);
      const reference = rotateRows(Float64Array.from(x), rows, r1, a, r2, b);
      const got = await engine.rotateRows!(x, rows, Float32Array.from(r1), a, Float32Array.from(r2), b);
      expect(got).toBeInstanceOf(Float32Array);
      expect(relDiff(got, reference)).toBeLessThan(1e-5);
      // a different rotation gives a different result (the comparison can fail)
      const other = rotateRows(Float64Array.from(x), rows, randomOrthogonal(a, rng), a, r2, b);
      if (a > 1) expect(relDiff(got, other)).toBeGreaterThan(1e-2);
    }
    await expect(engine.rotateRows!(new Float32Array(10), 2, new Float32Array(4), 2, new Float32Array(9), 3)).rejects.toThrow(/smaller than rows x a\*b/);
  });

  it('gramTaps accumulate XᵀX of every token over runs of different batch sizes; tapRows return only the chosen rows', async () => {
    const h = model.config.hiddenSize;
    const weights = await engine.loadBlockWeights(1);
    const full = new Map<GramTapName, Float32Array[]>();
    const sampled: Float32Array[] = [];
    const chosen = Int32Array.from([0, 5, 23, 24, 40]); // rows b·seq + i within a batch
    let start = 0;
    for (const n of batches) {
      const x = hidden.subarray(start * seq * h, (start + n) * seq * h);
      const plain = await engine.run(1, x, n, seq, { weights, recipe: { linears: {} }, taps: GRAM_TAPS });
      const rows = chosen.filter((r) => r < n * seq);
      const withGram = await engine.run(1, x, n, seq, { weights, recipe: { linears: {} }, taps: GRAM_TAPS, gramTaps: GRAM_TAPS, tapRows: rows });
      expect(relDiff(withGram.output, plain.output)).toBe(0);
      // a batch with none of the sampled rows (likely at 128 × 2048 tokens with 512 sampled): empty taps, same output
      const none = await engine.run(1, x, n, seq, { weights, recipe: { linears: {} }, taps: GRAM_TAPS, tapRows: new Int32Array(0) });
      expect(relDiff(none.output, plain.output)).toBe(0);
      for (const t of GRAM_TAPS) expect(none.taps.get(t)!.length).toBe(0);
      for (const t of GRAM_TAPS) {
        const whole = plain.taps.get(t)!;
        const width = whole.length / (n * seq);
        const picked = withGram.taps.get(t)!;
        expect(picked.length).toBe(rows.length * width);
        rows.forEach((r, i) => expect(Array.from(picked.subarray(i * width, (i + 1) * width))).toEqual(Array.from(whole.subarray(r * width, (r + 1) * width))));
        full.set(t, [...(full.get(t) ?? []), whole]);
      }
      sampled.push(withGram.taps.get('mlp_hidden')!);
      start += n;
    }
    for (const t of GRAM_TAPS) {
      const parts = full.get(t)!;
      const all = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
      let o = 0;
      for (const p of parts) { all.set(p, o); o += p.length; }
      const width = all.length / (total * seq);
      const got = engine.readGram!(t);
      expect(got.length).toBe(width * width);
      expect(relDiff(got, gramOf(all, total * seq, width))).toBeLessThan(1e-5);
      // the first batch alone is a different matrix (both runs were accumulated)
      expect(relDiff(got, gramOf(parts[0]!, batches[0]! * seq, width))).toBeGreaterThan(1e-2);
      // read back once: the accumulator is freed
      expect(() => engine.readGram!(t)).toThrow(/no Gram matrix was accumulated/);
    }
  });

  it('collectStats: the Gram matrices over every calibration token equal XᵀX of all of them (host and runtime accumulation)', async () => {
    const h = model.config.hiddenSize;
    const weights = await engine.loadBlockWeights(0);
    const recipe = { linears: {} };
    const picked = new Rng(3).sample(total * seq, 20);
    const bs = 2; // batches of 2 and 1 windows
    const stream = hostStream(engine, hidden, total, seq, h);
    const readGram = engine.readGram!;
    const host = await collectStats(stream, 0, bs, weights, recipe, GRAM_TAPS, picked, silent, { mode: 'host', mm: jsMatmul });
    // the runtime's accumulation (the GPU path; here on the CPU backend), sampled rows selected in the runtime
    const device = await collectStats(stream, 0, bs, weights, recipe, GRAM_TAPS, picked, silent, { mode: 'device', mm: jsMatmul, readGram });
    const none = await collectStats(stream, 0, bs, weights, recipe, GRAM_TAPS, picked, silent, { mode: 'none', mm: jsMatmul });
    expect(none.grams.size).toBe(0);
    // the hidden states in the engine's memory (the GPU path; here the CPU backend's): the same statistics
    const state = deviceStream(engine, engine.createArray!(hidden.length), total, seq, h);
    state.write(0, hidden);
    const fromState = await collectStats(state, 0, bs, weights, recipe, GRAM_TAPS, picked, silent, { mode: 'device', mm: jsMatmul, readGram });
    expect(Array.from(state.read(0, total))).toEqual(Array.from(hidden)); // the statistics pass leaves the states
    state.free();
    expect(Array.from(fromState.firstOutput!)).toEqual(Array.from(device.firstOutput!));
    for (const t of GRAM_TAPS) {
      expect(Array.from(fromState.stats.get(t)!)).toEqual(Array.from(device.stats.get(t)!));
      expect(Array.from(fromState.grams.get(t)!.data)).toEqual(Array.from(device.grams.get(t)!.data));
    }
    const whole = await engine.run(0, hidden, total, seq, { weights, recipe, taps: GRAM_TAPS });
    for (const t of GRAM_TAPS) {
      const x = whole.taps.get(t)!;
      const width = x.length / (total * seq);
      const reference = gramOf(x, total * seq, width);
      expect(host.grams.get(t)!.tokens).toBe(total * seq);
      expect(relDiff(host.grams.get(t)!.data, reference)).toBeLessThan(1e-5);
      expect(relDiff(device.grams.get(t)!.data, reference)).toBeLessThan(1e-5);
      // the sampled rows: the same in both modes, and the rows `picked` of the whole tap
      expect(Array.from(device.stats.get(t)!)).toEqual(Array.from(host.stats.get(t)!));
      picked.forEach((r, i) => expect(Array.from(host.stats.get(t)!.subarray(i * width, (i + 1) * width))).toEqual(Array.from(x.subarray(r * width, (r + 1) * width))));
      // the Gram of the sampled rows alone (the pre-#15 statistic) is not the full one
      expect(relDiff(gramOf(host.stats.get(t)!, picked.length, width), reference)).toBeGreaterThan(0.1);
    }
  });
});
