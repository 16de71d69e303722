/**
 * The quantize pipeline runs a phase's groups at once (src/pipeline/quantize.ts): their device products, rotations
 * and OKT are asynchronous addon calls (native/src/addon_runtime.cpp: one backend thread, one backend lock) while
 * the JS thread works on another group. The results must be those of one group after the other, bit for bit:
 *  - BWLA groups quantized concurrently on a CPU runtime engine (its rotations, OKT and products, the native
 *    weight passes, quantizers and QR, onnxruntime's small products) equal the same groups quantized in turn;
 *  - many products in flight at once each equal the same product made alone, and an argument error is a
 *    rejection naming it;
 *  - a worker thread that loads the addon gets its calls settled on its own thread (one backend thread serves
 *    every environment).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { quantizeGroup, type GroupNumerics, type GroupSettings, type QuantizedGroup } from '../../src/quant/layer-quant.js';
import { Rng } from '../../src/linalg/index.js';
import { runtimeAvailable } from '../../src/eval/backend.js';
import { openModelDir } from '../../src/model/model-dir.js';
import { DEFAULT_MODEL_DIR } from '../../src/package-paths.js';
import { createRuntimeBlockEngine } from '../../src/runtime/block-runner.js';
import { deviceMatmul } from '../../src/pipeline/device-matmul.js';
import { createOrtEngine } from '../../src/pipeline/ort-engine.js';
import { nativeWeightPasses } from '../../src/native/weight-passes.js';
import { nativeQuantizeRows } from '../../src/native/act-quant.js';
import { nativeQr } from '../../src/native/qr.js';

function gaussian(rng: Rng, n: number, scale: number): Float32Array {
  return Float32Array.from({ length: n }, () => scale * rng.normal());
}

const settings: GroupSettings = {
  method: 'bwla', aBits: 6, rank: 4, oktIterations: 4, pspIterations: 2, pspTauRatio: 0.25, seed: 1,
  oktInit: 'random', weightedPsp: false, dataAwareScale: true, compensationDamping: 0.01,
};

function fingerprint(g: QuantizedGroup): unknown {
  return {
    quantizer: g.quantizer, outputRelError: g.outputRelError, r1: g.rotation?.r1, r2: g.rotation?.r2,
    linears: g.linears.map((l) => ({ simulated: l.simulated, signs: l.signs, scales: l.scales, lrA: l.lrA, lrB: l.lrB })),
  };
}

describe('concurrent groups', () => {
  it.runIf(runtimeAvailable())('BWLA groups quantized at once on a CPU engine equal the same groups one after the other', async () => {
    const model = await openModelDir(DEFAULT_MODEL_DIR);
    const engine = await createRuntimeBlockEngine(model, { device: 'cpu' });
    const ort = createOrtEngine(1);
    try {
      const rng = new Rng(7);
      const tokens = 160;
      // three groups of different widths (K = 128 with a Gram, 192, 96), two linears in the first
      const groups = [
        { cols: 128, rows: [96, 64] }, { cols: 192, rows: [80] }, { cols: 96, rows: [120] },
      ].map((g, gi) => {
        const x = gaussian(rng, tokens * g.cols, 1);
        for (let t = 0; t < tokens; t++) x[t * g.cols + 3] = 6 * x[t * g.cols + 3]!; // an outlier channel
        const members = g.rows.map((rows, i) => ({ role: (i === 0 ? 'q_proj' : 'k_proj') as 'q_proj' | 'k_proj', weight: gaussian(rng, rows * g.cols, 0.05), rows }));
        const gram = new Float32Array(g.cols * g.cols);
        for (let t = 0; t < tokens; t++) for (let i = 0; i < g.cols; i++) for (let j = 0; j < g.cols; j++) gram[i * g.cols + j] += x[t * g.cols + i]! * x[t * g.cols + j]!;
        return { cols: g.cols, x, members, gram: { data: gram, tokens }, seed: 100 + 31 * gi };
      });
      // the pipeline's numerics on a CPU engine: its products as the device's (every size, so the addon's
      // asynchronous calls are exercised), its rotations and OKT, the CPU kernels' passes
      const passes = nativeWeightPasses();
      const quantizeRows = nativeQuantizeRows();
      const qr = nativeQr();
      const numerics: GroupNumerics = {
        matmul: deviceMatmul({ matmulT: engine.matmulT!, createArray: engine.createArray! }, ort.matmul, 1 << 12),
        rotateRows: engine.rotateRows!,
        ...(engine.learnOkt === undefined ? {} : { okt: engine.learnOkt }),
        ...(passes === undefined ? {} : { weightPasses: passes }),
        ...(quantizeRows === undefined ? {} : { quantizeRows }),
        ...(qr === undefined ? {} : { qr }),
      };
      const one = (g: (typeof groups)[number]): Promise<QuantizedGroup> =>
        quantizeGroup('attn_in', g.members, g.cols, g.x, tokens, settings, g.seed, numerics, g.gram);
      const inTurn: QuantizedGroup[] = [];
      for (const g of groups) inTurn.push(await one(g));
      const atOnce = await Promise.all(groups.map(one));
      expect(engine.learnOkt).toBeDefined();
      for (let i = 0; i < groups.length; i++) expect(fingerprint(atOnce[i]!), `group ${i}`).toEqual(fingerprint(inTurn[i]!));
      expect(inTurn[0]!.rotation).toBeDefined();
    } finally {
      await ort.close();
      await engine.close();
      await model.checkpoint.close();
    }
  }, 120_000);

  it.runIf(runtimeAvailable())('a worker thread\'s calls settle on that thread while the main thread\'s are in flight', async () => {
    // the same 40 products on each thread (the worker runs the built dist/), all in flight at once
    const products = async (engine: { matmulT?: (a: Float32Array, ta: boolean, b: Float32Array, tb: boolean, m: number, k: number, n: number) => Promise<Float32Array> }): Promise<number[]> => {
      const ps: Promise<Float32Array>[] = [];
      for (let i = 0; i < 40; i++) ps.push(engine.matmulT!(new Float32Array(48 * 40).fill(1), false, new Float32Array(40 * 24).fill(i), false, 48, 40, 24));
      return (await Promise.all(ps)).map((c) => c[0]! + c[c.length - 1]!);
    };
    const dir = mkdtempSync(join(tmpdir(), 'bwq-worker-'));
    const script = join(dir, 'worker.mjs');
    const url = (p: string): string => pathToFileURL(resolve(p)).href;
    writeFileSync(script, `import { parentPort } from 'node:worker_threads';
      const { openModelDir } = await import(${JSON.stringify(url('dist/model/model-dir.js'))});
      const { createRuntimeBlockEngine } = await import(${JSON.stringify(url('dist/runtime/block-runner.js'))});
      const model = await openModelDir(${JSON.stringify(resolve(DEFAULT_MODEL_DIR))});
      const engine = await createRuntimeBlockEngine(model, { device: 'cpu' });
      const ps = [];
      for (let i = 0; i < 40; i++) ps.push(engine.matmulT(new Float32Array(48 * 40).fill(1), false, new Float32Array(40 * 24).fill(i), false, 48, 40, 24));
      parentPort.postMessage((await Promise.all(ps)).map((c) => c[0] + c[c.length - 1]));
      await engine.close();
      await model.checkpoint.close();
    `);
    const model = await openModelDir(DEFAULT_MODEL_DIR);
    const engine = await createRuntimeBlockEngine(model, { device: 'cpu' });
    const worker = new Worker(script);
    try {
      const fromWorker = new Promise((ok, fail) => { worker.once('message', ok); worker.once('error', fail); });
      const [mine, theirs] = await Promise.all([products(engine), fromWorker]);
      const want = Array.from({ length: 40 }, (_, i) => 2 * 40 * i);
      expect(mine).toEqual(want);
      expect(theirs).toEqual(want);
    } finally {
      await worker.terminate();
      await engine.close();
      await model.checkpoint.close();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);

  it.runIf(runtimeAvailable())('products in flight at once equal each product alone; argument errors reject', async () => {
    const model = await openModelDir(DEFAULT_MODEL_DIR);
    const engine = await createRuntimeBlockEngine(model, { device: 'cpu' });
    try {
      const rng = new Rng(9);
      const shapes = Array.from({ length: 24 }, (_, i) => [17 + i, 33 + 2 * i, 9 + (i % 5)] as const);
      const operands = shapes.map(([m, k, n]) => ({ a: gaussian(rng, m * k, 1), b: gaussian(rng, k * n, 1), m, k, n }));
      const alone: Float32Array[] = [];
      for (const o of operands) alone.push(await engine.matmulT!(o.a, false, o.b, false, o.m, o.k, o.n));
      const together = await Promise.all(operands.map((o) => engine.matmulT!(o.a, false, o.b, false, o.m, o.k, o.n)));
      for (let i = 0; i < operands.length; i++) expect(together[i]).toEqual(alone[i]);
      const bad = engine.matmulT!(new Float32Array(2), false, new Float32Array(4), false, 2, 2, 2);
      await expect(bad).rejects.toThrow(/operands are smaller than m x k/);
    } finally {
      await engine.close();
      await model.checkpoint.close();
    }
  }, 60_000);
});
