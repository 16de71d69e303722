// Node-side check of the CUDA path (run on a GPU machine with Node.js, after `npm ci`):
//   node bin/bwq.js quantize test/fixtures/models/tiny-llama -o DIR/tiny-bwla --method bwla --nsamples 4 --seqlen 64
//   node bin/bwq.js quantize test/fixtures/models/tiny-llama -o DIR/tiny-bwta --method bwta --nsamples 4 --seqlen 64
//   node native/test/node-gpu-check.mjs DIR
// Compares the addon's CUDA kernels (weights uploaded per call, and kept on the GPU: residentWeights; ternary x
// ternary) with its CPU kernels (exact int32), times host calls, then runs the packed models' native forward
// pass on CUDA (resident weights, the default, and per-call uploads) and on CPU: the perplexities must be
// identical.
// Uses only the JS float GEMM, so onnxruntime is not needed there.
import { loadNativeKernels, nativeCudaBench } from '../../dist/native/kernels.js';
import { createNativeModelRunner } from '../../dist/native/forward.js';
import { openModelDir } from '../../dist/model/model-dir.js';
import { loadTokenizer } from '../../dist/model/tokenizer.js';
import { evaluatePerplexity } from '../../dist/eval/perplexity.js';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

const modelsDir = resolve(process.argv[2] ?? '.');

