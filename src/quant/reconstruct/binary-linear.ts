/**
 * A binarized linear with learnable parts (nn.Linear layout [N, K], y = x Ŵᵀ + b):
 *
 *   Ŵ = diag(α)·sign⁺(Λ) + A·B      (Λ latent weights, α per-row scales, A [N, r], B [r, K] low-rank; r may be 0)
 *
 * Backward for ∂L/∂y = G and the (quantized) input X [T, K]:
 *   ∂L/∂X = G Ŵ,   ∂L/∂Ŵ = Gᵀ X,
 *   ∂L/∂α_n = Σ_k ∂L/∂Ŵ_nk · sign⁺(Λ_nk),
 *   ∂L/∂Λ_nk = α_n · ∂L/∂Ŵ_nk               (straight-through estimator: sign′ ≡ 1),
 *   ∂L/∂A = ∂L/∂Ŵ · Bᵀ = Gᵀ (X Bᵀ),   ∂L/∂B = Aᵀ · ∂L/∂Ŵ = (G A)ᵀ X
 * (the low-rank gradients in the factored form: four GEMMs of O(T·(N + K)·r) instead of two passes of O(N·K·r)
 * over ∂L/∂Ŵ). The bias is fixed. Ŵ is built in one pass per row (the rank-r term summed per element).
 */
import { alloc, type Arr, type Gemm } from './gemm.js';

export class BinaryLinear<T extends Arr = Float32Array> {
  /** gradients accumulated since the last optimizer step */
  readonly gLatent: T;
  readonly gAlpha: T;
  readonly gA: T;
  readonly gB: T;
  private weight: T | undefined;
  /** scratch of `materialize`: offsets of the rows of B with a non-zero A entry */
  private readonly rowOf: Int32Array;

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
    this.rowOf = new Int32Array(rank);
  }

  /** Ŵ from the current parameters (cached until `invalidate`). */
  materialize(): T {
    if (this.weight !== undefined) return this.weight;
    const { rows, cols, rank } = this;
    const w = alloc(this.latent, rows * cols);
    const latent = this.latent;
    const lrB = this.lrB;
    const an = new Float64Array(rank);
    for (let n = 0; n < rows; n++) {
      const a = this.alpha[n]!;
      const o = n * cols;
      let used = 0;
      for (let r = 0; r < rank; r++) {
        const v = this.lrA[n * rank + r]!;
        if (v !== 0) an[used++] = v;
      }
      if (used === 0) {
        for (let k = 0; k < cols; k++) w[o + k] = latent[o + k]! >= 0 ? a : -a;
        continue;
      }
      // rows of B whose A entry is 0 add nothing; `rowOf` maps the kept entries to their rows
      let j = 0;
      for (let r = 0; r < rank; r++) if (this.lrA[n * rank + r]! !== 0) this.rowOf[j++] = r * cols;
      for (let k = 0; k < cols; k++) {
        let low = 0;
        for (let i = 0; i < used; i++) low += an[i]! * lrB[this.rowOf[i]! + k]!;
        w[o + k] = (latent[o + k]! >= 0 ? a : -a) + low;
      }
    }
    this.weight = w;
    return w;
  }

  /**
   * Ŵ with its low-rank term A·B as one GEMM of `gemm` (on the device when the products go there) and one pass
   * for the signs, instead of `materialize`'s r multiply-adds per weight in JavaScript; cached like it.
   */
  async materializeWith(gemm: Gemm): Promise<T> {
    if (this.weight !== undefined) return this.weight;
    if (this.rank === 0) return this.materialize();
    const { rows, cols } = this;
    const w = await gemm.nn(this.lrA, this.lrB, rows, this.rank, cols); // A·B [N, K], a new array
    const latent = this.latent;
    for (let n = 0; n < rows; n++) {
      const a = this.alpha[n]!;
      const o = n * cols;
      for (let k = 0; k < cols; k++) w[o + k] = w[o + k]! + (latent[o + k]! >= 0 ? a : -a);
    }
    this.weight = w;
    return w;
  }

  /** Call after the parameters changed. */
  invalidate(): void {
    this.weight = undefined;
  }

  async forward<U extends Arr>(x: U, tokens: number, gemm: Gemm): Promise<U> {
    const y = await gemm.nt(x, await this.materializeWith(gemm), tokens, this.cols, this.rows);
    if (this.bias !== undefined) {
      for (let t = 0; t < tokens; t++) for (let n = 0; n < this.rows; n++) y[t * this.rows + n] = y[t * this.rows + n]! + this.bias[n]!;
    }
    return y;
  }

  /** Accumulates the parameter gradients; returns ∂L/∂x. */
  async backward<U extends Arr>(x: U, g: U, tokens: number, gemm: Gemm): Promise<U> {
    const { rows, cols, rank } = this;
    const dx = await gemm.nn(g, await this.materializeWith(gemm), tokens, rows, cols);
    const dw = await gemm.tn(g, x, rows, tokens, cols); // Gᵀ X [N, K]
    const latent = this.latent;
    const gLatent = this.gLatent;
    for (let n = 0; n < rows; n++) {
      const a = this.alpha[n]!;
      const o = n * cols;
      let ga = 0;
      for (let k = 0; k < cols; k++) {
        const d = dw[o + k]!;
        ga += latent[o + k]! >= 0 ? d : -d;
        gLatent[o + k] = gLatent[o + k]! + a * d;
      }
      this.gAlpha[n] = this.gAlpha[n]! + ga;
    }
    if (rank > 0) {
      const xb = await gemm.nt(x, this.lrB, tokens, cols, rank); // X Bᵀ [T, r]
      const gA = await gemm.tn(g, xb, rows, tokens, rank); // Gᵀ (X Bᵀ) [N, r]
      const ga = await gemm.nn(g, this.lrA, tokens, rows, rank); // G A [T, r]
      const gB = await gemm.tn(ga, x, rank, tokens, cols); // (G A)ᵀ X [r, K]
      for (let i = 0; i < gA.length; i++) this.gA[i] = this.gA[i]! + gA[i]!;
      for (let i = 0; i < gB.length; i++) this.gB[i] = this.gB[i]! + gB[i]!;
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
