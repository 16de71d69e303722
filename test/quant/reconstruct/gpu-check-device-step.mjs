// GPU check of the reconstruction's device training step (native/ops/recon/, src/runtime/device-recon.ts) against
// the TypeScript reference (src/quant/reconstruct/, the host stepper with the JavaScript GEMMs). Run on a CUDA
// machine after `npx tsc`, with the addon and libbwq_cuda.so built (BWQ_CUDA_LIB may point at the library):
//
//   node test/quant/reconstruct/gpu-check-device-step.mjs [--time]
//
// For three small blocks — BWTA-like (ternary sites with the 9/5-level stages and the alignment factors, ternary
// attention operands with causal 'unmasked' probability rows, q/k norms, GQA, RoPE, batch 2), a longer one (rows of
// 300, the default 9/7/5 stages) and BWLA-like (int6 sites behind Kronecker rotations with a remainder, rank-4
// low-rank factors, q/k/v biases, a sliding window, no attention sites) — at several stage points, one step on each stepper from the same start: the loss, every site's
// parameter gradient and factors, every linear's gradients (latent, alpha, A, B) and the parameters after Adam.
// Then 30 (20) steps of reconstructBlock on each (losses before / after). --time: seconds per step of a Llama-2-7B-shape
// block (random, BWTA sites, 1 x 2048 tokens). PASS/FAIL lines; exit code 1 on a failure.
import { openModelDir } from '../../../dist/model/model-dir.js';
import { DEFAULT_MODEL_DIR } from '../../../dist/package-paths.js';
import { createRuntimeBlockEngine } from '../../../dist/runtime/block-runner.js';
import { jsGemm } from '../../../dist/quant/reconstruct/gemm.js';
import { BinaryLinear } from '../../../dist/quant/reconstruct/binary-linear.js';
import { ReconBlock } from '../../../dist/quant/reconstruct/block.js';
import { QuantSite } from '../../../dist/quant/reconstruct/quant-site.js';
import { ternaryStages } from '../../../dist/quant/reconstruct/schedule.js';
import { hostStepper, linearRates, reconstructBlock } from '../../../dist/quant/reconstruct/train.js';
import { ropeTables } from '../../../dist/native/rope.js';
import { Rng } from '../../../dist/linalg/random.js';

let failed = false;
const report = (ok, what) => {
  if (!ok) failed = true;
  console.log(`${ok ? 'PASS' : 'FAIL'} ${what}`);
};
const relDiff = (x, y) => {
  let d = 0, m = 1e-30;
  for (let i = 0; i < y.length; i++) {
    d = Math.max(d, Math.abs(x[i] - y[i]));
    m = Math.max(m, Math.abs(y[i]));
  }
  return d / m;
};
/** Fraction of entries whose sign differs where the reference is not tiny (Adam's first step moves by lr·sign). */
const signMismatch = (x, y) => {
  let m = 0;
  for (let i = 0; i < y.length; i++) m = Math.max(m, Math.abs(y[i]));
  let bad = 0, n = 0;
  for (let i = 0; i < y.length; i++) {
    if (Math.abs(y[i]) < 1e-3 * m) continue;
    n++;
    if (Math.sign(x[i]) !== Math.sign(y[i])) bad++;
  }
  return n === 0 ? 0 : bad / n;
};

const model = await openModelDir(DEFAULT_MODEL_DIR);
const engine = await createRuntimeBlockEngine(model, { device: 'cuda' });
report(engine.device.startsWith('cuda') && engine.reconstructionSteps !== undefined, `block engine on ${engine.device} with reconstructionSteps`);
if (engine.reconstructionSteps === undefined) process.exit(1);

