/**
 * The reconstruction's GEMMs on the block engine's device (src/pipeline/reconstruct-gemm.ts createDeviceGemm over the
 * runtime's matmul_t, native/runtime/model.cpp): every layout (nt, nn, tn, and both transposed) equals a float64
 * product to float32 rounding on the CPU backend (the host-rearranged path) and, where a GPU is present, on CUDA
 * (cuBLAS with the transposition flags); the routing sends large float32 products to the device and the rest to
 * the host; and a whole decoder block's forward and backward through it equals the one through the JS GEMMs.
 */
import { describe, expect, it } from 'vitest';
import { Rng } from '../../../src/linalg/random.js';
import { openModelDir } from '../../../src/model/model-dir.js';
import { DEFAULT_MODEL_DIR } from '../../../src/package-paths.js';
import { createRuntimeBlockEngine, type BlockEngine } from '../../../src/runtime/block-runner.js';
import { runtimeAvailable } from '../../../src/eval/backend.js';
import { createDeviceGemm, type ClosableGemm, type DeviceMatmulT } from '../../../src/pipeline/reconstruct-gemm.js';
import { jsGemm, type Gemm } from '../../../src/quant/reconstruct/gemm.js';
import { BinaryLinear } from '../../../src/quant/reconstruct/binary-linear.js';
import { ReconBlock, type BlockDims, type SiteName } from '../../../src/quant/reconstruct/block.js';
import { QuantSite } from '../../../src/quant/reconstruct/quant-site.js';
import { ropeTables } from '../../../src/native/rope.js';
import type { LinearRole } from '../../../src/quant/recipe.js';
import { cudaAvailable } from '../../runtime/cuda-probe.js';
import { float64Product, relDiff } from '../../helpers/reference-math.js';

function random(n: number, rng: Rng): Float32Array {
  return Float32Array.from({ length: n }, () => rng.next() * 2 - 1);
}

const LAYOUTS = [[false, true], [false, false], [true, false], [true, true]] as const;

async function checkLayouts(engine: BlockEngine): Promise<void> {
  expect(engine.matmulT).toBeDefined();
  const rng = new Rng(5);
  const [m, k, n] = [37, 53, 29];
  for (const [ta, tb] of LAYOUTS) {
    const a = random(m * k, rng);
    const b = random(k * n, rng);
    const got = await engine.matmulT!(a, ta, b, tb, m, k, n);
    expect(got).toHaveLength(m * n);
    expect(relDiff(got, float64Product(a, b, m, k, n, ta, tb)), `trans ${ta} ${tb}`).toBeLessThan(1e-5);
  }
  // degenerate sizes: nothing to multiply, an all-zero result
  expect(await engine.matmulT!(new Float32Array(0), false, random(6, rng), false, 3, 0, 2)).toEqual(new Float32Array(6));
  await expect(engine.matmulT!(random(5, rng), false, random(6, rng), false, 3, 2, 3)).rejects.toThrow(/operands are smaller than m x k, k x n and m x n/);
}

const dims: BlockDims = { hidden: 24, intermediate: 40, numHeads: 4, numKvHeads: 2, headDim: 8, normEps: 1e-5, slidingWindow: undefined };
const shapes: Record<LinearRole, [number, number]> = {
  q_proj: [32, 24], k_proj: [16, 24], v_proj: [16, 24], o_proj: [24, 32], gate_proj: [40, 24], up_proj: [40, 24], down_proj: [24, 40],
};

function makeBlock(): ReconBlock<Float32Array> {
  const rng = new Rng(9);
  const linears = {} as Record<LinearRole, BinaryLinear<Float32Array>>;
  for (const [role, [rows, cols]] of Object.entries(shapes) as [LinearRole, [number, number]][]) {
    linears[role] = new BinaryLinear(rows, cols, random(rows * cols, rng), random(rows, rng).map((v) => Math.abs(v) * 0.3 + 0.1),
      2, random(rows * 2, rng).map((v) => v * 0.1), random(2 * cols, rng).map((v) => v * 0.1), undefined);
  }
  const tables = ropeTables(Float32Array.from([1, 0.3, 0.1, 0.03]), 16);
  // float sites: the block is smooth, so GEMMs that round differently cannot flip a quantizer code or a clamp
  const site = (n: string): QuantSite => new QuantSite(n, [{ kind: 'none' }], 0, false);
  const names: SiteName[] = ['attn_in', 'attn_out', 'mlp_in', 'mlp_out'];
  return new ReconBlock(dims, {
    linears, inputNorm: random(24, rng).map((v) => v * 0.2 + 1), postNorm: random(24, rng).map((v) => v * 0.2 + 1),
    qNorm: random(8, rng).map((v) => v * 0.2 + 1), kNorm: random(8, rng).map((v) => v * 0.2 + 1),
    sites: Object.fromEntries(names.map((n) => [n, site(n)])) as Record<SiteName, QuantSite>,
    attention: { query: site('query'), key: site('key'), value: site('value'), probs: site('probs'), probsRow: undefined },
    rotations: {},
  }, () => tables);
}

