/**
 * One activation-quantizer site of a block (a linear group's input, or an attention operand):
 * its stage list (src/quant/reconstruct/schedule.ts), its learnable scalar (threshold ratio t or
 * clip ratio c), and BWTA's magnitude-alignment projection factors, one per stage. Consecutive stages
 * are aligned, p_i / p_{i+1} = Σ|q_{i+1}(x)| / Σ|q_i(x)|, anchored at the last stage (p_last = 1):
 *
 *   p_i = Σ|q_last(x)| / Σ|q_i(x)|
 *
 * computed on the minibatch where stage i is first used (all of its rows: prepareFactors) and then held fixed. The anchor is bwq's
 * choice for post-training: the weight scales the student starts from were fitted against the final
 * quantizer (the calibrated block), so every stage hands its consumers operands of the magnitude those
 * scales expect (anchoring at the float operand instead, p_i = Σ|x| / Σ|q_i(x)|, measured worse). The
 * site outputs p_i·q_i(x), blended with p_{i−1}·q_{i−1}(x) during a hand-over; the last stage's output
 * is the recipe quantizer's own, so the frozen block needs no factor.
 */
import { quantBackwardWith, quantForwardWith, sumAbs, type ActQuantKernels, type CausalRows, type QuantRows, type TrainQuantizer } from './act-quant.js';
import { alloc, type Arr } from './gemm.js';
import type { StagePoint } from './schedule.js';

export interface SiteCache {
  readonly point: StagePoint;
  readonly cur: QuantRows;
  readonly prev: QuantRows | undefined;
  readonly rows: number;
  readonly cols: number;
  /** causal softmax rows (act-quant.ts); undefined = dense rows */
  readonly causal: CausalRows | undefined;
}

export class QuantSite {
  /** learnable scalar: t (ternary / levels) or c (int); unused for 'none' */
  param: number;
  /** ∂L/∂param accumulated since the last optimizer step */
  grad = 0;
  readonly p: Float64Array;
  /** whether the magnitude-alignment factors are used (else p ≡ 1) */
  align: boolean;

  /** kernels: the engine's quantizers for float32 rows (the reference functions without them) */
  constructor(readonly name: string, readonly stages: readonly TrainQuantizer[], param: number, align: boolean,
    private readonly kernels?: ActQuantKernels) {
    if (stages.length === 0) throw new Error(`site ${name}: no stage`);
    this.param = param;
    this.align = align;
    this.p = new Float64Array(stages.length).fill(Number.NaN);
  }

  get learnable(): boolean {
    return this.stages.some((q) => q.kind !== 'none');
  }

  /** p[stage] computed on the rows of every array of `xs` together when not yet known (1 for the last stage). */
  private ensureFactor<T extends Arr>(stage: number, xs: readonly T[], rows: number, cols: number, causal: CausalRows | undefined): void {
    if (!Number.isNaN(this.p[stage]!)) return;
    const last = this.stages.length - 1;
    if (stage === last) {
      this.p[stage] = 1;
      return;
    }
    let anchor = 0;
    let cur = 0;
    for (const x of xs) {
      anchor += sumAbs(quantForwardWith(this.kernels, this.stages[last]!, this.param, x, rows, cols, causal).out);
      cur += sumAbs(quantForwardWith(this.kernels, this.stages[stage]!, this.param, x, rows, cols, causal).out);
    }
    this.p[stage] = cur > 0 && anchor > 0 ? anchor / cur : 1;
  }

  /** The stage's factor (computed on x the first time the stage is used). */
  private factor<T extends Arr>(stage: number, x: T, rows: number, cols: number, causal: CausalRows | undefined): number {
    if (!this.align) return 1;
    this.ensureFactor(stage, [x], rows, cols, causal);
    return this.p[stage]!;
  }

  /**
   * The factors of the point's stage (and of the one it hands over from) on the rows of every array of `xs` at once,
   * where not yet known: a site applied piece by piece (the attention operands, head by head) gets the factor of its
   * whole minibatch, as on the device step (src/runtime/device-recon.ts), not of its first piece.
   */
  prepareFactors<T extends Arr>(xs: readonly T[], rows: number, cols: number, at: StagePoint, causal?: CausalRows): void {
    if (!this.align) return;
    const point = this.pointAt(at);
    this.ensureFactor(point.stage, xs, rows, cols, causal);
    if (point.blend) this.ensureFactor(point.stage - 1, xs, rows, cols, causal);
  }

  /**
   * The schedule's point clamped to this site's stages (a single-stage site is always stage 0, λ = 1), and whether
   * the site hands over from the stage before (λ < 1 past the first stage).
   */
  pointAt(at: StagePoint): StagePoint & { readonly blend: boolean } {
    const stage = this.stages.length === 1 ? 0 : Math.min(at.stage, this.stages.length - 1);
    const lambda = this.stages.length === 1 ? 1 : at.lambda;
    return { stage, lambda, blend: lambda < 1 && stage > 0 };
  }

  forward<T extends Arr>(x: T, rows: number, cols: number, at: StagePoint, causal?: CausalRows): { out: T; cache: SiteCache } {
    const point = this.pointAt(at);
    const cur = this.stages[point.stage]!;
    const pc = this.factor(point.stage, x, rows, cols, causal);
    const a = quantForwardWith(this.kernels, cur, this.param, x, rows, cols, causal);
    const out = a.out;
    if (pc !== 1) for (let i = 0; i < out.length; i++) out[i] = out[i]! * pc;
    let prev: QuantRows | undefined;
    if (point.blend) {
      const pp = this.factor(point.stage - 1, x, rows, cols, causal);
      const b = quantForwardWith(this.kernels, this.stages[point.stage - 1]!, this.param, x, rows, cols, causal);
      const l = point.lambda;
      for (let i = 0; i < out.length; i++) out[i] = l * out[i]! + (1 - l) * pp * b.out[i]!;
      prev = b.rowsInfo;
    }
    return { out, cache: { point, cur: a.rowsInfo, prev, rows, cols, causal } };
  }

  /** ∂L/∂x for g = ∂L/∂out (x: the forward input); adds ∂L/∂param into `grad`. */
  backward<T extends Arr>(x: T, g: Arr, cache: SiteCache): T {
    const { point, rows, cols, causal } = cache;
    const dx = alloc(x, rows * cols);
    const blend = cache.prev !== undefined;
    const l = blend ? point.lambda : 1;
    const pc = this.align ? this.p[point.stage]! : 1;
    this.grad += quantBackwardWith(this.kernels, this.stages[point.stage]!, this.param, x, g, rows, cols, cache.cur, dx, l * pc, causal);
    if (blend) {
      const pp = this.align ? this.p[point.stage - 1]! : 1;
      this.grad += quantBackwardWith(this.kernels, this.stages[point.stage - 1]!, this.param, x, g, rows, cols, cache.prev!, dx, (1 - l) * pp, causal);
    }
    return dx;
  }
}
