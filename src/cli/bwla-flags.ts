/**
 * The OKT / PSP flags of `bwq quantize` (docs/ALGORITHMS.md §OKT, §PSP); defaults are BWLA_DEFAULTS.
 * They only steer `--method bwla`; given with another method they are refused.
 */
import { usageError } from '../errors.js';
import { BWLA_DEFAULTS } from '../quant/layer-quant.js';
import type { QuantizeOptions } from '../pipeline/quantize.js';
import type { QuantMethod } from '../quant/recipe.js';
import { parseIntegerFlag, parseNumberFlag } from './output.js';

export interface BwlaRawFlags {
  oktIterations?: string;
  oktTol?: string;
  oktActWeight?: string;
  oktAnneal?: string;
  pspIterations?: string;
  pspTol?: string;
  compensationDamping?: string;
  pspWeighting?: string;
  scaleRefit?: string;
}

export const BWLA_FLAG_HELP = {
  oktIterations: `bwla OKT: iteration cap of the exact EM stage (default ${BWLA_DEFAULTS.oktIterations})`,
  oktTol: `bwla OKT: stop when one iteration lowers the objective by less than this fraction (default ${BWLA_DEFAULTS.oktTolerance})`,
  oktActWeight: `bwla OKT: weight λ of the activation 4th-moment term (default ${BWLA_DEFAULTS.oktActivationWeight}; 0 = weights only)`,
  oktAnneal: `bwla OKT: smoothing schedule σ before the exact stage, comma-separated, or "none" (default ${BWLA_DEFAULTS.oktAnneal.length === 0 ? 'none' : BWLA_DEFAULTS.oktAnneal.join(',')})`,
  pspIterations: `bwla PSP: cap on the L/B alternations (default ${BWLA_DEFAULTS.pspIterations})`,
  pspTol: `bwla PSP: stop when one alternation lowers the objective by less than this fraction (default ${BWLA_DEFAULTS.pspTolerance}: run the cap)`,
  compensationDamping: `bwla: after PSP, re-choose the signs with GPTQ-style error compensation on the rotated Hessian damped by this fraction of its mean diagonal (default ${BWLA_DEFAULTS.compensationDamping}; 0 = PSP's signs)`,
  pspWeighting: 'bwla PSP objective: activation (default; weighted by the input channels\' RMS) or none (the paper\'s)',
  scaleRefit: 'bwla and bwta: output (default; output-optimal scales after PSP) or none',
} as const;

function nonNegative(flag: string, value: string): number {
  const x = parseNumberFlag(flag, value);
  if (!(x >= 0) || !Number.isFinite(x)) throw usageError(`${flag} must be a non-negative number, got ${value}`);
  return x;
}

type BwlaOptions = Pick<QuantizeOptions, 'oktIterations' | 'oktTolerance' | 'oktActivationWeight' | 'oktAnneal' | 'pspIterations' | 'pspTolerance' | 'compensationDamping' | 'weightedPsp' | 'dataAwareScale'>;

export function parseBwlaFlags(method: QuantMethod, raw: BwlaRawFlags): BwlaOptions {
  const o: BwlaOptions = {};
  const bwlaOnly = ([
    ['--okt-iterations', raw.oktIterations], ['--okt-tol', raw.oktTol], ['--okt-act-weight', raw.oktActWeight],
    ['--okt-anneal', raw.oktAnneal], ['--psp-iterations', raw.pspIterations], ['--psp-tol', raw.pspTol], ['--compensation-damping', raw.compensationDamping], ['--psp-weighting', raw.pspWeighting],
  ] as const).find(([, v]) => v !== undefined);
  if (bwlaOnly !== undefined && method !== 'bwla') throw usageError(`${bwlaOnly[0]} is a --method bwla option`);
  if (raw.oktIterations !== undefined) o.oktIterations = parseIntegerFlag('--okt-iterations', raw.oktIterations, 0);
  if (raw.oktTol !== undefined) o.oktTolerance = nonNegative('--okt-tol', raw.oktTol);
  if (raw.oktActWeight !== undefined) o.oktActivationWeight = nonNegative('--okt-act-weight', raw.oktActWeight);
  if (raw.oktAnneal !== undefined) {
    const text = raw.oktAnneal.trim().toLowerCase();
    o.oktAnneal = text === 'none' || text === '' ? [] : text.split(',').map((p) => {
      const x = nonNegative('--okt-anneal', p.trim());
      if (x === 0) throw usageError(`--okt-anneal values must be positive (got "${raw.oktAnneal}")`);
      return x;
    });
  }
  if (raw.pspIterations !== undefined) o.pspIterations = parseIntegerFlag('--psp-iterations', raw.pspIterations, 0);
  if (raw.pspTol !== undefined) o.pspTolerance = nonNegative('--psp-tol', raw.pspTol);
  if (raw.compensationDamping !== undefined) o.compensationDamping = nonNegative('--compensation-damping', raw.compensationDamping);
  if (raw.pspWeighting !== undefined) {
    if (raw.pspWeighting !== 'none' && raw.pspWeighting !== 'activation') throw usageError(`--psp-weighting must be none or activation (got "${raw.pspWeighting}")`);
    o.weightedPsp = raw.pspWeighting === 'activation';
  }
  if (raw.scaleRefit !== undefined) {
    if (raw.scaleRefit !== 'none' && raw.scaleRefit !== 'output') throw usageError(`--scale-refit must be none or output (got "${raw.scaleRefit}")`);
    if (method !== 'bwla' && method !== 'bwta') throw usageError('--scale-refit is a --method bwla / bwta option');
    o.dataAwareScale = raw.scaleRefit === 'output';
  }
  return o;
}
