/**
 * The whole block's backward against float64 central differences (float operand sites, so the block
 * is smooth in its input, scales and low-rank factors; BWLA rotations, biases, GQA and RoPE on).
 */
import { describe, expect, it } from 'vitest';
import { Rng } from '../../../src/linalg/random.js';
import { ropeTables } from '../../../src/native/rope.js';
import type { LinearRole } from '../../../src/quant/recipe.js';
import { BinaryLinear } from '../../../src/quant/reconstruct/binary-linear.js';
import { ReconBlock, type BlockDims, type SiteName } from '../../../src/quant/reconstruct/block.js';
import { jsGemm } from '../../../src/quant/reconstruct/gemm.js';
import { QuantSite } from '../../../src/quant/reconstruct/quant-site.js';
import { dot, numericGrad, pick, randn, relError } from './helpers.js';

const dims: BlockDims = { hidden: 6, intermediate: 8, numHeads: 2, numKvHeads: 1, headDim: 4, normEps: 1e-5, slidingWindow: undefined };
const batch = 2;
const seq = 5;
const shapes: Record<LinearRole, [number, number]> = {
  q_proj: [8, 6], k_proj: [4, 6], v_proj: [4, 6], o_proj: [6, 8], gate_proj: [8, 6], up_proj: [8, 6], down_proj: [6, 8],
};

function makeBlock(rng: Rng, sites: (name: string) => QuantSite, rank: number, rotated: boolean, biases: boolean, qkNorm = false): ReconBlock<Float64Array> {
  const linears = {} as Record<LinearRole, BinaryLinear<Float64Array>>;
  for (const [role, [rows, cols]] of Object.entries(shapes) as [LinearRole, [number, number]][]) {
    const bias = biases && (role === 'q_proj' || role === 'v_proj') ? randn(rng, rows, 0.1) : undefined;
    linears[role] = new BinaryLinear(rows, cols, randn(rng, rows * cols), randn(rng, rows, 0.3).map((v) => Math.abs(v) + 0.2) as Float64Array,
      rank, randn(rng, rows * rank, 0.2), randn(rng, rank * cols, 0.2), bias);
  }
  const rot = (a: number, b: number) => ({ r1: randn(rng, a * a, 0.5), a, r2: randn(rng, b * b, 0.5), b });
  const tables = ropeTables(Float32Array.from([1, 0.1]), seq);
  const names: SiteName[] = ['attn_in', 'attn_out', 'mlp_in', 'mlp_out'];
  return new ReconBlock(dims, {
    linears,
    inputNorm: randn(rng, 6, 0.3).map((v) => v + 1) as Float64Array,
    postNorm: randn(rng, 6, 0.3).map((v) => v + 1) as Float64Array,
    qNorm: qkNorm ? randn(rng, dims.headDim, 0.3).map((v) => v + 1) as Float64Array : undefined,
    kNorm: qkNorm ? randn(rng, dims.headDim, 0.3).map((v) => v + 1) as Float64Array : undefined,
    sites: Object.fromEntries(names.map((n) => [n, sites(n)])) as Record<SiteName, QuantSite>,
    attention: { query: sites('query'), key: sites('key'), value: sites('value'), probs: sites('probs') },
    rotations: rotated ? { attn_in: rot(2, 3), attn_out: rot(2, 4), mlp_in: rot(2, 3), mlp_out: rot(2, 4) } : {},
  }, () => tables);
}

describe('decoder block backward = finite differences (float64)', () => {
  it.each([
    ['Llama / Qwen2 (biases, BWLA rotations)', 11, false],
    ['Qwen3 (q_norm / k_norm, BWLA rotations)', 13, true],
  ] as const)('%s: input, weight scales and low-rank factors of every linear', async (_name, seed, qkNorm) => {
    const rng = new Rng(seed);
    const block = makeBlock(rng, (n) => new QuantSite(n, [{ kind: 'none' }], 0, false), 2, true, !qkNorm, qkNorm);
    const h = randn(rng, batch * seq * dims.hidden);
    const R = randn(rng, h.length);
    const at = { stage: 0, lambda: 1 };
    const loss = async (): Promise<number> => {
      for (const l of Object.values(block.params.linears)) l.invalidate();
      return dot((await block.forward(h, batch, seq, at, jsGemm)).out, R);
    };
    const { cache } = await block.forward(h, batch, seq, at, jsGemm);
    for (const l of Object.values(block.params.linears)) l.zeroGrad();
    const dh = await block.backward(R, cache, jsGemm);
    const idx = pick(rng, h.length, 20);
    expect(relError(idx.map((i) => dh[i]!), await numericGrad(h, idx, loss))).toBeLessThan(1e-6);
    for (const [role, l] of Object.entries(block.params.linears)) {
      const a = Array.from({ length: l.rows }, (_, i) => i);
      expect(relError(a.map((i) => l.gAlpha[i]!), await numericGrad(l.alpha, a, loss)), `${role} α`).toBeLessThan(1e-6);
      const ia = pick(rng, l.lrA.length, 6);
      expect(relError(ia.map((i) => l.gA[i]!), await numericGrad(l.lrA, ia, loss)), `${role} A`).toBeLessThan(1e-6);
      const ib = pick(rng, l.lrB.length, 6);
      expect(relError(ib.map((i) => l.gB[i]!), await numericGrad(l.lrB, ib, loss)), `${role} B`).toBeLessThan(1e-6);
    }
  });
});