const CASES = {
  bwta: {
    dims: { hidden: 64, intermediate: 96, numHeads: 4, numKvHeads: 2, headDim: 16, normEps: 1e-6, slidingWindow: undefined },
    batch: 2, seq: 32, rank: 0, qkNorm: true, bias: false,
    linearSite: (name) => new QuantSite(name, ternaryStages([9, 5]), 0.7, true),
    attention: (site) => ({ query: site('query'), key: site('key'), value: site('value'), probs: site('probs'), probsRow: 'unmasked' }),
    rotations: () => ({}),
    points: [{ stage: 1, lambda: 0.5 }, { stage: 2, lambda: 0.25 }, { stage: 3, lambda: 0.6 }, { stage: 3, lambda: 1 }],
  },
  // longer rows than a kernel's block (seq 300 > 256 threads), the default 9/7/5 stages, alignment off (the default)
  medium: {
    dims: { hidden: 192, intermediate: 320, numHeads: 6, numKvHeads: 2, headDim: 32, normEps: 1e-6, slidingWindow: undefined },
    batch: 1, seq: 300, rank: 0, qkNorm: false, bias: false,
    linearSite: (name) => new QuantSite(name, ternaryStages([9, 7, 5]), 0.7, false),
    attention: (site) => ({ query: site('query'), key: site('key'), value: site('value'), probs: site('probs'), probsRow: 'unmasked' }),
    rotations: () => ({}),
    points: [{ stage: 2, lambda: 0.5 }, { stage: 4, lambda: 1 }],
    iterations: 20,
  },
  bwla: {
    dims: { hidden: 64, intermediate: 98, numHeads: 4, numKvHeads: 4, headDim: 16, normEps: 1e-5, slidingWindow: 24 },
    batch: 1, seq: 32, rank: 4, qkNorm: false, bias: true,
    linearSite: (name) => new QuantSite(name, [{ kind: 'int', bits: 6 }], 0.9, false),
    attention: () => undefined,
    rotations: (r) => ({
      attn_in: orth(r, 8, 8), attn_out: orth(r, 8, 8), mlp_in: orth(r, 8, 8), mlp_out: { ...orth(r, 8, 12), r3: orthogonal(r, 2), r: 2 },
    }),
    points: [{ stage: 0, lambda: 1 }],
  },
};

/** A random orthogonal n x n (Gram–Schmidt of a random matrix). */
function orthogonal(r, n) {
  const q = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    const v = Float64Array.from({ length: n }, () => r.next() * 2 - 1);
    for (let j = 0; j < i; j++) {
      let d = 0;
      for (let c = 0; c < n; c++) d += v[c] * q[j * n + c];
      for (let c = 0; c < n; c++) v[c] -= d * q[j * n + c];
    }
    const norm = Math.hypot(...v);
    for (let c = 0; c < n; c++) q[i * n + c] = v[c] / norm;
  }
  return Float32Array.from(q);
}
function orth(r, a, b) {
  return { r1: orthogonal(r, a), a, r2: orthogonal(r, b), b };
}

/** The same block every call (seeded), with fresh sites. */
function makeBlock(c) {
  const r = new Rng(17);
  const rand = (len, s = 1, o = 0) => Float32Array.from({ length: len }, () => (r.next() * 2 - 1) * s + o);
  const d = c.dims;
  const qd = d.numHeads * d.headDim;
  const kd = d.numKvHeads * d.headDim;
  const shapes = { q_proj: [qd, d.hidden], k_proj: [kd, d.hidden], v_proj: [kd, d.hidden], o_proj: [d.hidden, qd],
    gate_proj: [d.intermediate, d.hidden], up_proj: [d.intermediate, d.hidden], down_proj: [d.hidden, d.intermediate] };
  const linears = {};
  for (const [role, [rows, cols]] of Object.entries(shapes)) {
    const bias = c.bias && ['q_proj', 'k_proj', 'v_proj'].includes(role) ? rand(rows, 0.1) : undefined;
    linears[role] = new BinaryLinear(rows, cols, rand(rows * cols), rand(rows, 0.05, 0.1), c.rank, rand(rows * c.rank, 0.05),
      rand(c.rank * cols, 0.05), bias);
  }
  const tables = ropeTables(Float32Array.from({ length: d.headDim / 2 }, (_, i) => 1 / 10000 ** (i / (d.headDim / 2))), c.seq);
  const site = (name) => new QuantSite(name, ternaryStages([9, 5]), 0.6, true);
  return new ReconBlock(d, {
    linears, inputNorm: rand(d.hidden, 0.2, 1), postNorm: rand(d.hidden, 0.2, 1),
    qNorm: c.qkNorm ? rand(d.headDim, 0.2, 1) : undefined, kNorm: c.qkNorm ? rand(d.headDim, 0.2, 1) : undefined,
    sites: { attn_in: c.linearSite('attn_in'), attn_out: c.linearSite('attn_out'), mlp_in: c.linearSite('mlp_in'), mlp_out: c.linearSite('mlp_out') },
    attention: c.attention(site),
    rotations: c.rotations(r),
  }, () => tables);
}

