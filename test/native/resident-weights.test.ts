// Device-resident weights (loadNativeKernels residentWeights, addon cudaUploadWeights): the results equal
// the JavaScript reference kernels', the option is off wherever CUDA is not in use, and the addon
// rejects what is not a resident copy. Runs on CPU-only machines (CI) and on a GPU machine alike.
import { describe, expect, it } from 'vitest';
import { kernelsOnCuda, loadNativeKernels } from '../../src/native/kernels.js';
import { loadAddon, type NativeAddon, type ResidentWeightsHandle } from '../../src/native/loader.js';
import { Rng } from '../../src/linalg/random.js';
import { referenceInt8BinaryGemm, referenceTernaryBinaryGemm } from '../../src/native/reference-kernels.js';
import { packSignRows, packTernaryRows } from '../../src/quant/pack.js';

describe('resident weights', () => {
  it('give the reference results, also on repeated calls and when the same array is used with another shape', () => {
    const kernels = loadNativeKernels({ device: 'auto', residentWeights: true });
    expect(kernels.residentWeights).toBe(kernels.gpu);
    const rng = new Rng(11);
    const r = (): number => rng.nextUint32();
    for (const [m, n, k] of [[1, 70, 257], [17, 33, 100], [3, 5, 33]] as const) {
      const t = Int8Array.from({ length: m * k }, () => (r() % 3) - 1);
      const a8 = Int8Array.from({ length: m * k }, () => (r() % 63) - 31);
      const s = Int8Array.from({ length: n * k }, () => (r() & 1 ? 1 : -1));
      const { plus, minus } = packTernaryRows(t, m, k);
      const w = packSignRows(s, n, k);
      const wantT = referenceTernaryBinaryGemm(plus, minus, w, m, n, k);
      const wantI = referenceInt8BinaryGemm(a8, w, m, n, k);
      for (let rep = 0; rep < 2; rep++) {
        expect(kernels.ternaryBinaryGemm(plus, minus, w, m, n, k)).toEqual(wantT);
        expect(kernels.int8BinaryGemm(a8, w, m, n, k)).toEqual(wantI);
      }
      // The same words read as fewer rows: a new copy of the new shape, same results as the plain kernels.
      const n2 = n - 1;
      expect(kernels.ternaryBinaryGemm(plus, minus, w, m, n2, k)).toEqual(referenceTernaryBinaryGemm(plus, minus, w, m, n2, k));
    }
  });

  it('are off on the CPU kernels', () => {
    expect(loadNativeKernels({ device: 'cpu', residentWeights: true }).residentWeights).toBe(false);
  });

  it('the addon refuses other values in place of a resident copy, and uploads only with CUDA', () => {
    const addon = loadAddon();
    const plus = new Uint32Array(1), minus = new Uint32Array(1), out = new Int32Array(1);
    expect(() => addon.cudaFreeWeights(new Uint32Array(1) as unknown as ResidentWeightsHandle))
      .toThrow('the argument of cudaFreeWeights must come from cudaUploadWeights');
    expect(() => addon.ternaryBinaryGemm(plus, minus, new Int32Array(1) as unknown as Uint32Array, 1, 1, 1, out, false))
      .toThrow('weights has the wrong array type');
    if (addon.cudaInit().ok) {
      const copy = addon.cudaUploadWeights(new Uint32Array([1]), 1, 1);
      expect(() => addon.ternaryBinaryGemm(plus, minus, copy, 1, 2, 1, new Int32Array(2), true))
        .toThrow('resident weights are 1 x 1, the call needs 2 x 1');
      addon.cudaFreeWeights(copy);
      expect(() => addon.int8BinaryGemm(new Int8Array(1), copy, 1, 1, 1, out, true)).toThrow('were freed');
    } else {
      expect(() => addon.cudaUploadWeights(new Uint32Array([1]), 1, 1)).toThrow(/CUDA unavailable/);
    }
  });
});

describe('resident weights bookkeeping (stand-in addon)', () => {
  /** Records what the kernels ask of the addon; GEMMs fill the output with a marker of the weights they got. */
  function standIn() {
    const log: string[] = [];
    let next = 0;
    const handles = new Map<object, string>();
    const addon = {
      cudaUploadWeights(_w: Uint32Array, n: number, k: number) {
        const h = { id: `h${next++}` };
        handles.set(h, `${h.id}:${n}x${k}`);
        log.push(`upload ${handles.get(h)!}`);
        return h;
      },
      cudaFreeWeights(h: object) { log.push(`free ${handles.get(h)!}`); },
      ternaryBinaryGemm(_p: Uint32Array, _q: Uint32Array, w: object, _m: number, _n: number, _k: number, out: Int32Array, cuda: boolean) {
        log.push(`tb ${handles.get(w) ?? 'array'} ${cuda}`);
        return out;
      },
      int8BinaryGemm(_a: Int8Array, w: object, _m: number, _n: number, _k: number, out: Int32Array, cuda: boolean) {
        log.push(`i8 ${handles.get(w) ?? 'array'} ${cuda}`);
        return out;
      },
      ternaryTernaryGemm(_ap: Uint32Array, _am: Uint32Array, _bp: Uint32Array, _bm: Uint32Array, _m: number, _n: number,
        _k: number, out: Int32Array, cuda: boolean) {
        log.push(`tt ${cuda}`);
        return out;
      },
    };
    return { addon: addon as unknown as NativeAddon, log };
  }

  it('uploads each weights array once, re-uploads (and frees) on a new shape, and passes the copy to the GEMMs', () => {
    const { addon, log } = standIn();
    const kernels = kernelsOnCuda(addon, true);
    const w1 = new Uint32Array(8), w2 = new Uint32Array(8);
    const p = new Uint32Array(2), q = new Uint32Array(2), a = new Int8Array(64);
    kernels.ternaryBinaryGemm(p, q, w1, 1, 4, 64);
    kernels.int8BinaryGemm(a, w1, 1, 4, 64);
    kernels.ternaryBinaryGemm(p, q, w2, 1, 4, 64);
    kernels.ternaryBinaryGemm(p, q, w1, 1, 2, 64);
    kernels.ternaryBinaryGemm(p, q, w1, 0, 2, 64);
    expect(log).toEqual([
      'upload h0:4x64', 'tb h0:4x64 true', 'i8 h0:4x64 true',
      'upload h1:4x64', 'tb h1:4x64 true',
      'free h0:4x64', 'upload h2:2x64', 'tb h2:2x64 true',
      'tb array true',
    ]);
  });

  it('sends ternary x ternary (attention scores) to CUDA too, with no resident copy of either operand', () => {
    const { addon, log } = standIn();
    const kernels = kernelsOnCuda(addon, true);
    const planes = new Uint32Array(8);
    kernels.ternaryTernaryGemm(planes, planes, planes, planes, 4, 4, 64);
    expect(log).toEqual(['tt true']);
  });

  it('without residentWeights passes the arrays through', () => {
    const { addon, log } = standIn();
    const kernels = kernelsOnCuda(addon, false);
    kernels.ternaryBinaryGemm(new Uint32Array(2), new Uint32Array(2), new Uint32Array(8), 1, 4, 64);
    expect(kernels.residentWeights).toBe(false);
    expect(log).toEqual(['tb array true']);
  });
});
