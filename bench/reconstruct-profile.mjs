// Host-side cost of block-wise reconstruction steps on one block of a benchmark config (random weights), with the
// GEMMs replaced by a stand-in that costs what a device GEMM costs the host: a fresh Float32Array of the result,
// filled by one memcpy (the download). Everything else (site quantizers, softmax, RMSNorm/RoPE/SwiGLU, the binarized
// linears' materialization and gradient passes, Adam) runs as in `bwq quantize`. Run after `npx tsc`:
//
//   node --cpu-prof --cpu-prof-dir=/tmp/rec-prof bench/reconstruct-profile.mjs [CONFIG] [SEQ] [STEPS] [GEMM] [RANK]
//
// CONFIG: llama-2-7b (default), llama-3-8b, qwen3-8b or a config.json; SEQ tokens per window (default 2048, the GPU
// calibration window); STEPS Adam steps (default 3); GEMM "device" (default) or "ort" (the real CPU GEMMs,
// onnxruntime); RANK of the low-rank term (default 0 as BWTA / RTN calibrate; BWLA's PSP: 8). BWTA's sites:
// ternary with the [9, 7, 5] stages, ternary attention operands.
// Prints the wall time per phase; the .cpuprofile breaks the rest down by function (docs/PERFORMANCE.md).
import { loadBenchConfig } from '../dist/bench/e2e.js';
import { Rng } from '../dist/linalg/random.js';
import { ropeTables } from '../dist/native/rope.js';
import { inverseFrequencies } from '../dist/onnx/rope.js';
import { createOrtGemm } from '../dist/pipeline/reconstruct-gemm.js';
import { BLOCK_LINEAR_ROLES, createStudent } from '../dist/quant/reconstruct/student.js';
import { reconstructBlock } from '../dist/quant/reconstruct/train.js';

const [configName = 'llama-2-7b', seqArg = '2048', stepsArg = '3', gemmKind = 'device', rankArg = '0'] = process.argv.slice(2);
const seq = Number(seqArg);
const steps = Number(stepsArg);
const { name, config: c } = loadBenchConfig(configName);
const rng = new Rng(1);
const qd = c.numHeads * c.headDim;
const kv = c.numKvHeads * c.headDim;
const shapes = {
  q_proj: [qd, c.hiddenSize], k_proj: [kv, c.hiddenSize], v_proj: [kv, c.hiddenSize], o_proj: [c.hiddenSize, qd],
  gate_proj: [c.intermediateSize, c.hiddenSize], up_proj: [c.intermediateSize, c.hiddenSize], down_proj: [c.hiddenSize, c.intermediateSize],
};
const rank = Number(rankArg);
const gaussian = (n, scale) => {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = scale * rng.normal();
  return a;
};
const t0 = performance.now();
const linears = {};
for (const role of BLOCK_LINEAR_ROLES) {
  const [rows, cols] = shapes[role];
  const target = gaussian(rows * cols, 0.02);
  const signs = new Int8Array(rows * cols);
  for (let i = 0; i < signs.length; i++) signs[i] = target[i] >= 0 ? 1 : -1;
  linears[role] = { rows, cols, target, signs, scales: new Float32Array(rows).fill(0.016), rank,
    lrA: gaussian(rows * rank, 0.01), lrB: gaussian(rank * cols, 0.01), bias: undefined };
}
const ternary = { kind: 'ternary', thresholdRatio: 0.7 };
const inv = c.rope === undefined ? undefined : inverseFrequencies(c);
const tables = new Map();
const student = createStudent({
  dims: { hidden: c.hiddenSize, intermediate: c.intermediateSize, numHeads: c.numHeads, numKvHeads: c.numKvHeads,
    headDim: c.headDim, normEps: c.normEps, slidingWindow: c.slidingWindow },
  ropeFor: (s) => {
    if (inv === undefined) return undefined;
    if (!tables.has(s)) tables.set(s, ropeTables(inv, s));
    return tables.get(s);
  },
  inputNorm: new Float32Array(c.hiddenSize).fill(1), postNorm: new Float32Array(c.hiddenSize).fill(1),
  qNorm: c.qkNorm ? new Float32Array(c.headDim).fill(1) : undefined, kNorm: c.qkNorm ? new Float32Array(c.headDim).fill(1) : undefined,
  linears, quantizers: { attn_in: ternary, attn_out: ternary, mlp_in: ternary, mlp_out: ternary },
  attention: { query: ternary, key: ternary, value: ternary, probs: ternary }, rotations: {},
}, { levels: [9, 7, 5], align: false });
for (const role of BLOCK_LINEAR_ROLES) linears[role].target = undefined;
const windows = 2;
const data = { inputs: gaussian(windows * seq * c.hiddenSize, 1), targets: gaussian(windows * seq * c.hiddenSize, 1), windows, seq, hidden: c.hiddenSize };
const setupSeconds = (performance.now() - t0) / 1000;

// the device stand-in: the result array of a download
let pool = new Float32Array(0);
const download = (m, n) => {
  if (pool.length < m * n) pool = gaussian(m * n, 1);
  const out = new Float32Array(m * n);
  out.set(pool.subarray(0, m * n));
  return out;
};
const device = { nt: async (a, b, m, k, n) => download(m, n), nn: async (a, b, m, k, n) => download(m, n), tn: async (a, b, m, k, n) => download(m, n) };
const gemm = gemmKind === 'ort' ? createOrtGemm() : device;
const stepTimes = [];
let last = performance.now();
const t1 = performance.now();
const report = await reconstructBlock(student, data, {
  iterations: steps, batch: 1, lrWeight: 0.1, lrScale: 0.01, lrAct: 0.01, finalFraction: 0.5, handover: 0.5, evalWindows: 1, seed: 0,
}, gemm, () => {
  const now = performance.now();
  stepTimes.push((now - last) / 1000);
  last = now;
});
const total = (performance.now() - t1) / 1000;
if (gemmKind === 'ort') await gemm.close();
const weights = Object.values(shapes).reduce((s, [r, k]) => s + r * k, 0);
console.log(JSON.stringify({
  config: name, seq, steps, gemm: gemmKind, rank, weights, setupSeconds,
  // the first step also includes the loss before (one forward); the last, nothing after
  stepSeconds: stepTimes, reconstructSeconds: total, lossBefore: report.lossBefore, lossAfter: report.lossAfter,
  rssGiB: process.memoryUsage().rss / 2 ** 30,
}, null, 2));