/** out and ∂L/∂h, α and latent gradients of every linear for L = Σ out ⊙ R. */
async function forwardBackward(gemm: Gemm): Promise<Float32Array[]> {
  const block = makeBlock();
  const rng = new Rng(4);
  const batch = 2, seq = 16;
  const h = random(batch * seq * dims.hidden, rng);
  const R = random(h.length, rng);
  const at = { stage: 0, lambda: 1 };
  const { out, cache } = await block.forward(h, batch, seq, at, gemm);
  for (const l of Object.values(block.params.linears)) l.zeroGrad();
  const dh = await block.backward(R, cache, gemm);
  return [out, dh, ...Object.values(block.params.linears).flatMap((l) => [l.gAlpha, l.gLatent, l.gA, l.gB])];
}

async function checkBlock(matmulT: DeviceMatmulT): Promise<void> {
  const layouts = new Set<string>();
  const counting: DeviceMatmulT = (a, ta, b, tb, m, k, n) => {
    layouts.add(`${ta}${tb}`);
    return matmulT(a, ta, b, tb, m, k, n);
  };
  const noHost = new Proxy({} as ClosableGemm, { get: () => () => { throw new Error('host GEMM used'); } });
  const viaDevice = await forwardBackward(createDeviceGemm(counting, noHost, 0));
  const viaJs = await forwardBackward(jsGemm);
  // nt (forward, scores, ∂P̂), nn (∂x, P̂V̂, ∂Q̂) and tn (∂W, ∂V̂, ∂K̂) all went to the device
  expect([...layouts].sort()).toEqual(['falsefalse', 'falsetrue', 'truefalse']);
  viaJs.forEach((ref, i) => expect(relDiff(viaDevice[i]!, ref), `tensor ${i}`).toBeLessThan(1e-4));
}

describe('reconstruction GEMMs on the block engine\'s device', () => {
  it('createDeviceGemm sends float32 products of at least minMacs to the device, the rest to the host', async () => {
    const calls: string[] = [];
    const device: DeviceMatmulT = (_a, ta, _b, tb, m, _k, n) => {
      calls.push(`device ${ta} ${tb}`);
      return new Float32Array(m * n);
    };
    const host: ClosableGemm = {
      nt: async (a, _b, m, _k, n) => { calls.push('host nt'); return jsGemm.nt(a, new Float64Array(n * _k), m, _k, n); },
      nn: async (a, _b, m, k, n) => { calls.push('host nn'); return jsGemm.nn(a, new Float64Array(k * n), m, k, n); },
      tn: async (a, _b, m, k, n) => { calls.push('host tn'); return jsGemm.tn(a, new Float64Array(k * n), m, k, n); },
      close: async () => { calls.push('close'); },
    };
    const g = createDeviceGemm(device, host, 1000);
    const f = (n: number): Float32Array => new Float32Array(n);
    await g.nt(f(100), f(100), 10, 10, 10);
    await g.nn(f(100), f(100), 10, 10, 10);
    await g.tn(f(100), f(100), 10, 10, 10);
    await g.nt(f(90), f(90), 10, 9, 10); // 900 < 1000
    await g.nn(new Float64Array(100), f(100), 10, 10, 10); // float64 operands (finite-difference tests)
    await g.close();
    expect(calls).toEqual(['device false true', 'device false false', 'device true false', 'host nt', 'host nn', 'close']);
  });

  it.runIf(runtimeAvailable())('CPU backend: every layout equals a float64 product; a block\'s forward and backward equal the JS GEMMs\'', async () => {
    const model = await openModelDir(DEFAULT_MODEL_DIR);
    const engine = await createRuntimeBlockEngine(model, { device: 'cpu' });
    try {
      await checkLayouts(engine);
      await checkBlock(engine.matmulT!);
    } finally {
      await engine.close();
      await model.checkpoint.close();
    }
  });

  it.runIf(runtimeAvailable() && cudaAvailable())('CUDA (cuBLAS with transposition flags): the same', async () => {
    const model = await openModelDir(DEFAULT_MODEL_DIR);
    const engine = await createRuntimeBlockEngine(model, { device: 'cuda' });
    try {
      expect(engine.device).toMatch(/^cuda/);
      await checkLayouts(engine);
      await checkBlock(engine.matmulT!);
    } finally {
      await engine.close();
      await model.checkpoint.close();
    }
  });
});
