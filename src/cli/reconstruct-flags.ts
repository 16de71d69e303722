/**
 * The block-wise reconstruction flags of `bwq quantize` (docs/ALGORITHMS.md §Block-wise reconstruction):
 * `--method bwta` reconstructs unless `--no-reconstruct`; bwla and rtn only with `--reconstruct`.
 */
import { usageError } from '../errors.js';
import { DEFAULT_RECONSTRUCT, type ReconstructOptions } from '../pipeline/reconstruct.js';
import { checkLevels } from '../quant/reconstruct/schedule.js';
import { parseIntegerFlag, parseNumberFlag } from './output.js';
import type { QuantMethod } from '../quant/recipe.js';

export interface ReconstructRawFlags {
  /** true with --reconstruct, false with --no-reconstruct */
  reconstruct?: boolean;
  recIterations?: string;
  recBatch?: string;
  recLrWeight?: string;
  recLrScale?: string;
  recLrAct?: string;
  recStages?: string;
  recFinalFraction?: string;
  recHandover?: string;
  /** true with --rec-align, false with --no-rec-align */
  recAlign?: boolean;
}

export const RECONSTRUCT_FLAG_HELP = {
  reconstruct: 'block-wise reconstruction after each block\'s calibration (default for bwta; --no-reconstruct: off)',
  iterations: `reconstruction: Adam steps per block (default ${DEFAULT_RECONSTRUCT.iterations})`,
  batch: `reconstruction: calibration windows per step (default ${DEFAULT_RECONSTRUCT.batch})`,
  lrWeight: `reconstruction: learning rate of the latent weights, relative to their mean magnitude (default ${DEFAULT_RECONSTRUCT.lrWeight})`,
  lrScale: `reconstruction: learning rate of the weight scales and low-rank factors, relative (default ${DEFAULT_RECONSTRUCT.lrScale})`,
  lrAct: `reconstruction: learning rate of the activation thresholds / clip ratios, relative (default ${DEFAULT_RECONSTRUCT.lrAct})`,
  stages: `reconstruction: levels of the intermediate stages before ternary, odd and decreasing, or "none" (default ${DEFAULT_RECONSTRUCT.levels.join(',')})`,
  finalFraction: `reconstruction: fraction of the steps at the final quantizers (default ${DEFAULT_RECONSTRUCT.finalFraction})`,
  handover: `reconstruction: fraction of each stage spent handing over from the previous one (default ${DEFAULT_RECONSTRUCT.handover})`,
  align: `reconstruction: magnitude-alignment projection factors between stages (default ${DEFAULT_RECONSTRUCT.align ? 'on; --no-rec-align: off' : 'off'})`,
} as const;

function fraction(flag: string, value: string, allowZero: boolean): number {
  const x = parseNumberFlag(flag, value);
  if (!(allowZero ? x >= 0 : x > 0) || x > 1) throw usageError(`${flag} must be in ${allowZero ? '[0, 1]' : '(0, 1]'}, got ${value}`);
  return x;
}

function rate(flag: string, value: string): number {
  const x = parseNumberFlag(flag, value);
  if (!(x >= 0) || !Number.isFinite(x)) throw usageError(`${flag} must be a non-negative number, got ${value}`);
  return x;
}

/** The reconstruction options of a run, or undefined when it does not reconstruct. */
export function parseReconstructFlags(method: QuantMethod, raw: ReconstructRawFlags): ReconstructOptions | undefined {
  const on = raw.reconstruct ?? method === 'bwta';
  const given = ([
    ['--rec-iterations', raw.recIterations], ['--rec-batch', raw.recBatch], ['--rec-lr-weight', raw.recLrWeight],
    ['--rec-lr-scale', raw.recLrScale], ['--rec-lr-act', raw.recLrAct], ['--rec-stages', raw.recStages],
    ['--rec-final-fraction', raw.recFinalFraction], ['--rec-handover', raw.recHandover],
    [raw.recAlign === false ? '--no-rec-align' : '--rec-align', raw.recAlign === undefined ? undefined : 'x'],
  ] as const).filter(([, v]) => v !== undefined).map(([f]) => f);
  if (!on) {
    if (given.length > 0) throw usageError(`${given[0]} needs the reconstruction (${method === 'bwta' ? 'drop --no-reconstruct' : '--reconstruct'})`);
    return undefined;
  }
  const o: ReconstructOptions = { ...DEFAULT_RECONSTRUCT, levels: [...DEFAULT_RECONSTRUCT.levels] };
  if (raw.recIterations !== undefined) o.iterations = parseIntegerFlag('--rec-iterations', raw.recIterations, 1);
  if (raw.recBatch !== undefined) o.batch = parseIntegerFlag('--rec-batch', raw.recBatch, 1);
  if (raw.recLrWeight !== undefined) o.lrWeight = rate('--rec-lr-weight', raw.recLrWeight);
  if (raw.recLrScale !== undefined) o.lrScale = rate('--rec-lr-scale', raw.recLrScale);
  if (raw.recLrAct !== undefined) o.lrAct = rate('--rec-lr-act', raw.recLrAct);
  if (raw.recStages !== undefined) {
    const text = raw.recStages.trim().toLowerCase();
    if (text === 'none' || text === '') o.levels = [];
    else {
      const parts = text.split(',').map((p) => p.trim());
      if (parts.some((p) => !/^\d+$/.test(p))) throw usageError(`--rec-stages must be a comma-separated list of level counts or "none" (got "${raw.recStages}")`);
      o.levels = parts.map((p) => Number.parseInt(p, 10));
      const problem = checkLevels(o.levels);
      if (problem !== undefined) throw usageError(`--rec-stages: ${problem}`);
    }
  }
  if (raw.recFinalFraction !== undefined) o.finalFraction = fraction('--rec-final-fraction', raw.recFinalFraction, false);
  if (raw.recHandover !== undefined) o.handover = fraction('--rec-handover', raw.recHandover, true);
  if (raw.recAlign !== undefined) o.align = raw.recAlign;
  return o;
}