const cuda = loadNativeKernels({ device: 'cuda' });
const resident = loadNativeKernels({ device: 'cuda', residentWeights: true });
const cpu = loadNativeKernels({ device: 'cpu' });
console.log('cuda backend', cuda.backend, cuda.gpu, cuda.notice ?? '', 'resident', resident.residentWeights);
let seed = 7;
const rnd = () => { seed = (seed * 1103515245 + 12345) >>> 0; return seed; };
let bad = 0;
for (const [m, n, k] of [[1, 70, 257], [3, 5, 33], [17, 70, 100], [64, 256, 4096], [2048, 128, 512]]) {
  const w = Math.ceil(k / 32);
  const mask = (r) => { const a = new Uint32Array(r * w); for (let i = 0; i < a.length; i++) a[i] = rnd(); for (let i = 0; i < r; i++) if (k % 32) a[i * w + w - 1] &= (1 << (k % 32)) - 1; return a; };
  const plus = mask(m), minus = mask(m); for (let i = 0; i < plus.length; i++) minus[i] &= ~plus[i];
  const weights = mask(n);
  const bPlus = mask(n), bMinus = mask(n); for (let i = 0; i < bPlus.length; i++) bMinus[i] &= ~bPlus[i];
  const a8 = new Int8Array(m * k); for (let i = 0; i < a8.length; i++) a8[i] = (rnd() % 63) - 31;
  const tbCpu = cpu.ternaryBinaryGemm(plus, minus, weights, m, n, k), i8Cpu = cpu.int8BinaryGemm(a8, weights, m, n, k);
  const checks = [
    ['ternaryBinary', cuda.ternaryBinaryGemm(plus, minus, weights, m, n, k), tbCpu],
    ['int8Binary', cuda.int8BinaryGemm(a8, weights, m, n, k), i8Cpu],
    ['ternaryBinary resident', resident.ternaryBinaryGemm(plus, minus, weights, m, n, k), tbCpu],
    ['int8Binary resident', resident.int8BinaryGemm(a8, weights, m, n, k), i8Cpu],
    ['ternaryBinary resident again', resident.ternaryBinaryGemm(plus, minus, weights, m, n, k), tbCpu],
    ['ternaryBinary resident, n - 1 rows', resident.ternaryBinaryGemm(plus, minus, weights, m, n - 1, k),
      cpu.ternaryBinaryGemm(plus, minus, weights, m, n - 1, k)],
    ['ternaryTernary', cuda.ternaryTernaryGemm(plus, minus, bPlus, bMinus, m, n, k),
      cpu.ternaryTernaryGemm(plus, minus, bPlus, bMinus, m, n, k)],
  ];
  for (const [name, g, c] of checks) {
    let diff = 0; for (let i = 0; i < c.length; i++) if (g[i] !== c[i]) diff++;
    console.log(`${name} m=${m} n=${n} k=${k}: ${diff === 0 ? 'exact' : diff + ' mismatches'}`);
    bad += diff;
  }
}
{
  // Time per host call for an LLM-sized linear (K x N = 4096 x 11008, M = 16): weights uploaded per call
  // (5.6 MB of packed bits) against the resident copy.
  const m = 16, n = 11008, k = 4096, w = k / 32;
  const weights = new Uint32Array(n * w).map(() => rnd());
  const plus = new Uint32Array(m * w).map(() => rnd()), minus = new Uint32Array(m * w).map((_, i) => rnd() & ~plus[i]);
  const out = new Int32Array(m * n);
  const time = (kernels) => {
    for (let i = 0; i < 3; i++) kernels.ternaryBinaryGemm(plus, minus, weights, m, n, k, out);
    const t0 = performance.now();
    for (let i = 0; i < 20; i++) kernels.ternaryBinaryGemm(plus, minus, weights, m, n, k, out);
    return (performance.now() - t0) / 20;
  };
  console.log(`ternaryBinary m=${m} k=${k} n=${n} per host call: weights uploaded per call ${time(cuda).toFixed(3)} ms,` +
    ` resident ${time(resident).toFixed(3)} ms`);
}
{
  // Attention scores Q·Kᵀ of one head (seq x seq over the head dimension), per host call on CUDA and on the CPU.
  for (const [seq, hd] of [[256, 64], [2048, 128]]) {
    const w = hd / 32;
    const planes = () => { const p = new Uint32Array(seq * w).map(() => rnd()), q = new Uint32Array(seq * w).map((_, i) => rnd() & ~p[i]); return [p, q]; };
    const [qp, qm] = planes(), [kp, km] = planes();
    const out = new Int32Array(seq * seq);
    const time = (kernels) => {
      for (let i = 0; i < 3; i++) kernels.ternaryTernaryGemm(qp, qm, kp, km, seq, seq, hd, out);
      const t0 = performance.now();
      for (let i = 0; i < 10; i++) kernels.ternaryTernaryGemm(qp, qm, kp, km, seq, seq, hd, out);
      return (performance.now() - t0) / 10;
    };
    const gpuMs = time(cuda), cpuMs = time(cpu);
    const same = cuda.ternaryTernaryGemm(qp, qm, kp, km, seq, seq, hd).every((v, i) => v === out[i]);
    console.log(`ternaryTernary seq=${seq} headDim=${hd} per host call: cuda ${gpuMs.toFixed(3)} ms, cpu ${cpuMs.toFixed(3)} ms` +
      ` (${cpu.cpuFeatures}), ${same ? 'exact' : 'MISMATCH'}`);
    if (!same) bad++;
  }
}
for (const cold of [false, true]) {
  // The bench through the addon, with warm and with cold weights (the coldWeights flag reaches the library).
  const r = nativeCudaBench('ternary-binary', 1, 4096, 4096, 10, 200, cold);
  console.log(`bench M=1 4096x4096 ${cold ? 'cold' : 'warm'} weights: ${r.kernel} ours ${(r.msOursGraph * 1e3).toFixed(2)} us, ` +
    `cuBLAS ${(r.msCublasGraph * 1e3).toFixed(2)} us (graph), check ${r.checked && r.mismatches === 0 ? 'ok' : 'FAILED'}`);
  if (!r.checked || r.mismatches !== 0) bad++;
}
const text = readFileSync(new URL('../../data/sotu-test.txt', import.meta.url), 'utf8');
for (const name of ['tiny-bwla', 'tiny-bwta']) {
  const dir = join(modelsDir, name);
  const model = await openModelDir(dir);
  const ids = (await loadTokenizer(dir)).encode(text);
  for (const device of ['cuda', 'cuda-upload-per-call', 'cpu']) {
    const kernels = device === 'cuda-upload-per-call' ? cuda : undefined;
    const runner = await createNativeModelRunner(model, {
      device: device === 'cpu' ? 'cpu' : 'cuda', kernels, floatGemm: 'js', notice: false,
    });
    const t0 = performance.now();
    const r = await evaluatePerplexity(runner, ids, { seqlen: 64, maxWindows: 16 });
    const s = (performance.now() - t0) / 1000;
    console.log(`${name} ${device}: ppl ${r.ppl.toFixed(6)} (${r.tokens} tokens, ${s.toFixed(2)} s)`);
    await runner.close();
  }
  await model.checkpoint.close();
}
process.exit(bad === 0 ? 0 : 1);