const settings = { iterations: 30, batch: 1, lrWeight: 1e-1, lrScale: 1e-2, lrAct: 1e-2, finalFraction: 0.5, handover: 0.5, evalWindows: 2, seed: 5 };
for (const [name, c] of Object.entries(CASES)) {
  const r = new Rng(23);
  const n = c.batch * c.seq * c.dims.hidden;
  const x = Float32Array.from({ length: n }, () => r.next() * 2 - 1);
  const y = Float32Array.from({ length: n }, () => r.next() * 2 - 1);
  for (const at of c.points) {
    const host = makeBlock(c);
    const dev = makeBlock(c);
    const rates = linearRates(host, settings);
    const hs = hostStepper(host, rates, jsGemm);
    const ds = await engine.reconstructionSteps(dev, rates, c.batch, c.seq);
    const lossDev = await ds.step(x, y, c.batch, at, 0.8);
    const lossHost = await hs.step(x, y, c.batch, at, 0.8);
    const tag = `${name} at stage ${at.stage}, lambda ${at.lambda}`;
    report(Math.abs(lossDev - lossHost) <= 1e-4 * lossHost, `${tag}: loss ${lossDev.toExponential(6)} (reference ${lossHost.toExponential(6)})`);
    const hSites = host.allSites();
    const dSites = dev.allSites();
    let gWorst = 0, pWorst = 0;
    hSites.forEach((s, i) => {
      const scale = Math.max(1e-12, ...hSites.map((t) => Math.abs(t.grad)));
      gWorst = Math.max(gWorst, Math.abs(dSites[i].grad - s.grad) / scale);
      for (let j = 0; j < s.p.length; j++) {
        if (Number.isNaN(s.p[j]) !== Number.isNaN(dSites[i].p[j])) pWorst = Infinity;
        else if (!Number.isNaN(s.p[j])) pWorst = Math.max(pWorst, Math.abs(dSites[i].p[j] - s.p[j]) / Math.abs(s.p[j]));
      }
    });
    report(gWorst < 2e-3, `${tag}: site parameter gradients, max diff / max |grad| ${gWorst.toExponential(2)}`);
    report(pWorst < 1e-4, `${tag}: alignment factors, max rel diff ${pWorst.toExponential(2)}`);
    let worst = 0, worstName = '', signs = 0;
    const linears = Object.entries(host.params.linears);
    for (let i = 0; i < linears.length; i++) {
      const [role, l] = linears[i];
      const devGrads = ds.readGradients(i);
      for (const [part, ref] of [['latent', l.gLatent], ['alpha', l.gAlpha], ['a', l.gA], ['b', l.gB]]) {
        if (ref.length === 0) continue;
        const d = relDiff(devGrads[part], ref);
        if (d > worst) worst = d, worstName = `${role}.${part}`;
        signs = Math.max(signs, signMismatch(devGrads[part], ref));
      }
    }
    report(worst < 2e-3, `${tag}: linear gradients, max rel diff ${worst.toExponential(2)} (${worstName})`);
    await ds.finish(true);
    // Adam's first step moves every entry by ±lr (|m̂/√v̂| = 1): an entry whose gradient is ~0 may move either way, so
    // count the entries that moved differently rather than the largest difference
    let moved = 0, total = 0;
    for (const [role, l] of Object.entries(host.params.linears)) {
      const dl = dev.params.linears[role];
      for (const [a, b] of [[dl.latent, l.latent], [dl.alpha, l.alpha], [dl.lrA, l.lrA], [dl.lrB, l.lrB]]) {
        let m = 0;
        for (const v of b) m = Math.max(m, Math.abs(v));
        for (let i = 0; i < b.length; i++) if (Math.abs(a[i] - b[i]) > 1e-4 * m) moved++;
        total += b.length;
      }
    }
    report(moved <= 0.01 * total, `${tag}: parameters after Adam: ${moved} of ${total} entries differ by more than 1e-4 of their tensor's max (gradient signs differing ${(100 * signs).toFixed(3)} %)`);
  }
  // a whole reconstruction
  const windows = 4;
  const data = {
    inputs: Float32Array.from({ length: windows * c.seq * c.dims.hidden }, () => r.next() * 2 - 1),
    targets: Float32Array.from({ length: windows * c.seq * c.dims.hidden }, () => r.next() * 2 - 1),
    windows, seq: c.seq, hidden: c.dims.hidden,
  };
  const run = { ...settings, iterations: c.iterations ?? settings.iterations };
  const runHost = await reconstructBlock(makeBlock(c), data, run, jsGemm);
  const runDev = await reconstructBlock(makeBlock(c), data, run, jsGemm, undefined, engine.reconstructionSteps);
  report(Math.abs(runDev.lossBefore - runHost.lossBefore) <= 1e-5 * runHost.lossBefore,
    `${name} reconstructBlock: loss before ${runDev.lossBefore.toExponential(5)} (reference ${runHost.lossBefore.toExponential(5)})`);
  report(Math.abs(runDev.lossAfter - runHost.lossAfter) <= 0.05 * runHost.lossAfter,
    `${name} reconstructBlock, ${run.iterations} steps: loss after ${runDev.lossAfter.toExponential(5)} (reference ${runHost.lossAfter.toExponential(5)})`);
}

