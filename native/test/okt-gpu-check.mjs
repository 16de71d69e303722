// The device OKT (native/ops/okt/, the block engine's learnOkt) against the TypeScript reference (src/quant/okt.ts
// learnOkt with the pipeline's CPU products, onnxruntime's float32 GEMM) from the same initial factors, on random
// stacked weights of the Llama-2-7B block's shapes (q/k/v 3 x 4096 rows x K 4096; gate/up 2 x 11008 x 4096;
// down 4096 x 11008, K = 86 x 128) with 512 activation rows and lambda = 0.1 (bwq's BWLA defaults), plus two small
// cases for the other paths (smoothing stages without the activation term; a non-square factorisation).
// Prints the objective histories side by side, max |dR| and both wall times; PASS when every history entry agrees
// within 1e-4 relative, the factors within 1e-3, and the device is at least 10x faster on the 7B shapes.
// Run on a GPU machine from the repo root after `npx tsc` and the native builds (BWQ_CUDA_LIB set, or the library in
// build/Release):  node native/test/okt-gpu-check.mjs [--iterations N] [--groups qkv,gateup,down] [--host-gemm ort|js]
import { openModelDir } from '../../dist/model/model-dir.js';
import { createRuntimeBlockEngine } from '../../dist/runtime/block-runner.js';
import { learnOkt } from '../../dist/quant/okt.js';
import { jsMatmul } from '../../dist/linalg/matmul.js';
import { Rng } from '../../dist/linalg/random.js';
import { DEFAULT_MODEL_DIR } from '../../dist/package-paths.js';

const arg = (name, fallback) => {
  const i = process.argv.indexOf(name);
  return i < 0 ? fallback : process.argv[i + 1];
};
const iterations = Number(arg('--iterations', '3'));
const groups = arg('--groups', 'qkv,gateup,down').split(',');

/** heavy-ish tailed rows (Student-t-like: normal / sqrt(chi2/4)) with a few outlier columns, float32 */
function weights(rows, cols, rng, outliers = 0) {
  const w = new Float32Array(rows * cols);
  for (let i = 0; i < w.length; i++) {
    let c = 0;
    for (let k = 0; k < 4; k++) c += rng.normal() ** 2;
    w[i] = (0.02 * rng.normal()) / Math.sqrt(c / 4);
  }
  for (let j = 0; j < outliers; j++) {
    const col = (j * 977 + 13) % cols;
    for (let r = 0; r < rows; r++) w[r * cols + col] *= 8;
  }
  return { data: w, rows };
}

const SHAPES = {
  small_anneal: { cols: 256, mats: [300], act: 0, options: { anneal: [1, 0.5], annealIterations: 3 }, timed: false },
  small_rect: { cols: 24 * 40, mats: [200, 100], act: 64, options: {}, timed: false },
  qkv: { cols: 4096, mats: [4096, 4096, 4096], act: 512, options: {}, timed: true },
  gateup: { cols: 4096, mats: [11008, 11008], act: 512, options: {}, timed: true },
  down: { cols: 11008, mats: [4096], act: 512, options: {}, timed: true },
};

const model = await openModelDir(DEFAULT_MODEL_DIR);
const engine = await createRuntimeBlockEngine(model, { device: 'cuda' });
// the reference's products: onnxruntime's GEMM as the CPU pipeline uses it, or (--host-gemm js, or without
// onnxruntime-node) the JS GEMM
let ort;
if (arg('--host-gemm', 'ort') === 'ort') {
  try {
    ort = (await import('../../dist/pipeline/ort-engine.js')).createOrtEngine();
  } catch (error) {
    console.log(`onnxruntime unavailable (${error.message.split('\n')[0]}): the reference uses the JS GEMM`);
  }
}
const hostMatmul = ort?.matmul ?? jsMatmul;
if (engine.learnOkt === undefined) {
  console.log(`FAIL: the block engine on ${engine.device} has no learnOkt`);
  process.exit(1);
}
console.log(`device: ${engine.device}; iterations ${iterations}, lambda 0.1, random init; reference GEMM: ${ort === undefined ? 'JS' : 'onnxruntime'}`);
let bad = 0;
for (const name of ['small_anneal', 'small_rect', ...groups]) {
  const s = SHAPES[name];
  const rng = new Rng(15);
  const mats = s.mats.map((rows, i) => weights(rows, s.cols, rng, i === 0 ? 8 : 0));
  const x = weights(Math.max(s.act, 1), s.cols, rng, 16);
  const options = {
    iterations, tolerance: 0, init: 'random', seed: 7,
    ...(s.act > 0 ? { activations: x, activationWeight: 0.1 } : {}), ...s.options,
  };
  // warm-up (cuBLAS handles, kernels): one small call
  if (name === 'small_anneal') await engine.learnOkt([weights(64, 64, new Rng(1))], 64, { iterations: 1 });
  let t0 = performance.now();
  const dev = await engine.learnOkt(mats, s.cols, options);
  const tDev = (performance.now() - t0) / 1000;
  t0 = performance.now();
  const ref = await learnOkt(mats, s.cols, { ...options, matmul: hostMatmul });
  const tRef = (performance.now() - t0) / 1000;

  let worstJ = 0;
  const lines = [];
  const n = Math.max(ref.history.length, dev.history.length);
  for (let i = 0; i < n; i++) {
    const r = ref.history[i], d = dev.history[i];
    const rel = r === undefined || d === undefined ? Infinity : Math.abs(d - r) / Math.max(Math.abs(r), 1e-30);
    worstJ = Math.max(worstJ, rel);
    lines.push(`    ${String(i).padStart(2)}  ts ${r?.toFixed(8) ?? '-'}  cuda ${d?.toFixed(8) ?? '-'}  rel ${rel.toExponential(1)}`);
  }
  let dR = 0;
  for (const [p, q] of [[ref.r1, dev.r1], [ref.r2, dev.r2]]) for (let i = 0; i < p.length; i++) dR = Math.max(dR, Math.abs(p[i] - q[i]));
  const tails = ref.activationTail === undefined ? 'no activation term'
    : `kappa ${ref.activationTail.before.toFixed(4)} -> ts ${ref.activationTail.after.toFixed(4)} / cuda ${dev.activationTail.after.toFixed(4)}`;
  const speedup = tRef / tDev;
  const ok = worstJ <= 1e-4 && dR <= 1e-3 && ref.iterations === dev.iterations && (!s.timed || speedup >= 10);
  if (!ok) bad++;
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}: K ${s.cols} = ${dev.a} x ${dev.b}, ${s.mats.join('+')} rows, ${s.act} activation rows; ` +
    `max rel dJ ${worstJ.toExponential(2)}, max |dR| ${dR.toExponential(2)}; eps_w ${ref.weightError.before.toFixed(5)} -> ` +
    `ts ${ref.weightError.after.toFixed(6)} / cuda ${dev.weightError.after.toFixed(6)}; ${tails}; ` +
    `wall ts ${tRef.toFixed(2)} s, cuda ${tDev.toFixed(3)} s (${speedup.toFixed(0)}x)`);
  console.log(lines.join('\n'));
}
await engine.close();
await ort?.close();
await model.checkpoint.close();
console.log(bad === 0 ? 'PASS: device OKT = TypeScript OKT' : `FAIL: ${bad} case(s) differ`);
process.exit(bad === 0 ? 0 : 1);
