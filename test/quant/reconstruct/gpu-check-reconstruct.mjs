// GPU check of the reconstruction's GEMMs on the device (run on a CUDA machine after `npx tsc`, with the addon and
// libbwq_cuda.so built; BWQ_CUDA_LIB may point at the library):
//
//   node test/quant/reconstruct/gpu-check-reconstruct.mjs
//
// 1. rtMatmulT (cuBLAS with transposition flags) for the four layouts equals a float64 product (max relative
//    difference < 1e-5);
// 2. a small decoder block's forward and backward (q/k norms, GQA, RoPE) through createDeviceGemm equals the
//    one through the JavaScript GEMMs (< 1e-4);
// 3. times the 7B-shape products of one reconstruction step (T = 2048 tokens): nt (forward), nn (∂x), tn (∂W) for
//    q/k/v/o [4096, 4096] and gate/up/down [11008, 4096]/[4096, 11008], host to host, against the same products
//    with the operand transposed on the host first (the matmul without flags).
// Prints PASS/FAIL lines and the timings; exit code 1 on a failure. BWQ_CHECK_DEVICE=cpu runs 1 and 2 on the CPU
// backend (the host-rearranged path), without the timings.
import { openModelDir } from '../../../dist/model/model-dir.js';
import { DEFAULT_MODEL_DIR } from '../../../dist/package-paths.js';
import { createRuntimeBlockEngine } from '../../../dist/runtime/block-runner.js';
import { createDeviceGemm } from '../../../dist/pipeline/reconstruct-gemm.js';
import { transposeF32 } from '../../../dist/linalg/dense.js';
import { jsGemm } from '../../../dist/quant/reconstruct/gemm.js';
import { BinaryLinear } from '../../../dist/quant/reconstruct/binary-linear.js';
import { ReconBlock } from '../../../dist/quant/reconstruct/block.js';
import { QuantSite } from '../../../dist/quant/reconstruct/quant-site.js';
import { ropeTables } from '../../../dist/native/rope.js';
import { Rng } from '../../../dist/linalg/random.js';

let failed = false;
const report = (ok, what) => {
  if (!ok) failed = true;
  console.log(`${ok ? 'PASS' : 'FAIL'} ${what}`);
};
const rng = new Rng(3);
const random = (n) => Float32Array.from({ length: n }, () => rng.next() * 2 - 1);
const relDiff = (x, y) => {
  let d = 0, m = 0;
  for (let i = 0; i < y.length; i++) {
    d = Math.max(d, Math.abs(x[i] - y[i]));
    m = Math.max(m, Math.abs(y[i]));
  }
  return d / m;
};

const model = await openModelDir(DEFAULT_MODEL_DIR);
const want = process.env.BWQ_CHECK_DEVICE ?? 'cuda';
const engine = await createRuntimeBlockEngine(model, { device: want });
report(engine.device.startsWith(want) && engine.matmulT !== undefined, `block engine on ${engine.device} with matmulT`);

// 1. layouts
const [m, k, n] = [300, 500, 200];
for (const [ta, tb] of [[false, true], [false, false], [true, false], [true, true]]) {
  const a = random(m * k);
  const b = random(k * n);
  const ref = new Float64Array(m * n);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) {
    let s = 0;
    for (let p = 0; p < k; p++) s += (ta ? a[p * m + i] : a[i * k + p]) * (tb ? b[j * k + p] : b[p * n + j]);
    ref[i * n + j] = s;
  }
  const d = relDiff(await engine.matmulT(a, ta, b, tb, m, k, n), ref);
  report(d < 1e-5, `matmulT trans (${ta}, ${tb}) ${m}x${k}x${n}: max rel diff ${d.toExponential(2)}`);
}

