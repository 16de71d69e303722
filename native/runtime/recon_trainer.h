// The block-wise reconstruction's training step held on a device (issue #16): one decoder block's student —
// latent weights, scales, low-rank factors and their Adam moments — resident in the backend's memory, and one
// call per step that runs the block's forward, its backward and Adam there. The TypeScript modules of
// src/quant/reconstruct/ are the reference: every kernel of native/ops/recon/ names the function it implements,
// and test/quant/reconstruct/gpu-check-device-step.mjs compares a step against them. docs/ALGORITHMS.md "Block-wise
// reconstruction" has the equations.
#ifndef BWQ_RUNTIME_RECON_TRAINER_H
#define BWQ_RUNTIME_RECON_TRAINER_H

#include <stdint.h>

#include <string>

namespace bwq {
namespace rt {

// A quantizer of the reconstruction (src/quant/reconstruct/act-quant.ts TrainQuantizer); arg: bits (INT) or
// levels (LEVELS).
enum class TrainQKind : int32_t { NONE = 0, INT = 1, TERNARY = 2, LEVELS = 3 };
struct TrainQ {
  TrainQKind kind = TrainQKind::NONE;
  int32_t arg = 0;
};

// The block's activation sites, in src/quant/reconstruct/block.ts allSites() order.
enum ReconSite : int { SITE_ATTN_IN = 0, SITE_ATTN_OUT, SITE_MLP_IN, SITE_MLP_OUT, SITE_QUERY, SITE_KEY, SITE_VALUE,
                       SITE_PROBS, RECON_SITES };
// The block's linears, in BLOCK_LINEAR_ROLES order (src/quant/reconstruct/student.ts).
enum ReconLinear : int { LIN_Q = 0, LIN_K, LIN_V, LIN_O, LIN_GATE, LIN_UP, LIN_DOWN, RECON_LINEARS };

// One site at one step (quant-site.ts QuantSite.forward's point): out = lambda*p_cur*q_cur(x) (+ (1-lambda)*
// p_prev*q_prev(x) while blending). With align, a NaN p is computed on this step's input, p_i = sum|q_last(x)| /
// sum|q_i(x)| (1 for the last stage), and returned; without align p = 1.
struct ReconSitePoint {
  bool present = false;  // false: the site passes its input through (no attention recipe)
  TrainQ cur, prev, last;
  bool blend = false;
  bool cur_is_last = false;
  double lambda = 1, param = 0;
  bool align = false;
  double p_cur = 1, p_prev = 1;
};

struct ReconLinearSpec {
  int rows = 0, cols = 0, rank = 0;
  const float *latent = nullptr, *alpha = nullptr, *lr_a = nullptr, *lr_b = nullptr;  // host, copied
  const float *bias = nullptr;                                                          // fixed; may be null
  double lr_latent = 0, lr_alpha = 0, lr_lowrank_a = 0, lr_lowrank_b = 0;               // Adam base rates
};
// BWLA's fixed online rotation of a site's input (reconstruct/rotation.ts): K = a*b + rem.
struct ReconRotationSpec {
  int a = 0, b = 0, rem = 0;  // a = 0: none
  const float *r1 = nullptr, *r2 = nullptr, *r3 = nullptr;
};
struct ReconSpec {
  int hidden = 0, intermediate = 0, heads = 0, kv_heads = 0, head_dim = 0;
  double eps = 0;
  int sliding_window = 0;  // 0: plain causal
  int rope_half = 0;       // 0: no RoPE; else cos/sin tables [seq, rope_half]
  const float *rope_cos = nullptr, *rope_sin = nullptr;
  const float *input_norm = nullptr, *post_norm = nullptr;
  const float *q_norm = nullptr, *k_norm = nullptr;  // Qwen3's per-head norms; both or neither
  bool probs_unmasked = false;                       // AttentionRecipe.probsRow 'unmasked'
  int max_batch = 1, seq = 0;
  ReconLinearSpec linears[RECON_LINEARS];
  ReconRotationSpec rotations[4];  // by site SITE_ATTN_IN .. SITE_MLP_OUT
};

// Output of a step: [0] the loss (output MSE), [1 + s] site s's parameter gradient, [1 + 8 + s] its p_cur and
// [1 + 16 + s] its p_prev as used (computed when NaN was passed).
constexpr int RECON_STEP_OUT = 1 + 3 * RECON_SITES;

struct ReconTrainer {
  virtual ~ReconTrainer() = default;
  // One Adam step on `batch` windows: x the student's inputs, y the teacher's outputs, host [batch, seq, hidden].
  // The weights' Adam rates are the spec's times lr_scale. "" or a one-line error.
  virtual std::string step(const float *x, const float *y, int batch, const ReconSitePoint *sites, double lr_scale,
                           double *out) = 0;
  // sum over the entries of (block(x) - y)^2 at the given points (no step).
  virtual std::string loss(const float *x, const float *y, int batch, const ReconSitePoint *sites, double *sum_sq) = 0;
  // Linear `linear`'s parameters (what = 0) or the last step's gradients (what = 1) into host arrays of the spec's
  // sizes (a, b ignored at rank 0).
  virtual std::string read(int linear, int what, float *latent, float *alpha, float *a, float *b) = 0;
};

}  // namespace rt
}  // namespace bwq

#endif