if (process.argv.includes('--time')) {
  const c = {
    dims: { hidden: 4096, intermediate: 11008, numHeads: 32, numKvHeads: 32, headDim: 128, normEps: 1e-5, slidingWindow: undefined },
    batch: 1, seq: 2048, rank: 0, qkNorm: false, bias: false,
    linearSite: (name) => new QuantSite(name, ternaryStages([9, 7, 5]), 0.7, true),
    attention: (site) => ({ query: site('query'), key: site('key'), value: site('value'), probs: site('probs'), probsRow: 'unmasked' }),
    rotations: () => ({}),
  };
  const t0 = performance.now();
  const block = makeBlock(c);
  const t1 = performance.now();
  const ds = await engine.reconstructionSteps(block, linearRates(block, settings), 1, c.seq);
  const t2 = performance.now();
  const r = new Rng(1);
  const n = c.seq * c.dims.hidden;
  const x = Float32Array.from({ length: n }, () => r.next() * 2 - 1);
  const y = Float32Array.from({ length: n }, () => r.next() * 2 - 1);
  const points = [{ stage: 1, lambda: 0.5 }, { stage: 2, lambda: 1 }, { stage: 4, lambda: 0.5 }, { stage: 4, lambda: 1 }];
  await ds.step(x, y, 1, points[0], 1);
  const steps = 8;
  const t3 = performance.now();
  for (let i = 0; i < steps; i++) await ds.step(x, y, 1, points[i % points.length], 1);
  const t4 = performance.now();
  await ds.sumSquares(x, y, 1);
  const t5 = performance.now();
  await ds.finish(true);
  const t6 = performance.now();
  const perStep = (t4 - t3) / steps;
  console.log(`7B-shape block (202 M weights, BWTA sites, 1 x 2048 tokens): random block ${((t1 - t0) / 1000).toFixed(1)} s, `
    + `trainer upload ${((t2 - t1) / 1000).toFixed(2)} s, step ${perStep.toFixed(1)} ms (mean of ${steps}), loss forward ${(t5 - t4).toFixed(1)} ms, `
    + `read back ${((t6 - t5) / 1000).toFixed(2)} s; 200 steps + 4 loss forwards + upload/read: ${((200 * perStep + 4 * (t5 - t4) + (t2 - t1) + (t6 - t5)) / 1000).toFixed(1)} s`);
}
await engine.close();
await model.checkpoint.close();
console.log(failed ? 'FAIL' : 'PASS');
process.exit(failed ? 1 : 0);
