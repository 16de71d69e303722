/** The native addon's activation quantizers (native/ops/actquant/actquant_cpu.cpp) as act-quant.ts's ActQuantKernels. */
import type { ActQuantKernels, CausalRows, TrainQuantizer } from '../quant/reconstruct/act-quant.js';
import { optionalAddonFunctions } from './loader.js';
import type { QuantizeRowsInto } from '../quant/quantizers.js';

interface QuantizeRowsAddon {
  quantizeRows(kind: number, bits: number, param: number, x: Float32Array, rows: number, cols: number, out: Float32Array): void;
}

/** The calibration's fake quantizers (src/quant/quantizers.ts quantizeRowsInto) on the CPU kernels' threads, equal bit for
 *  bit (native/ops/actquant/actquant_cpu.cpp quantize_rows); undefined when the addon is not built (or predates it). */
export function nativeQuantizeRows(): QuantizeRowsInto | undefined {
  const addon = optionalAddonFunctions<QuantizeRowsAddon>(['quantizeRows']);
  if (addon === undefined) return undefined;
  const { quantizeRows } = addon;
  return (x, cols, q, out) => {
    if (cols <= 0 || x.length % cols !== 0) throw new Error(`quantizeRows: length ${x.length} is not a multiple of ${cols}`);
    const [kind, bits, param] = q.kind === 'none' ? [0, 0, 0] : q.kind === 'int' ? [1, q.bits, q.clipRatio]
      : q.kind === 'ternary' ? [2, 0, q.thresholdRatio] : [3, 0, 0];
    quantizeRows(kind, bits, param, x, x.length / cols, cols, out);
  };
}

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
