/**
 * Adam (Kingma & Ba) with bias correction, on one parameter array (float32 or float64 values,
 * float32 moments): m ← β₁m + (1−β₁)g, v ← β₂v + (1−β₂)g², θ ← θ − lr·m̂ / (√v̂ + ε).
 */
import type { Arr } from './gemm.js';

export interface AdamSettings {
  lr: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
}

export class Adam {
  private readonly m: Float32Array;
  private readonly v: Float32Array;
  private t = 0;
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  lr: number;

  constructor(readonly size: number, settings: AdamSettings) {
    this.m = new Float32Array(size);
    this.v = new Float32Array(size);
    this.lr = settings.lr;
    this.beta1 = settings.beta1 ?? 0.9;
    this.beta2 = settings.beta2 ?? 0.999;
    this.eps = settings.eps ?? 1e-12;
  }

  /** One update of `param` with gradient `grad`, the learning rate scaled by `lrScale` (schedules). */
  step(param: Arr, grad: Arr, lrScale = 1): void {
    if (param.length !== this.size || grad.length !== this.size) {
      throw new RangeError(`Adam: ${param.length} parameters / ${grad.length} gradients for a state of ${this.size}`);
    }
    this.t++;
    const b1 = this.beta1;
    const b2 = this.beta2;
    const c1 = 1 - b1 ** this.t;
    const c2 = 1 - b2 ** this.t;
    // lr·m̂/(√v̂ + ε) = (lr/c₁)·m / (√v·(1/√c₂) + ε): no division by c₁ or c₂ per element
    const step = (this.lr * lrScale) / c1;
    const rc2 = 1 / Math.sqrt(c2);
    const eps = this.eps;
    const ms = this.m;
    const vs = this.v;
    const n = this.size;
    for (let i = 0; i < n; i++) {
      const g = grad[i]!;
      const m = b1 * ms[i]! + (1 - b1) * g;
      const v = b2 * vs[i]! + (1 - b2) * g * g;
      ms[i] = m;
      vs[i] = v;
      param[i] = param[i]! - (step * m) / (Math.sqrt(v) * rc2 + eps);
    }
  }
}
