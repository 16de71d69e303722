/**
 * The smooth multi-stage schedule of the reconstruction (BWTA's Levelwise Degradation Strategy, as
 * bwq reads it; docs/ALGORITHMS.md §Smooth multi-stage schedule). A ternary site runs through the
 * quantizers [float, levels L₁, …, levels L_k, ternary]; the float stage gets no step, the final
 * (ternary) stage `finalFraction` of the iterations and the levels stages share the rest equally.
 * Entering stage i, the site's output hands over from stage i−1 to stage i over the first
 * `handover` fraction of the stage's steps:
 *
 *   out = (1 − λ)·p_{i−1}·q_{i−1}(x) + λ·p_i·q_i(x),   λ = min(1, (n + 1) / ⌈handover·N_i⌉)
 *
 * with n the step within the stage and N_i its length (p: src/quant/reconstruct/quant-site.ts).
 */
import type { TrainQuantizer } from './act-quant.js';

export interface StagePoint {
  /** index into the site's stage list */
  readonly stage: number;
  /** weight of `stage` against `stage − 1` in the hand-over (1 once it is over) */
  readonly lambda: number;
}

/** The final quantizers with no hand-over (every site clamps it to its last stage): the frozen block's point. */
export const FINAL_STAGE: StagePoint = { stage: Number.MAX_SAFE_INTEGER, lambda: 1 };

export interface Schedule {
  /** stage and hand-over weight at step `step` (0-based) of `iterations` */
  at(step: number): StagePoint;
  /** number of steps of each stage */
  readonly lengths: readonly number[];
}

/** The quantizer list of a ternary site: float, the levels stages, ternary. Empty `levels`: ternary only. */
export function ternaryStages(levels: readonly number[]): TrainQuantizer[] {
  if (levels.length === 0) return [{ kind: 'ternary' }];
  return [{ kind: 'none' }, ...levels.map((l): TrainQuantizer => ({ kind: 'levels', levels: l })), { kind: 'ternary' }];
}

/** Validated levels list: odd integers ≥ 3, strictly decreasing (a degradation). */
export function checkLevels(levels: readonly number[]): string | undefined {
  for (let i = 0; i < levels.length; i++) {
    const l = levels[i]!;
    if (!Number.isInteger(l) || l < 3 || l % 2 === 0) return `stage levels must be odd integers ≥ 3 (got ${l})`;
    if (i > 0 && l >= levels[i - 1]!) return `stage levels must decrease (got ${levels.join(',')})`;
  }
  return undefined;
}

/**
 * Schedule over `stageCount` stages (stage 0 = float when stageCount > 1: zero steps). With one
 * stage every step is stage 0 with λ = 1.
 */
export function buildSchedule(stageCount: number, iterations: number, finalFraction: number, handover: number): Schedule {
  if (stageCount <= 1) return { at: () => ({ stage: 0, lambda: 1 }), lengths: [iterations] };
  const finalSteps = Math.min(iterations, Math.max(1, Math.round(finalFraction * iterations)));
  const middle = stageCount - 2;
  const rest = iterations - finalSteps;
  const lengths = [0];
  for (let i = 0; i < middle; i++) lengths.push(Math.floor(rest / middle) + (i < rest % middle ? 1 : 0));
  lengths.push(finalSteps);
  const starts: number[] = [];
  let acc = 0;
  for (const l of lengths) {
    starts.push(acc);
    acc += l;
  }
  return {
    lengths,
    at(step) {
      let stage = stageCount - 1;
      for (let i = 1; i < stageCount; i++) {
        if (step < starts[i]! + lengths[i]!) {
          stage = i;
          break;
        }
      }
      const n = step - starts[stage]!;
      const ramp = Math.max(1, Math.ceil(handover * lengths[stage]!));
      return { stage, lambda: Math.min(1, (n + 1) / ramp) };
    },
  };
}