// 2. a block's forward and backward
const dims = { hidden: 64, intermediate: 96, numHeads: 4, numKvHeads: 2, headDim: 16, normEps: 1e-6, slidingWindow: undefined };
const shapes = { q_proj: [64, 64], k_proj: [32, 64], v_proj: [32, 64], o_proj: [64, 64], gate_proj: [96, 64], up_proj: [96, 64], down_proj: [64, 96] };
const forwardBackward = async (gemm) => {
  const r = new Rng(9);
  const rand = (len, s = 1, o = 0) => Float32Array.from({ length: len }, () => (r.next() * 2 - 1) * s + o);
  const linears = {};
  for (const [role, [rows, cols]] of Object.entries(shapes)) {
    linears[role] = new BinaryLinear(rows, cols, rand(rows * cols), rand(rows, 0.1, 0.2), 4, rand(rows * 4, 0.1), rand(4 * cols, 0.1), undefined);
  }
  const site = (name) => new QuantSite(name, [{ kind: 'none' }], 0, false);
  const tables = ropeTables(Float32Array.from({ length: 8 }, (_, i) => 1 / 10000 ** (i / 8)), 128);
  const block = new ReconBlock(dims, {
    linears, inputNorm: rand(64, 0.2, 1), postNorm: rand(64, 0.2, 1), qNorm: rand(16, 0.2, 1), kNorm: rand(16, 0.2, 1),
    sites: { attn_in: site('attn_in'), attn_out: site('attn_out'), mlp_in: site('mlp_in'), mlp_out: site('mlp_out') },
    attention: { query: site('query'), key: site('key'), value: site('value'), probs: site('probs'), probsRow: undefined },
    rotations: {},
  }, () => tables);
  const h = rand(2 * 128 * 64);
  const R = rand(h.length);
  const { out, cache } = await block.forward(h, 2, 128, { stage: 0, lambda: 1 }, gemm);
  const dh = await block.backward(R, cache, gemm);
  return [out, dh, ...Object.values(block.params.linears).flatMap((l) => [l.gAlpha, l.gLatent, l.gA, l.gB])];
};
const onDevice = await forwardBackward(createDeviceGemm(engine.matmulT, { ...jsGemm, close: async () => {} }, 0));
const inJs = await forwardBackward(jsGemm);
const worst = Math.max(...inJs.map((ref, i) => relDiff(onDevice[i], ref)));
report(worst < 1e-4, `decoder block forward + backward on the device = JS GEMMs: max rel diff ${worst.toExponential(2)}`);

// 3. timings of one step's products at the 7B shape
const T = 2048;
const time = async (f) => {
  await f();
  const t0 = performance.now();
  for (let i = 0; i < 3; i++) await f();
  return (performance.now() - t0) / 3;
};
let total = 0;
let totalHost = 0;
for (const [name, N, K, count] of want !== 'cuda' ? [] : [['q/k/v/o', 4096, 4096, 4], ['gate/up', 11008, 4096, 2], ['down', 4096, 11008, 1]]) {
  const x = random(T * K);
  const w = random(N * K);
  const g = random(T * N);
  const nt = await time(() => engine.matmulT(x, false, w, true, T, K, N));
  const nn = await time(() => engine.matmulT(g, false, w, false, T, N, K));
  const tn = await time(() => engine.matmulT(g, true, x, false, N, T, K));
  const nnHost = await time(() => engine.matmulT(g, false, transposeF32(w, N, K), true, T, N, K));
  const tnHost = await time(() => engine.matmulT(transposeF32(g, T, N), false, transposeF32(x, T, K), true, N, T, K));
  total += count * (nt + nn + tn);
  totalHost += count * (nt + nnHost + tnHost);
  console.log(`${name} [${N}, ${K}] x ${count}: nt ${nt.toFixed(1)} ms, nn ${nn.toFixed(1)} ms (host-transposed ${nnHost.toFixed(1)}), `
    + `tn ${tn.toFixed(1)} ms (host-transposed ${tnHost.toFixed(1)}); ${(2 * T * N * K * 3 / ((nt + nn + tn) * 1e9)).toFixed(1)} TFLOP/s host to host`);
}
if (want === 'cuda') console.log(`one step's 21 linear products: ${total.toFixed(0)} ms with flags, ${totalHost.toFixed(0)} ms with host transposes`);
await engine.close();
await model.checkpoint.close();
console.log(failed ? 'FAIL' : 'PASS');
process.exit(failed ? 1 : 0);
