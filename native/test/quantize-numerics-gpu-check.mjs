// The quantize pipeline's device statistics and rotations (issue #15) on CUDA against the host. Run on a GPU machine
// from the repo root after `npx tsc -p tsconfig.json`, the addon build and native/build-cuda.sh:
//   BWQ_CUDA_LIB=build/Release/libbwq_cuda.so node native/test/quantize-numerics-gpu-check.mjs [MODEL_DIR]
// (MODEL_DIR defaults to the bundled models/sotu-llama.) Checks, each printed as ok/FAIL with its numbers:
//  1. the device Gram matrices (rtRunBlock options.gram, cuBLAS GEMM beta = 1, accumulated over runs of different batch
//     sizes and read back once) against Σ XᵀX in float64 of the same run's whole taps, for the four linear inputs;
//  2. tapRows: the selected rows equal those rows of the whole taps (bitwise);
//  3. collectStats in 'device' mode (Gram on the GPU, sampled rows only) against 'host' mode (Gram from the taps);
//  4. the device Kronecker rotation (rtKronRotate) against the JS float64 rotation for the Llama / Qwen widths
//     (4096 = 64·64, 11008 = 86·128, 14336 = 112·128) with weight-sized and Gram-sized row counts, with timings of
//     the device, the CPU backend's threads and the JS loop.
// Prints "PASS" (exit 0) or "FAIL: N checks" (exit 1).
import { openModelDir } from '../../dist/model/model-dir.js';
import { createRuntimeBlockEngine } from '../../dist/runtime/block-runner.js';
import { collectStats } from '../../dist/pipeline/quantize.js';
import { hostStream } from '../../dist/pipeline/calibration-stream.js';
import { rotateRows } from '../../dist/quant/kronecker.js';
import { randomOrthogonal } from '../../dist/quant/okt.js';
import { Rng } from '../../dist/linalg/random.js';
import { jsMatmul } from '../../dist/linalg/matmul.js';
import { DEFAULT_MODEL_DIR } from '../../dist/package-paths.js';

let failed = 0;
const check = (ok, line) => {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${line}`);
  if (!ok) failed++;
};
const relDiff = (x, y) => {
  let d = 0;
  let m = 0;
  for (let i = 0; i < y.length; i++) {
    d = Math.max(d, Math.abs(x[i] - y[i]));
    m = Math.max(m, Math.abs(y[i]));
  }
  return d / Math.max(m, 1e-30);
};
/** Σ_r x_r x_rᵀ in float64 added into h */
const addGram = (h, x, rows, cols) => {
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    for (let i = 0; i < cols; i++) {
      const v = x[o + i];
      if (v === 0) continue;
      const hi = i * cols;
      for (let j = 0; j < cols; j++) h[hi + j] += v * x[o + j];
    }
  }
};
const silent = { start() {}, update() {}, succeed() {}, fail() {}, info() {} };
const TAPS = ['attn_input', 'attn_context', 'mlp_input', 'mlp_hidden'];

const dir = process.argv[2] ?? DEFAULT_MODEL_DIR;
const model = await openModelDir(dir);
const gpu = await createRuntimeBlockEngine(model, { device: 'cuda' }).catch((error) => {
  console.log(`FAIL: the block engine did not open on CUDA (set BWQ_CUDA_LIB): ${error.message}`);
  process.exit(1);
});
const cpu = await createRuntimeBlockEngine(model, { device: 'cpu' });
console.log(`model ${dir}; device ${gpu.device}`);
const seq = Math.min(256, model.config.maxPositionEmbeddings);
const batches = [3, 2]; // a second session (another batch size), the same accumulators
const total = batches.reduce((a, b) => a + b, 0);
const ids = Int32Array.from({ length: total * seq }, (_, i) => (i * 7919 + 13) % Math.min(model.config.vocabSize, 4096));
const hidden = await cpu.embed(ids, total, seq);
const h = model.config.hiddenSize;

// 1 + 2: device Gram over two runs, tapRows
{
  const weights = await gpu.loadBlockWeights(0);
  const recipe = { linears: {} };
  const ref = new Map();
  let start = 0;
  for (const n of batches) {
    const x = hidden.subarray(start * seq * h, (start + n) * seq * h);
    const whole = await gpu.run(0, x, n, seq, { weights, recipe, taps: TAPS });
    const rows = Int32Array.from([0, 1, seq - 1, seq, n * seq - 1]);
    const sel = await gpu.run(0, x, n, seq, { weights, recipe, taps: TAPS, gramTaps: TAPS, tapRows: rows });
    for (const t of TAPS) {
      const w = whole.taps.get(t).length / (n * seq);
      if (!ref.has(t)) ref.set(t, new Float64Array(w * w));
      addGram(ref.get(t), whole.taps.get(t), n * seq, w);
      let same = true;
      rows.forEach((r, i) => {
        const a = sel.taps.get(t).subarray(i * w, (i + 1) * w);
        const b = whole.taps.get(t).subarray(r * w, (r + 1) * w);
        for (let k = 0; k < w; k++) if (a[k] !== b[k]) same = false;
      });
      check(same, `tapRows ${t} batch ${n}: ${rows.length} selected rows equal the whole tap's rows`);
    }
    start += n;
  }
  for (const t of TAPS) {
    const t0 = performance.now();
    const got = gpu.readGram(t);
    const ms = performance.now() - t0;
    const e = relDiff(got, ref.get(t));
    const w = Math.sqrt(got.length);
    check(e < 1e-4, `device Gram ${t} [${w}x${w}] over ${total * seq} tokens: max rel diff ${e.toExponential(2)} (read-back ${ms.toFixed(1)} ms)`);
  }
}

