/**
 * The host stepper (src/quant/reconstruct/train.ts): one step moves the block's tensors; finish(false) puts back the
 * start, finish(true) keeps the trained values — what reconstructBlock relies on to refuse a worse student.
 */
import { describe, expect, it } from 'vitest';
import { Rng } from '../../../src/linalg/random.js';
import { BinaryLinear } from '../../../src/quant/reconstruct/binary-linear.js';
import { ReconBlock } from '../../../src/quant/reconstruct/block.js';
import { jsGemm } from '../../../src/quant/reconstruct/gemm.js';
import { QuantSite } from '../../../src/quant/reconstruct/quant-site.js';
import { hostStepper, linearRates } from '../../../src/quant/reconstruct/train.js';

function block(rng: Rng): ReconBlock<Float32Array> {
  const rand = (n: number, s = 1, o = 0) => Float32Array.from({ length: n }, () => (rng.next() * 2 - 1) * s + o);
  const shapes: Record<string, [number, number]> = {
    q_proj: [8, 8], k_proj: [4, 8], v_proj: [4, 8], o_proj: [8, 8], gate_proj: [12, 8], up_proj: [12, 8], down_proj: [8, 12],
  };
  const linears = Object.fromEntries(Object.entries(shapes).map(([role, [rows, cols]]) =>
    [role, new BinaryLinear(rows, cols, rand(rows * cols), rand(rows, 0.05, 0.1), 2, rand(rows * 2, 0.05), rand(2 * cols, 0.05), undefined)]));
  const site = (name: string) => new QuantSite(name, [{ kind: 'int', bits: 4 }], 0.9, false);
  return new ReconBlock({ hidden: 8, intermediate: 12, numHeads: 2, numKvHeads: 1, headDim: 4, normEps: 1e-6, slidingWindow: undefined }, {
    linears: linears as never, inputNorm: rand(8, 0.1, 1), postNorm: rand(8, 0.1, 1),
    sites: { attn_in: site('attn_in'), attn_out: site('attn_out'), mlp_in: site('mlp_in'), mlp_out: site('mlp_out') },
    attention: undefined, rotations: {},
  }, () => undefined);
}

const settings = { iterations: 1, batch: 1, lrWeight: 0.1, lrScale: 0.01, lrAct: 0.01, finalFraction: 0.5, handover: 0.5, evalWindows: 1, seed: 1 };

describe('host stepper', () => {
  for (const keep of [false, true]) {
    it(`finish(${keep}) ${keep ? 'keeps the trained tensors' : 'puts the start back'}`, async () => {
      const rng = new Rng(4);
      const b = block(rng);
      const tensors = Object.values(b.params.linears).flatMap((l) => [l.latent, l.alpha, l.lrA, l.lrB]);
      const start = tensors.map((t) => Float32Array.from(t));
      const stepper = hostStepper(b, linearRates(b, settings), jsGemm);
      const x = Float32Array.from({ length: 6 * 8 }, () => rng.next() * 2 - 1);
      const y = Float32Array.from({ length: 6 * 8 }, () => rng.next() * 2 - 1);
      await stepper.step(x, y, 1, { stage: 0, lambda: 1 }, 1);
      const trained = tensors.map((t) => Float32Array.from(t));
      expect(trained.some((t, i) => t.some((v, j) => v !== start[i]![j]))).toBe(true);
      await stepper.finish(keep);
      tensors.forEach((t, i) => expect(Array.from(t)).toEqual(Array.from(keep ? trained[i]! : start[i]!)));
    });
  }
});
