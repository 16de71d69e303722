/**
 * The fake-quantization recipe: the contract between `bwq quantize` (which writes it into
 * OUT_DIR/config.json as `quantization_config`) and the forward-pass graph builder used by
 * `bwq eval` and by calibration (which inserts the quantizers and rotations it describes).
 *
 * Semantics (all per token = per row of the last axis unless stated):
 *
 *   int quantizer, b bits, symmetric:
 *     qmax = 2^(b-1) - 1
 *     s    = clipRatio * max_j |x_j| / qmax           (s = 1 where max is 0)
 *     q(x) = clamp(round_half_even(x / s), -qmax, qmax) * s
 *
 *   ternary quantizer (BWTA, "tiny values projected to zero"):
 *     Δ    = thresholdRatio * mean_j |x_j|
 *     t_j  = sign(x_j) if |x_j| > Δ else 0
 *     s    = mean of |x_j| over { j : |x_j| > Δ }       (s = 0 where that set is empty)
 *     q(x) = s * t
 *
 *   binary quantizer (sign with mean-absolute scale; zero maps to +1):
 *     s = mean_j |x_j|,  q(x) = s * sign⁺(x)
 *
 *   The attention probabilities' quantizer takes its means over the row's unmasked keys or over the whole
 *   window (AttentionRecipe.probsRow, ProbsRow below).
 *
 *   Kronecker online rotation of an input x of length n = a*b (R = R1 ⊗ R2):
 *     x' = x R, computed as X' = R1ᵀ X R2 where X is x reshaped row-major to (a, b)
 *     (equivalently x'[i*b + j] = Σ_{p,q} x[p*b + q] R1[p, i] R2[q, j]).
 *   The matching weight W (out × n) stored in the simulated model is already W R (fused),
 *   so y = x Wᵀ = (x R)(W R)ᵀ because R Rᵀ = I.
 *
 *   Kronecker rotation with a remainder block (kind kronecker_remainder), n = a*b + r, R = diag(R1 ⊗ R2, R3):
 *     x'[0, a*b) = x[0, a*b) (R1 ⊗ R2) as above;  x'[a*b + j] = Σ_q x[a*b + q] R3[q, j]  (R3 [r, r]).
 *   Used for widths without a balanced factorisation (src/quant/kronecker.ts kroneckerSplit).
 */

export type ActivationQuantizer =
  | { readonly kind: 'none' }
  | { readonly kind: 'int'; readonly bits: number; readonly clipRatio: number }
  | { readonly kind: 'ternary'; readonly thresholdRatio: number }
  | { readonly kind: 'binary' };

export interface KroneckerRotation {
  /** 'kronecker': R = R1 ⊗ R2; 'kronecker_remainder': R = diag(R1 ⊗ R2, R3) (r3 present exactly then). */
  readonly kind: 'kronecker' | 'kronecker_remainder';
  /** Tensor name (in the simulated model's safetensors) of R1, shape [a, a]. */
  readonly r1: string;
  /** Tensor name of R2, shape [b, b]. */
  readonly r2: string;
  /** Tensor name of R3, shape [r, r] (kronecker_remainder only). */
  readonly r3?: string;
}

/** The tensor names of a rotation: [r1, r2] or [r1, r2, r3]. */
export function rotationTensorNamesOf(r: KroneckerRotation): string[] {
  return r.r3 === undefined ? [r.r1, r.r2] : [r.r1, r.r2, r.r3];
}

/** What happens to the input of one linear layer before its matmul. */
export interface LinearInputRecipe {
  /** Applied first, online (not fusable into the previous op). */
  readonly rotation?: KroneckerRotation;
  /** Applied after the rotation. */
  readonly quantizer: ActivationQuantizer;
}

/**
 * Which entries of a causal probability row the probs quantizer's row statistics are taken over (the ternary
 * threshold Δ = thresholdRatio · mean|p| and the binary scale; the int scale uses max|p|, the same either way):
 *
 *   'unmasked': the query's unmasked keys only. Query i (at position i of the sequence, the cached positions
 *               included) sees keys lo_i … i, lo_i = max(0, i − slidingWindow + 1) (0 without a sliding window), so
 *               mean|p| = 1 / (i − lo_i + 1): the same row in any window length, prefill or decoding from a KV
 *               cache. Written by `bwq quantize` since issue #16.
 *   'window':   the whole row of the forward call's window, masked zeros included (mean|p| = 1/S for a window of
 *               S tokens; decoding: the cached length + 1). Recipes written before issue #16 have no `probsRow`
 *               and mean this.
 * Masked entries stay 0 either way.
 */
export type ProbsRow = 'unmasked' | 'window';

/** Quantizers on the operands of the attention matmuls, per head and per token (row). */
export interface AttentionRecipe {
  /** Q in Q·Kᵀ (after RoPE), per query row of each head. */
  readonly query: ActivationQuantizer;
  /** K in Q·Kᵀ (after RoPE), per key row of each head. */
  readonly key: ActivationQuantizer;
  /** Softmax probabilities P in P·V, per query row. */
  readonly probs: ActivationQuantizer;
  /** V in P·V, per value row of each head. */
  readonly value: ActivationQuantizer;
  /** The entries the probs quantizer's statistics are taken over; absent = 'window' (recipes before issue #16). */
  readonly probsRow?: ProbsRow;
}

/** The four operand quantizers of an AttentionRecipe. */
export const ATTENTION_OPERANDS = ['query', 'key', 'value', 'probs'] as const;

/** Whether the probs quantizer's statistics are taken over the unmasked keys only (ProbsRow 'unmasked'). */
export function probsOverUnmasked(attention: AttentionRecipe | undefined): boolean {
  return attention?.probsRow === 'unmasked';
}

/** The linear layers of one decoder block, by role. */
export type LinearRole = 'q_proj' | 'k_proj' | 'v_proj' | 'o_proj' | 'gate_proj' | 'up_proj' | 'down_proj';

export interface LayerRecipe {
  /** Keyed by linear role; roles missing here run unquantized. */
  readonly linears: Partial<Record<LinearRole, LinearInputRecipe>>;
  /** Absent: attention matmuls run in float. */
  readonly attention?: AttentionRecipe;
}

/** Quantization methods: bwq's own (bwta, bwla, rtn) and the peer baselines BiLLM and ARB-LLM_RC (billm, arb). */
export type QuantMethod = 'bwta' | 'bwla' | 'rtn' | 'billm' | 'arb';

/** Methods whose weights are not sign × row scale (+ low rank): bwq writes only their simulated model (docs/FORMATS.md). */
export const SIMULATED_ONLY_METHODS: readonly QuantMethod[] = ['billm', 'arb'];

/** `quantization_config` in OUT_DIR/config.json. */
export interface QuantizationConfig {
  readonly quant_method: 'bwq';
  readonly bwq_version: string;
  readonly method: QuantMethod;
  readonly w_bits: 1;
  /** 'ternary' for BWTA, or an integer bit width (e.g. 6, 8, 16 = no activation quantization). */
  readonly a_bits: number | 'ternary';
  /** One entry per decoder layer, index = layer number. */
  readonly layers: readonly LayerRecipe[];
  /** Relative path (inside OUT_DIR) of the packed-weights safetensors file; see docs/FORMATS.md.
   *  Absent for SIMULATED_ONLY_METHODS, which have no packed model. */
  readonly packed_weights?: string;
  /** Free-form record of the settings used (nsamples, seqlen, rank, seed, calib file, …). */
  readonly settings: Readonly<Record<string, string | number | boolean>>;
}
