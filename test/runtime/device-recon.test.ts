/**
 * The device reconstruction stepper's host side (src/runtime/device-recon.ts) with a stand-in addon: what it sends
 * (block dims, linears in BLOCK_LINEAR_ROLES order with their rates, rotations, the sites' points at a stage point
 * with hand-over and alignment) and what it does with the answer (site gradients and alignment factors written to
 * the sites, parameters read back into the block's arrays, the trainer freed). The CUDA step itself is compared
 * with the TypeScript reference on the GPU machine (test/quant/reconstruct/gpu-check-device-step.mjs); the last test
 * runs the real addon on the CPU backend (argument checks, and the refusal of a backend without a device trainer).
 */
import { describe, expect, it } from 'vitest';
import { BinaryLinear } from '../../src/quant/reconstruct/binary-linear.js';
import { ReconBlock } from '../../src/quant/reconstruct/block.js';
import { QuantSite } from '../../src/quant/reconstruct/quant-site.js';
import { ternaryStages } from '../../src/quant/reconstruct/schedule.js';
import { deviceRecon, type ReconAddon, type RuntimeTrainerHandle } from '../../src/runtime/device-recon.js';
import { loadAddon } from '../../src/native/loader.js';
import { loadBenchConfig } from '../../src/bench/e2e.js';
import { loadRuntimeModelFrom, type RuntimeAddon, type RuntimeModelHandle } from '../../src/runtime/load.js';
import { randomModelSource } from '../../src/runtime/random-model.js';

const DIMS = { hidden: 8, intermediate: 12, numHeads: 2, numKvHeads: 1, headDim: 4, normEps: 1e-6, slidingWindow: 6 };

function block(): ReconBlock<Float32Array> {
  const shapes: Record<string, [number, number]> = {
    q_proj: [8, 8], k_proj: [4, 8], v_proj: [4, 8], o_proj: [8, 8], gate_proj: [12, 8], up_proj: [12, 8], down_proj: [8, 12],
  };
  const linears = Object.fromEntries(Object.entries(shapes).map(([role, [rows, cols]], i) =>
    [role, new BinaryLinear(rows, cols, new Float32Array(rows * cols).fill(i + 1), new Float32Array(rows).fill(0.5), role === 'o_proj' ? 2 : 0,
      new Float32Array(role === 'o_proj' ? rows * 2 : 0), new Float32Array(role === 'o_proj' ? 2 * cols : 0),
      role === 'q_proj' ? new Float32Array(rows).fill(0.25) : undefined)]));
  const ternary = (name: string) => new QuantSite(name, ternaryStages([9, 5]), 0.7, true);
  const r1 = Float32Array.from([0, 1, 1, 0]);
  const r2 = Float32Array.from([1, 0, 0, 1]);
  return new ReconBlock(DIMS, {
    linears: linears as never, inputNorm: new Float32Array(8).fill(1), postNorm: new Float32Array(8).fill(1),
    sites: { attn_in: ternary('attn_in'), attn_out: ternary('attn_out'), mlp_in: new QuantSite('mlp_in', [{ kind: 'int', bits: 6 }], 0.9, false), mlp_out: ternary('mlp_out') },
    attention: { query: ternary('query'), key: ternary('key'), value: ternary('value'), probs: ternary('probs'), probsRow: 'unmasked' },
    rotations: { mlp_in: { r1, a: 2, r2, b: 2 } as never },
  }, () => undefined);
}

interface Calls {
  create?: { dims: Float64Array; linearDims: Int32Array; rates: Float64Array; rotationDims: Int32Array; rotations: unknown[]; linears: (Float32Array | null)[][] };
  steps: { sites: Float64Array; lrScale: number; batch: number }[];
  reads: number[];
  freed: boolean;
}

function fakeAddon(calls: Calls): ReconAddon {
  const handle = {} as RuntimeTrainerHandle;
  return {
    rtReconCreate(_model, dims, _fixed, linears, linearDims, rates, rotations, rotationDims) {
      calls.create = { dims, linearDims, rates, rotationDims, rotations, linears };
      return handle;
    },
    rtReconStep(_t, _x, _y, batch, sites, lrScale) {
      calls.steps.push({ sites: Float64Array.from(sites), lrScale, batch });
      const out = new Float64Array(25);
      out[0] = 0.125;
      for (let s = 0; s < 8; s++) {
        out[1 + s] = s + 0.5;
        out[9 + s] = 2 + s;
        out[17 + s] = 3 + s;
      }
      return out;
    },
    rtReconLoss: () => 4,
    rtReconRead(_t, linear, what, latent, alpha) {
      expect(what).toBe(0);
      calls.reads.push(linear);
      latent.fill(-linear);
      alpha.fill(10 + linear);
    },
    rtFree() {
      calls.freed = true;
    },
  };
}

