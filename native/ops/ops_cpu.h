// CPU implementations of the runtime's ops (native/runtime/backend.h states each op's semantics). Each
// family's file holds the plain per-row loop, which is the reference the other backends are checked
// against, and runs it over rows on the CPU kernels' thread pool. Hot loops are compiled for AVX-512,
// AVX2+FMA and baseline x86-64 (BWQ_CLONES: GCC picks one at load time by cpuid).
#ifndef BWQ_OPS_CPU_H
#define BWQ_OPS_CPU_H

#include <functional>
#include <string>

#include "../runtime/backend.h"

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__) && !defined(__clang__)
#define BWQ_CLONES __attribute__((target_clones("avx512f", "avx2,fma", "default")))
#else
#define BWQ_CLONES
#endif

namespace bwq {
// The CPU kernels' thread pool (native/src/cpu.cpp). Not re-entrant: ops call it only at their top level.
void parallel_for(int ntasks, const std::function<void(int)> &fn);
int pool_threads();

namespace cpu {
using namespace rt;

// Splits [0, rows) into about 4 chunks per thread (at least min_rows rows each) and runs fn(r0, r1) on them.
void parallel_rows(int rows, int min_rows, const std::function<void(int, int)> &fn);

void embed(const int32_t *ids, int rows, const void *table, DType dtype, int hidden, float *out);
void rms_norm(const float *x, int rows, int cols, const float *w, float eps, float *y);
void rope(float *x, int rows, int heads, int head_dim, const float *inv_freq, int half, const int32_t *positions);
// y[r] = x[r] diag(R1 (x) R2, R3), row width a*b + rem (rem = 0: R1 (x) R2, r3 unused)
void kron_rotate(const float *x, int rows, int a, int b, int rem, const float *r1, const float *r2, const float *r3,
                 float *tmp, float *y);

// One row of a quantizer: codes as int32 (INT up to 24 bits, TERNARY, BINARY), the row's scale returned.
float quantize_row(const float *x, int cols, const Quantizer &q, int32_t *codes);
void quantize(const float *x, int rows, int cols, const Quantizer &q, Codes &codes, float *x_hat);

void packed_linear(const Codes &codes, int rows, const PackedWeights &w, const float *wscale, int32_t *acc, float *y);
void float_binary_linear(const float *x, int rows, const PackedWeights &w, const float *wscale, float *y);
void gemm(const float *a, int m, int lda, const FloatWeights &w, float *c, int ldc, bool accumulate);
// h[cols, cols] += x^T x (x [rows, cols]): x transposed once, then gemm with accumulate (threads over h's rows).
void gram(const float *x, int rows, int cols, float *h);
// One thread's block of gemm: c[0:m, 0:nn] (+)= a[0:m, 0:k] . w[0:nn, 0:k] for float32 w (row stride ldw).
void panel_gemm(const float *a, int m, int lda, const float *w, int ldw, int nn, int k, float *c, int ldc,
                bool accumulate);
// c[0:m, 0:n] (+)= a[0:m, 0:k] . b[0:k, 0:n] for row-major b (row stride ldb).
void panel_gemm_nn(const float *a, int m, int lda, const float *b, int ldb, int n, int k, float *c, int ldc,
                   bool accumulate);
// y[i] = exp(x[i]) in float32 (Cephes-style range reduction and polynomial, within 2 ulp; vectorized).
void exp_f32(const float *x, float *y, int n);

void add_bias(float *y, int rows, int cols, const float *bias);
void add(float *a, const float *b, size_t count);
void gated_act(float *gate, const float *up, size_t count, Act act);

void kv_store(KvLayer &kv, const float *k, const float *v, int batch, int t, int pos0, const Quantizer &key,
              const Quantizer &value);
void attention(const float *q, const KvLayer &kv, const AttentionShape &shape, const AttentionRecipe &r, float *ctx);

void nll_rows(const float *logits, int rows, int vocab, const int32_t *targets, double *nll);

// PSP's passes over a binarized weight W [rows, cols] (native/ops/binarize/binarize_cpu.cpp; reference
// src/quant/psp.ts jsWeightPasses, equal bit for bit). dw: the column weights d (1 for D = I), d2 = d².
//   psp_b_step:     t = fl(w − dense/dw); signs = sign⁺(t); scales[r] = fl(Σ d2|t| / Σ d2)
//   psp_residual:   e = w − s·b; residual = fl(e·dw); row_half[r] = Σ (residual − dense)², row_plain[r] = Σ e²
//   row_sq_dist:    row_sum[r] = Σ_c (a − b)²
//   binary_lowrank_weight: out = fl(s·b + Σ_k a_rk·b_kc), the sum in float64 in k order
void psp_b_step(const float *w, const float *dense, const double *dw, const double *d2, int rows, int cols, int8_t *signs,
                float *scales);
void psp_residual(const float *w, const int8_t *signs, const float *scales, const double *dw, const float *dense, int rows,
                  int cols, float *residual, double *row_half, double *row_plain);
void row_sq_dist(const float *a, const float *b, int rows, int cols, double *row_sum);
void binary_lowrank_weight(const int8_t *signs, const float *scales, const float *lr_a, const float *lr_b, int rank,
                           int rows, int cols, float *out);
// The column-block compensation's passes (src/quant/column-blocks.ts):
//   subtract_f32:  dst = fl(dst − src)
//   transpose_f32: out [cols, rows] = x [rows, cols]ᵀ
//   block_errors:  q[r·ldq + c] = qb[r·width + c]; et[c·rows + r] = fl(fl(bt[c·rows + r] − qb[r·width + c]) / diag[c])
void subtract_f32(float *dst, const float *src, size_t n);
void transpose_f32(const float *x, int rows, int cols, float *out);
void block_errors(const float *bt, const float *qb, const double *diag, int rows, int width, float *q, int ldq, float *et);
//   sign_block:    b = sign⁺(block[r·width + c]); signs[r·ld + start + c] = b; out[r·width + c] = b·scales[r]
void sign_block(const float *block, int rows, int width, const float *scales, int8_t *signs, int ld, int start, float *out);
// The group's per-row statistics (src/quant/layer-quant.ts), float64 sums in column order:
//   scale_fit:     num[r] = Σ_c bh·(w − low) (low null: w), den[r] = Σ_c bh·b
//   binarization_rows: err[r] = max(0, Σ w² − cols·(Σ|w|/cols)²), energy[r] = Σ w²
//   pack_signs:    bit j of word u of row r = 1 iff signs[r, 32u + j] > 0 (bwq-packed-v1)
void scale_fit(const float *bh, const float *w, const float *low, const int8_t *signs, int rows, int cols, double *num,
               double *den);
void binarization_rows(const float *w, int rows, int cols, double *err, double *energy);
void pack_signs(const int8_t *signs, int rows, int cols, uint32_t *out);

// The block-wise reconstruction's activation quantizers (native/ops/actquant/actquant_cpu.cpp; reference
// src/quant/reconstruct/act-quant.ts quantForward / quantBackward, equal bit for bit), per row of `cols`:
struct ActQuant {
  enum Kind : int32_t { INT = 1, TERNARY = 2, LEVELS = 3 } kind = TERNARY;
  int32_t bits = 0;    // INT
  int32_t levels = 0;  // LEVELS (odd, >= 3)
};
// Causal softmax rows: row r is query i = r mod period with the unmasked keys lo_i..i (lo_i = max(0, i - window + 1)
// for window > 0, else 0); the means divide by the unmasked count (unmasked) or by cols. period 0: dense rows.
struct ActRows {
  int32_t period = 0, window = 0;
  bool unmasked = false;
};
// out (zeroed by the caller) = q(x); stat / scale [rows] the per-row constants the backward takes.
void act_quant_forward(const ActQuant &q, double param, const float *x, int rows, int cols, const ActRows &causal,
                       float *out, double *stat, double *scale);
// dx += weight·∂L/∂x (straight-through) for g = ∂L/∂q; row_grad[r] = row r's share of ∂L/∂param before `weight`.
void act_quant_backward(const ActQuant &q, double param, const float *x, const float *g, int rows, int cols,
                        const ActRows &causal, const double *stat, const double *scale, double weight, float *dx,
                        double *row_grad);

// Householder QR of a [m, n] row-major (m ≥ n): q [m, n] with orthonormal columns, r [n, n] upper with a non-negative
// diagonal (native/ops/linalg/qr_cpu.cpp; reference src/linalg/qr.ts, equal bit for bit).
void householder_qr(const double *a, int m, int n, double *q, double *r);

// The calibration's fake activation quantizers (reference src/quant/quantizers.ts quantizeRowsInto, equal bit for
// bit): kind 0 none, 1 int (bits, param = clip ratio), 2 ternary (param = threshold ratio), 3 binary; out = q(x) per
// row of `cols` (out may be x).
void quantize_rows(int kind, int bits, double param, const float *x, int rows, int cols, float *out);

// The OKT of BWLA (native/ops/okt/okt_cpu.cpp, Backend::learn_okt): "" on success, else a one-line message.
std::string learn_okt(const bwq_okt_problem &p, bwq_okt_result &r);
}  // namespace cpu
}  // namespace bwq

#endif