// 3: collectStats device vs host on the CUDA engine
{
  const weights = await gpu.loadBlockWeights(1 % model.config.numLayers);
  const picked = new Rng(3).sample(total * seq, 100);
  // the calibration windows as a host stream of the GPU engine (src/pipeline/calibration-stream.ts)
  const stream = hostStream(gpu, hidden.slice(), total, seq, h);
  const args = [stream, 1 % model.config.numLayers, 2, weights, { linears: {} }, TAPS, picked, silent];
  const t0 = performance.now();
  const dev = await collectStats(...args, { mode: 'device', mm: jsMatmul, readGram: gpu.readGram });
  const t1 = performance.now();
  const host = await collectStats(...args, { mode: 'host', mm: jsMatmul });
  const t2 = performance.now();
  for (const t of TAPS) {
    const e = relDiff(dev.grams.get(t).data, host.grams.get(t).data);
    const rows = relDiff(dev.stats.get(t), host.stats.get(t));
    check(e < 1e-4 && rows === 0 && dev.grams.get(t).tokens === total * seq,
      `collectStats ${t}: device vs host Gram ${e.toExponential(2)}, sampled rows diff ${rows}`);
  }
  console.log(`     collectStats: device ${(t1 - t0).toFixed(0)} ms, host (JS GEMM) ${(t2 - t1).toFixed(0)} ms`);
}

// 4: device rotation
{
  const rng = new Rng(11);
  for (const [a, b, rows] of [[64, 64, 512], [86, 128, 300], [112, 128, 64], [64, 64, 4096]]) {
    const k = a * b;
    const x = Float32Array.from({ length: rows * k }, () => rng.normal());
    const r1 = randomOrthogonal(a, rng);
    const r2 = randomOrthogonal(b, rng);
    const r1f = Float32Array.from(r1);
    const r2f = Float32Array.from(r2);
    let t0 = performance.now();
    const got = await gpu.rotateRows(x, rows, r1f, a, r2f, b);
    const msGpu = performance.now() - t0;
    t0 = performance.now();
    const onCpu = await cpu.rotateRows(x, rows, r1f, a, r2f, b);
    const msCpu = performance.now() - t0;
    const sub = Math.min(rows, 64); // the JS reference on the first rows (it is slow)
    t0 = performance.now();
    const ref = rotateRows(Float64Array.from(x.subarray(0, sub * k)), sub, r1, a, r2, b);
    const msJs = ((performance.now() - t0) * rows) / sub;
    const e = relDiff(got.subarray(0, sub * k), ref);
    const ec = relDiff(got, onCpu);
    check(e < 1e-5 && ec < 1e-5, `kron_rotate ${rows} rows x ${k} (${a}x${b}): vs JS float64 ${e.toExponential(2)}, vs CPU backend ${ec.toExponential(2)}; ` +
      `device ${msGpu.toFixed(1)} ms, CPU threads ${msCpu.toFixed(1)} ms, JS ≈ ${msJs.toFixed(0)} ms`);
  }
}

await gpu.close();
await cpu.close();
await model.checkpoint.close();
console.log(failed === 0 ? 'PASS' : `FAIL: ${failed} checks`);
process.exit(failed === 0 ? 0 : 1);