describe('device reconstruction stepper (host side)', () => {
  it('sends the block, the rates, the rotations and each site\'s point; applies the gradients and factors it gets back', async () => {
    const calls: Calls = { steps: [], reads: [], freed: false };
    const b = block();
    const rates = Array.from({ length: 7 }, (_, i) => ({ latent: i, alpha: i + 0.1, a: i + 0.2, b: i + 0.3 }));
    const stepper = await deviceRecon(fakeAddon(calls), {} as RuntimeModelHandle)(b, rates, 3, 10);
    const c = calls.create!;
    // sliding window 6 < seq 10: applied; no RoPE; probs rows 'unmasked'; batch 3; seq 10
    expect(Array.from(c.dims)).toEqual([8, 12, 2, 1, 4, 1e-6, 6, 0, 1, 3, 10]);
    expect(Array.from(c.linearDims)).toEqual([8, 8, 0, 4, 8, 0, 4, 8, 0, 8, 8, 2, 12, 8, 0, 12, 8, 0, 8, 12, 0]);
    expect(Array.from(c.rates.subarray(12, 16))).toEqual([3, 3.1, 3.2, 3.3]);
    expect(Array.from(c.rotationDims)).toEqual([0, 0, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0]);
    expect(c.rotations.map((r) => r === null)).toEqual([true, true, false, true]);
    expect(c.linears[0]![4]).not.toBeNull(); // q_proj's bias
    expect(c.linears[3]![2]).not.toBeNull(); // o_proj's low-rank A (rank 2)
    expect(c.linears[1]![2]).toBeNull();

    // stage 2 (levels 5) handing over from stage 1 (levels 9), λ = 0.25
    const x = new Float32Array(3 * 10 * 8);
    const loss = await stepper.step(x, x, 3, { stage: 2, lambda: 0.25 }, 0.5);
    expect(loss).toBe(0.125);
    const sent = calls.steps[0]!;
    expect(sent.lrScale).toBe(0.5);
    const site = (i: number) => Array.from(sent.sites.subarray(13 * i, 13 * i + 13));
    // present, levels 5, blend, levels 9, λ, t, align, last = ternary, p_cur and p_prev not yet known (NaN)
    expect(site(0)).toEqual([1, 3, 5, 1, 3, 9, 0.25, 0.7, 1, 2, 0, Number.NaN, Number.NaN]);
    // mlp_in: one int6 stage, always stage 0 with λ = 1, no alignment
    expect(site(2)).toEqual([1, 1, 6, 0, 0, 0, 1, 0.9, 0, 1, 6, Number.NaN, Number.NaN]);
    const sites = b.allSites();
    expect(sites.map((s) => s.grad)).toEqual([0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5]);
    expect(sites[0]!.p[2]).toBe(2);
    expect(sites[0]!.p[1]).toBe(3);
    expect(Number.isNaN(sites[2]!.p[0]!)).toBe(true); // no alignment: untouched

    // the next step sends the factors it now knows; the final point: ternary, no hand-over
    await stepper.step(x, x, 3, { stage: 2, lambda: 1 }, 1);
    expect(Array.from(calls.steps[1]!.sites.subarray(0, 13))).toEqual([1, 3, 5, 0, 0, 0, 1, 0.7, 1, 2, 0, 2, Number.NaN]);
    expect(await stepper.sumSquares(x, x, 3)).toBe(4);

    await stepper.finish(true);
    expect(calls.reads).toEqual([0, 1, 2, 3, 4, 5, 6]);
    expect(b.params.linears.up_proj.latent[0]).toBe(-5);
    expect(b.params.linears.down_proj.alpha[0]).toBe(16);
    expect(calls.freed).toBe(true);
  });

  it('a refused reconstruction reads nothing back (the block keeps its start) and still frees the trainer', async () => {
    const calls: Calls = { steps: [], reads: [], freed: false };
    const b = block();
    const rates = Array.from({ length: 7 }, () => ({ latent: 1, alpha: 1, a: 1, b: 1 }));
    const stepper = await deviceRecon(fakeAddon(calls), {} as RuntimeModelHandle)(b, rates, 1, 10);
    await stepper.finish(false);
    expect(calls.reads).toEqual([]);
    expect(b.params.linears.up_proj.latent[0]).toBe(6);
    expect(calls.freed).toBe(true);
  });

  it('the addon refuses malformed arguments in one line, and the CPU backend says it has no device trainer', async () => {
    const addon = loadAddon() as unknown as RuntimeAddon & ReconAddon;
    const { config } = loadBenchConfig('test/fixtures/bench/tiny-llama-config.json');
    const loaded = await loadRuntimeModelFrom(addon, randomModelSource(config, 'fp16', 'random'), 'cpu');
    try {
      const b = block();
      const calls: Calls = { steps: [], reads: [], freed: false };
      const recording = fakeAddon(calls);
      await deviceRecon(recording, {} as RuntimeModelHandle)(b, Array.from({ length: 7 }, () => ({ latent: 1, alpha: 1, a: 1, b: 1 })), 1, 10);
      const c = calls.create!;
      const create = (over: Partial<typeof c> = {}) => {
        const a = { ...c, ...over };
        return () => addon.rtReconCreate(loaded.handle, a.dims, [b.params.inputNorm as Float32Array, b.params.postNorm as Float32Array, null, null, null, null],
          a.linears, a.linearDims, a.rates, a.rotations as never, a.rotationDims);
      };
      expect(create()).toThrow(/^this backend has no device reconstruction$|bwq runtime: this backend has no device reconstruction/);
      expect(create({ dims: c.dims.subarray(0, 5) })).toThrow(/reconstruction arguments are too short/);
      const badLinear = Int32Array.from(c.linearDims);
      badLinear[0] = 0;
      expect(create({ linearDims: badLinear })).toThrow(/linear 0 has bad dimensions/);
      const shortLatent = c.linears.map((l) => [...l]);
      shortLatent[2]![0] = new Float32Array(3);
      expect(create({ linears: shortLatent })).toThrow(/latent weights has 3 values, 32 needed/);
    } finally {
      addon.rtFree(loaded.handle);
    }
  });
});
