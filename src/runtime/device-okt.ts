/**
 * The OKT of BWLA on the block engine's device: an OktDevice (src/quant/okt.ts) that runs learnOkt's whole EM in one
 * native call (native/ops/okt/, rtOkt → native/runtime/model.h okt_on_device) with the stacked weights and the
 * activation rows resident on the device (CUDA: okt.cu; the CPU backend: okt_cpu.cpp on its thread pool). Same contract and defaults as the TypeScript reference; the initial
 * factors come from oktStart (the same Rng, so both paths start alike). Precision: docs/ALGORITHMS.md §OKT.
 */
import { BwqError } from '../errors.js';
import { oktStart, type OktDevice } from '../quant/okt.js';
import type { RuntimeModelHandle } from './load.js';
import { runtimeError } from './engine.js';

/** What rtOkt returns (native/src/addon_runtime.cpp). */
export interface NativeOktResult {
  r1: Float64Array;
  r2: Float64Array;
  history: Float64Array;
  iterations: number;
  converged: boolean;
  weightBefore: number;
  weightAfter: number;
  tailBefore: number;
  tailAfter: number;
}

export interface OktAddon {
  rtOkt(model: RuntimeModelHandle, weights: Float32Array[], rows: Int32Array, k: number, a: number, b: number,
    activations: Float32Array | null, tokens: number, params: Float64Array, anneal: Float64Array, r1: Float64Array,
    r2: Float64Array): Promise<NativeOktResult>;
}

/** Whether the addon was built with the device OKT's binding. */
export function hasOktBinding(addon: object): addon is OktAddon {
  return typeof (addon as Partial<OktAddon>).rtOkt === 'function';
}

/** The first `n` values as float32 (no copy when they already are). */
function float32(data: Float32Array | Float64Array, n: number): Float32Array {
  if (data.length < n) throw new BwqError(`OKT: an input has ${data.length} values, expected at least ${n}`);
  if (data instanceof Float32Array) return data.length === n ? data : data.subarray(0, n);
  return Float32Array.from(data.subarray(0, n));
}

/** learnOkt on the model's backend (`handle`): CUDA (cuBLAS) or the CPU backend's threads. */
export function deviceOkt(addon: OktAddon, handle: RuntimeModelHandle): OktDevice {
  return async (weights, cols, options) => {
    const { a, b, r1, r2 } = oktStart(cols, options);
    const acts = options.activations;
    const lambda = acts === undefined ? 0 : options.activationWeight ?? 0;
    const withActs = lambda > 0 && acts !== undefined && acts.rows > 0;
    const params = Float64Array.of(lambda, options.iterations ?? 20, options.tolerance ?? 1e-7, options.annealIterations ?? 10);
    let res: NativeOktResult;
    try {
      res = await addon.rtOkt(handle, weights.map((w) => float32(w.data, w.rows * cols)), Int32Array.from(weights, (w) => w.rows),
        cols, a, b, withActs ? float32(acts.data, acts.rows * cols) : null, withActs ? acts.rows : 0, params,
        Float64Array.from(options.anneal ?? []), r1, r2);
    } catch (error) {
      throw runtimeError(error);
    }
    checkDeviceOkt(res, a, b);
    return {
      r1: res.r1, r2: res.r2, a, b, history: Array.from(res.history), iterations: res.iterations, converged: res.converged,
      weightError: { before: res.weightBefore, after: res.weightAfter },
      // the reference keeps the activation term (with κ_x = 0) for zero rows
      activationTail: lambda > 0 && acts !== undefined
        ? (withActs ? { before: res.tailBefore, after: res.tailAfter } : { before: 0, after: 0 })
        : undefined,
    };
  };
}

/** Largest |RᵀR − I| entry of an n×n row-major matrix. */
export function orthogonalityDefect(r: Float64Array, n: number): number {
  let worst = 0;
  for (let i = 0; i < n; i++) {
    for (let j = i; j < n; j++) {
      let dot = 0;
      for (let k = 0; k < n; k++) dot += r[k * n + i]! * r[k * n + j]!;
      worst = Math.max(worst, Math.abs(dot - (i === j ? 1 : 0)));
    }
  }
  return worst;
}

/**
 * What the device's answer must satisfy whatever its rounding (cheap, on the host: a×a and b×b): finite objective
 * values that never rise by more than float32 noise (every accepted step of the EM lowers or keeps J), and
 * orthogonal factors. A violation is a device fault, refused in one line rather than quantized with.
 */
export function checkDeviceOkt(res: Pick<NativeOktResult, 'r1' | 'r2' | 'history'>, a: number, b: number): void {
  const h = Array.from(res.history);
  for (let i = 0; i < h.length; i++) {
    if (!Number.isFinite(h[i]!)) throw new BwqError(`device OKT: objective ${h[i]} at step ${i}`);
    if (i > 0 && h[i]! > h[i - 1]! + 1e-4 * Math.abs(h[i - 1]!) + 1e-6) {
      throw new BwqError(`device OKT: objective rose from ${h[i - 1]} to ${h[i]} at step ${i} (the EM never raises it)`);
    }
  }
  const defect = Math.max(orthogonalityDefect(res.r1, a), orthogonalityDefect(res.r2, b));
  if (!(defect < 1e-3)) throw new BwqError(`device OKT: factors not orthogonal (max |RᵀR − I| = ${defect})`);
}
