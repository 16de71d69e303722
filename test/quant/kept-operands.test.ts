/**
 * The quantize numerics with their operands kept on a device (Matmul.keep, src/pipeline/device-matmul.ts) and their
 * products written into reused scratch (MatmulOptions.into) give the very numbers of the host products: a device
 * here is a fake that snapshots each kept array when it is written (a stale copy, a missed update, shows) and
 * multiplies with the JS GEMM the host uses.
 */
import { describe, expect, it } from 'vitest';
import { quantizeGroup, type GroupSettings } from '../../src/quant/layer-quant.js';
import { compensateColumnBlocks, compensationFrame } from '../../src/quant/column-blocks.js';
import { jsMatmul, type Matmul } from '../../src/linalg/matmul.js';
import { gemmNN, gemmNT, gemmTN } from '../../src/linalg/js-gemm.js';
import { transposeF32 } from '../../src/linalg/dense.js';
import { Rng } from '../../src/linalg/random.js';
import { deviceMatmul, type DeviceProducts } from '../../src/pipeline/device-matmul.js';
import type { DeviceArray } from '../../src/runtime/block-runner.js';

interface FakeDevice extends DeviceProducts {
  /** products with a kept operand; products written into a given buffer; kept arrays written, and freed */
  counts: { keptOperands: number; into: number; writes: number; frees: number; live: number };
}

function fakeDevice(): FakeDevice {
  const memory = new Map<DeviceArray, Float32Array>();
  const counts = { keptOperands: 0, into: 0, writes: 0, frees: 0, live: 0 };
  const resolve = (x: Float32Array | DeviceArray): Float32Array => {
    if (x instanceof Float32Array) return x;
    counts.keptOperands++;
    const data = memory.get(x);
    if (data === undefined) throw new Error('product with a freed device array');
    return data;
  };
  return {
    counts,
    createArray(floats) {
      const data = new Float32Array(floats);
      counts.live++;
      const arr: DeviceArray = {
        floats,
        write: (offset, x) => { counts.writes++; data.set(x, offset); }, // a snapshot: later host changes do not reach it
        read: (offset, count) => data.slice(offset, offset + count),
        free: () => { if (memory.delete(arr)) { counts.frees++; counts.live--; } },
      };
      memory.set(arr, data);
      return arr;
    },
    matmulT(x, ta, y, tb, m, k, n, into) {
      const a = resolve(x);
      const b = resolve(y);
      // jsMatmul's own dispatch (computed at once)
      const c = ta && tb ? gemmTN(a, transposeF32(b, n, k), m, k, n) : ta ? gemmTN(a, b, m, k, n) : tb ? gemmNT(a, b, m, k, n) : gemmNN(a, b, m, k, n);
      if (into === undefined || into.length < m * n) return Promise.resolve(c);
      counts.into++;
      const out = into.subarray(0, m * n);
      out.set(c);
      return Promise.resolve(out);
    },
  };
}

function data(rng: Rng, tokens: number, cols: number, rows: number): { x: Float32Array; w: Float32Array } {
  const chan = Float64Array.from({ length: cols }, (_, c) => (c % 13 === 0 ? 6 : 1));
  const x = Float32Array.from({ length: tokens * cols }, (_, i) => rng.normal() * chan[i % cols]!);
  const w = Float32Array.from({ length: rows * cols }, () => 0.05 * rng.normal());
  return { x, w };
}

describe('kept operands and reused product buffers', () => {
  it('bwla quantizeGroup (OKT, weighted PSP, compensation, output-optimal scales, int6 search) equals the host run', async () => {
    const rng = new Rng(17);
    const cols = 64, tokens = 80;
    const a = data(rng, tokens, cols, 40);
    const b = data(rng, tokens, cols, 24);
    const members = [{ role: 'gate_proj' as const, weight: a.w, rows: 40 }, { role: 'up_proj' as const, weight: b.w, rows: 24 }];
    const s: GroupSettings = { method: 'bwla', aBits: 6, rank: 3, oktIterations: 3, pspIterations: 2, pspTauRatio: 0.25, seed: 4,
      oktInit: 'random', weightedPsp: true, dataAwareScale: true, compensationDamping: 0.1 };
    const host = await quantizeGroup('mlp_in', members, cols, a.x, tokens, s, 3, { matmul: jsMatmul });
    const device = fakeDevice();
    const kept = await quantizeGroup('mlp_in', members, cols, a.x, tokens, s, 3, { matmul: deviceMatmul(device, jsMatmul, 0) });
    for (let i = 0; i < members.length; i++) {
      const [h, d] = [host.linears[i]!, kept.linears[i]!];
      expect(Array.from(d.signs)).toEqual(Array.from(h.signs));
      expect(d.scales).toEqual(h.scales);
      expect(d.lrA).toEqual(h.lrA);
      expect(d.lrB).toEqual(h.lrB);
    }
    expect(kept.quantizer).toEqual(host.quantizer);
    expect(kept.outputRelError).toBe(host.outputRelError);
    // the kept paths ran: operands from device arrays, products into scratch, every array freed
    expect(device.counts.keptOperands).toBeGreaterThan(20);
    expect(device.counts.into).toBeGreaterThan(10);
    expect(device.counts.live).toBe(0);
    expect(device.counts.frees).toBeGreaterThan(5);
  });

  it('the column-block compensation over two spans (errors updated on the device block by block) equals the host run', async () => {
    const rng = new Rng(5);
    const rows = 6, cols = 1100, tokens = 1200;
    const { x, w } = data(rng, tokens, cols, rows);
    const h = await jsMatmul(x, x, cols, tokens, cols, { transposeA: true });
    const frame = (await compensationFrame(h, cols, 0.1, jsMatmul))!;
    // sign × row mean |w| of the block: a quantizer that depends on every compensated value
    const quantizeBlock = (block: Float32Array, r: number, width: number): Float32Array => {
      const out = new Float32Array(r * width);
      for (let n = 0; n < r; n++) {
        let mean = 0;
        for (let c = 0; c < width; c++) mean += Math.abs(block[n * width + c]!) / width;
        for (let c = 0; c < width; c++) out[n * width + c] = block[n * width + c]! >= 0 ? mean : -mean;
      }
      return out;
    };
    const run = (mm: Matmul): Promise<Float32Array> => compensateColumnBlocks(w, rows, cols, frame, 512, quantizeBlock, mm);
    const host = await run(jsMatmul);
    const device = fakeDevice();
    const kept = await run(deviceMatmul(device, jsMatmul, 0));
    expect(kept).toEqual(host);
    // the span-internal update of the second block read the first block's errors from the device copy
    expect(device.counts.keptOperands).toBeGreaterThanOrEqual(2);
    expect(device.counts.writes).toBeGreaterThanOrEqual(1 + 3); // the copy, then each block's errors
    expect(device.counts.live).toBe(0);
  });
});
