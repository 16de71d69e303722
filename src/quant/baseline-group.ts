/**
 * The peer baselines of `bwq quantize --method billm | arb` on one group of linears that share an input
 * (docs/ALGORITHMS.md §BiLLM, §ARB-LLM): each linear's weight binarized by BiLLM or ARB-LLM_RC with the
 * layer Hessian H = (2/T) Σ_t x_t x_tᵀ of the group's raw input (over every calibration token when the
 * pipeline gives its Gram matrix, else over the sampled rows), no rotation, and — with an integer --a-bits
 * below 16 — the same per-token int activation quantizer search as bwla, on the unrotated input.
 *
 * These weights are not sign × row scale: bwq writes only their simulated model (no packed model,
 * docs/FORMATS.md). `signs` / `scales` of the result are sign⁺(Ŵ) and mean|Ŵ| per row, kept only
 * because the pipeline's spill files hold them; nothing is written from them.
 */
import type { Matmul } from '../linalg/matmul.js';
import type { GroupLinear, InputGram, QuantizedGroup, QuantizedLinear } from './layer-quant.js';
import type { ActivationQuantizer } from './recipe.js';
import { binarizeRows } from './binarize.js';
import { relativeBinarizationError } from './okt-stats.js';
import { inputHessian } from './hessian-blocks.js';
import { compensationFrame } from './column-blocks.js';
import { BILLM_DEFAULTS, quantizeBillm } from './billm.js';
import { ARB_DEFAULTS, quantizeArb } from './arb.js';
import { candidateQuantizers, linearOutputError, referenceOutputs, searchLinearQuantizer, type LinearTarget } from './act-calib.js';

export type BaselineMethod = 'billm' | 'arb';

function relDiff(w: Float32Array, q: Float32Array | Float64Array): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < w.length; i++) {
    num += (w[i]! - q[i]!) ** 2;
    den += w[i]! ** 2;
  }
  return den > 0 ? Math.sqrt(num / den) : 0;
}

/** H = (2/T) · Gram over every calibration token when given, else (2/n) XᵀX of the sampled rows. */
async function layerHessian(x: Float32Array, tokens: number, cols: number, mm: Matmul, gram: InputGram | undefined): Promise<Float64Array> {
  if (gram === undefined) return inputHessian(x, tokens, cols, mm);
  if (gram.data.length !== cols * cols) throw new Error(`quantizeBaselineGroup: Gram matrix of ${gram.data.length} values for ${cols} columns`);
  const h = new Float64Array(cols * cols);
  const f = gram.tokens > 0 ? 2 / gram.tokens : 0;
  for (let i = 0; i < h.length; i++) h[i] = gram.data[i]! * f;
  return h;
}

export async function quantizeBaselineGroup(method: BaselineMethod, linears: readonly GroupLinear[], cols: number, x: Float32Array, tokens: number,
  aBits: number, mm: Matmul, gram?: InputGram): Promise<QuantizedGroup> {
  // no calibration signal at all: the identity (plain binarization, equal salience)
  const identity = (): Float64Array => Float64Array.from({ length: cols * cols }, (_, i) => (i % (cols + 1) === 0 ? 1 : 0));
  const frame = await compensationFrame(await layerHessian(x, tokens, cols, mm, gram), cols, BILLM_DEFAULTS.percdamp, mm)
    ?? (await compensationFrame(identity(), cols, BILLM_DEFAULTS.percdamp, mm))!;
  const q: QuantizedLinear[] = [];
  for (const l of linears) {
    const { weight: simulated, stats } = method === 'billm'
      ? await quantizeBillm(l.weight, l.rows, cols, frame, BILLM_DEFAULTS, mm)
      : await quantizeArb(l.weight, l.rows, cols, frame, ARB_DEFAULTS, mm);
    const { signs, scales } = binarizeRows(simulated, l.rows, cols);
    const plain = binarizeRows(l.weight, l.rows, cols);
    const plainSim = new Float32Array(l.rows * cols);
    for (let i = 0; i < plainSim.length; i++) plainSim[i] = plain.scales[Math.floor(i / cols)]! * plain.signs[i]!;
    const binErr = relativeBinarizationError(l.weight, l.rows, cols);
    q.push({
      role: l.role, rows: l.rows, cols, simulated, signs, scales,
      lrA: new Float32Array(0), lrB: new Float32Array(0), rank: 0,
      weightRelError: relDiff(l.weight, simulated), plainRelError: relDiff(l.weight, plainSim),
      binarizationError: { plain: binErr, rotated: binErr },
      salientColumns: stats.salientColumns,
    });
  }
  const refs = await referenceOutputs(x, tokens, cols, linears, mm);
  let energy = 0;
  for (const r of refs) for (let i = 0; i < r.length; i++) energy += r[i]! ** 2;
  const targets: LinearTarget[] = q.map((ql, i) => ({ weight: ql.simulated, rows: ql.rows, reference: refs[i]! }));
  let quantizer: ActivationQuantizer;
  let err: number;
  let curve: Array<{ value: number; error: number }> = [];
  if (aBits >= 16) {
    quantizer = { kind: 'none' };
    err = await linearOutputError(x, tokens, cols, quantizer, targets, mm);
  } else {
    const res = await searchLinearQuantizer(x, tokens, cols, candidateQuantizers('int', aBits), targets, mm);
    quantizer = res.quantizer;
    err = res.error;
    curve = res.curve;
  }
  return {
    linears: q, quantizer, rotation: undefined, outputRelError: energy > 0 ? Math.sqrt(err / energy) : 0, candidates: [], curve,
  };
}

/** The baselines' fixed settings for quantization_config.settings (empty for the other methods). */
export function baselineConfigSettings(method: string): Record<string, string | number> {
  if (method === 'billm') return { billm_block_size: BILLM_DEFAULTS.blockSize, billm_max_salient: BILLM_DEFAULTS.maxSalient, hessian_percdamp: BILLM_DEFAULTS.percdamp };
  if (method === 'arb') {
    return { arb_variant: 'ARB-LLM_RC', billm_block_size: ARB_DEFAULTS.blockSize, billm_max_salient: ARB_DEFAULTS.maxSalient, hessian_percdamp: ARB_DEFAULTS.percdamp, arb_iterations: ARB_DEFAULTS.iterations };
  }
  return {};
}
