/** The native addon's activation quantizers (native/ops/actquant/actquant_cpu.cpp) as act-quant.ts's ActQuantKernels. */
import type { ActQuantKernels, CausalRows, TrainQuantizer } from '../quant/reconstruct/act-quant.js';
import { optionalAddonFunctions } from './loader.js';

interface ActQuantAddon {
  actQuantForward(kind: number, bits: number, param: number, x: Float32Array, rows: number, cols: number, period: number, window: number,
    unmasked: boolean, out: Float32Array, stat: Float64Array, scale: Float64Array): void;
  actQuantBackward(kind: number, bits: number, param: number, x: Float32Array, rows: number, cols: number, period: number, window: number,
    unmasked: boolean, g: Float32Array, stat: Float64Array, scale: Float64Array, weight: number, dx: Float32Array, rowGrad: Float64Array): void;
}

/** kind code and bits / levels of a quantizer (native/ops/ops_cpu.h ActQuant). */
function codes(q: Exclude<TrainQuantizer, { kind: 'none' }>): [number, number] {
  switch (q.kind) {
    case 'int': return [1, q.bits];
    case 'ternary': return [2, 0];
    case 'levels': return [3, q.levels];
  }
}

/** period, window (0 = none), unmasked of causal rows (period 0: dense rows). */
function rowCodes(c: CausalRows | undefined): [number, number, boolean] {
  return c === undefined ? [0, 0, false] : [c.period, c.slidingWindow ?? 0, c.unmasked];
}

/** The addon's quantizers on the CPU kernels' threads, or undefined when the addon is not built (or predates them). */
export function nativeActQuant(): ActQuantKernels | undefined {
  const addon = optionalAddonFunctions<ActQuantAddon>(['actQuantForward', 'actQuantBackward']);
  if (addon === undefined) return undefined;
  const { actQuantForward, actQuantBackward } = addon;
  return {
    forward(q, param, x, rows, cols, causal, out, stat, scale) {
      const [kind, bits] = codes(q);
      const [period, window, unmasked] = rowCodes(causal);
      actQuantForward(kind, bits, param, x, rows, cols, period, window, unmasked, out, stat, scale);
    },
    backward(q, param, x, g, rows, cols, causal, info, weight, dx, rowGrad) {
      const [kind, bits] = codes(q);
      const [period, window, unmasked] = rowCodes(causal);
      actQuantBackward(kind, bits, param, x, rows, cols, period, window, unmasked, g, info.stat, info.scale, weight, dx, rowGrad);
    },
  };
}
