/**
 * A binarized linear with learnable parts (nn.Linear layout [N, K], y = x Ŵᵀ + b):
 *
 *   Ŵ = diag(α)·sign⁺(Λ) + A·B      (Λ latent weights, α per-row scales, A [N, r], B [r, K] low-rank; r may be 0)
 *
 * Backward for ∂L/∂y = G and the (quantized) input X [T, K]:
 *   ∂L/∂X = G Ŵ,   ∂L/∂Ŵ = Gᵀ X,
 *   ∂L/∂α_n = Σ_k ∂L/∂Ŵ_nk · sign⁺(Λ_nk),
 *   ∂L/∂Λ_nk = α_n · ∂L/∂Ŵ_nk               (straight-through estimator: sign′ ≡ 1),
 *   ∂L/∂A = ∂L/∂Ŵ · Bᵀ,   ∂L/∂B = Aᵀ · ∂L/∂Ŵ.
 * The bias is fixed.
 */
import { alloc, type Arr, type Gemm } from './gemm.js';

export class BinaryLinear<T extends Arr = Float32Array> {
  /** gradients accumulated since the last optimizer step */
  readonly gLatent: T;
  readonly gAlpha: T;
  readonly gA: T;
  readonly gB: T;
  private weight: T | undefined;

  constructor(
    readonly rows: number,
    readonly cols: number,
    readonly latent: T,
    readonly alpha: T,
    readonly rank: number,
    readonly lrA: T,
    readonly lrB: T,
    readonly bias: Arr | undefined,
  ) {
    if (latent.length !== rows * cols || alpha.length !== rows) throw new RangeError(`BinaryLinear: latent ${latent.length} / alpha ${alpha.length} for [${rows}, ${cols}]`);
    if (lrA.length !== rows * rank || lrB.length !== rank * cols) throw new RangeError(`BinaryLinear: low-rank factors ${lrA.length} / ${lrB.length} for rank ${rank}`);
    this.gLatent = alloc(latent, latent.length);
    this.gAlpha = alloc(alpha, rows);
    this.gA = alloc(lrA, lrA.length);
    this.gB = alloc(lrB, lrB.length);
  }

  /** Ŵ from the current parameters (cached until `invalidate`). */
  materialize(): T {
    if (this.weight !== undefined) return this.weight;
    const { rows, cols, rank } = this;
    const w = alloc(this.latent, rows * cols);
    for (let n = 0; n < rows; n++) {
      const a = this.alpha[n]!;
      const o = n * cols;
      for (let k = 0; k < cols; k++) w[o + k] = this.latent[o + k]! >= 0 ? a : -a;
      for (let r = 0; r < rank; r++) {
        const an = this.lrA[n * rank + r]!;
        if (an === 0) continue;
        const bo = r * cols;
        for (let k = 0; k < cols; k++) w[o + k] = w[o + k]! + an * this.lrB[bo + k]!;
      }
    }
    this.weight = w;
    return w;
  }

  /** Call after the parameters changed. */
  invalidate(): void {
    this.weight = undefined;
  }

  async forward<U extends Arr>(x: U, tokens: number, gemm: Gemm): Promise<U> {
    const y = await gemm.nt(x, this.materialize(), tokens, this.cols, this.rows);
    if (this.bias !== undefined) {
      for (let t = 0; t < tokens; t++) for (let n = 0; n < this.rows; n++) y[t * this.rows + n] = y[t * this.rows + n]! + this.bias[n]!;
    }
    return y;
  }

  /** Accumulates the parameter gradients; returns ∂L/∂x. */
  async backward<U extends Arr>(x: U, g: U, tokens: number, gemm: Gemm): Promise<U> {
    const { rows, cols, rank } = this;
    const dx = await gemm.nn(g, this.materialize(), tokens, rows, cols);
    const dw = await gemm.tn(g, x, rows, tokens, cols); // Gᵀ X [N, K]
    for (let n = 0; n < rows; n++) {
      const a = this.alpha[n]!;
      const o = n * cols;
      let ga = 0;
      for (let k = 0; k < cols; k++) {
        const d = dw[o + k]!;
        ga += this.latent[o + k]! >= 0 ? d : -d;
        this.gLatent[o + k] = this.gLatent[o + k]! + a * d;
      }
      this.gAlpha[n] = this.gAlpha[n]! + ga;
    }
    if (rank > 0) {
      for (let n = 0; n < rows; n++) {
        for (let r = 0; r < rank; r++) {
          let s = 0;
          for (let k = 0; k < cols; k++) s += dw[n * cols + k]! * this.lrB[r * cols + k]!;
          this.gA[n * rank + r] = this.gA[n * rank + r]! + s;
        }
      }
      for (let n = 0; n < rows; n++) {
        for (let r = 0; r < rank; r++) {
          const an = this.lrA[n * rank + r]!;
          if (an === 0) continue;
          for (let k = 0; k < cols; k++) this.gB[r * cols + k] = this.gB[r * cols + k]! + an * dw[n * cols + k]!;
        }
      }
    }
    return dx;
  }

  zeroGrad(): void {
    this.gLatent.fill(0);
    this.gAlpha.fill(0);
    this.gA.fill(0);
    this.gB.fill(0);
  }

  /** Multiplies the whole weight by p (α and A): folds a magnitude-alignment factor. */
  scaleBy(p: number): void {
    for (let n = 0; n < this.rows; n++) this.alpha[n] = this.alpha[n]! * p;
    for (let i = 0; i < this.lrA.length; i++) this.lrA[i] = this.lrA[i]! * p;
    this.invalidate();
  }

  /** sign⁺(Λ) as ±1 bytes. */
  signs(): Int8Array {
    const s = new Int8Array(this.rows * this.cols);
    for (let i = 0; i < s.length; i++) s[i] = this.latent[i]! >= 0 ? 1 : -1;
    return s;
  }
}
