// Kernels of the reconstruction's device training step (native/runtime/recon_trainer.h), forward and backward of
// one decoder block's ops. Each launcher names its TypeScript reference in src/quant/reconstruct/; the arithmetic
// follows it (per-row statistics and sums in double, float32 storage) but not bit for bit: the products run on
// cuBLAS and the reductions in another order, so a step agrees with the reference within float32 rounding
// (test/quant/reconstruct/gpu-check-device-step.mjs). Device pointers, one stream; each launcher returns cudaGetLastError().
#ifndef BWQ_OPS_RECON_CUH
#define BWQ_OPS_RECON_CUH

#include <cuda_runtime.h>
#include <stddef.h>

#include <string>

#include "../../runtime/recon_trainer.h"

namespace bwq_cuda {
struct CublasApi;
}

namespace bwq_recon {

using bwq::rt::TrainQ;

// Causal rows (act-quant.ts CausalRows): row r is query i = r mod period, its visited entries lo_i .. i
// (lo_i = max(0, i - window + 1) with a window > 0); period 0 = dense rows (every entry visited).
struct Rows {
  int period = 0, window = 0;
  bool unmasked = false;  // the means divide by the visited count (else by cols)
};

// rmsnorm.ts: y = w * x * r, r = 1/sqrt(mean(x^2) + eps) (inv[r] kept, double).
cudaError_t rms_norm_forward(const float *x, int rows, int cols, const float *w, double eps, float *y, double *inv,
                             cudaStream_t st);
// rmsnorm.ts rmsNormBackward: dx (=|+=) r*w*g - r^3*x*(sum_j w_j g_j x_j)/cols.
cudaError_t rms_norm_backward(const float *x, const float *g, int rows, int cols, const float *w, const double *inv,
                              float *dx, bool accumulate, cudaStream_t st);
// rope.ts: in place on x [batch*seq, heads*head_dim], token t = row mod seq; sign -1 = the backward.
cudaError_t rope_rotate(float *x, int rows, int seq, int heads, int head_dim, int half, const float *cos_t,
                        const float *sin_t, int sign, cudaStream_t st);
// [batch, seq, heads, hd] <-> [batch, heads, seq, hd] (attention.ts gather / scatter).
cudaError_t to_heads(const float *x, int batch, int seq, int heads, int hd, float *y, cudaStream_t st);
cudaError_t from_heads(const float *x, int batch, int seq, int heads, int hd, float *y, cudaStream_t st);
// act-quant.ts quantForward, out (=|+=) weight * q(x) over the visited entries (others 0 when not accumulating);
// stat / scale per row (double).
cudaError_t quant_forward(TrainQ q, double param, const float *x, int rows, int cols, Rows rr, double weight,
                          bool accumulate, float *out, double *stat, double *scale, cudaStream_t st);
// act-quant.ts quantBackward: dx += weight * straight-through gradient; grad_slot += weight * dparam (one
// deterministic reduction over the rows' shares, `row_share` [rows] scratch).
cudaError_t quant_backward(TrainQ q, double param, const float *x, const float *g, int rows, int cols, Rows rr,
                           const double *stat, const double *scale, double weight, float *dx, double *row_share,
                           double *grad_slot, cudaStream_t st);
// slot = sum |x| (double; deterministic).
cudaError_t sum_abs(const float *x, size_t n, double *partial, double *slot, cudaStream_t st);
// attention.ts softmax: p[r, j] = exp(c*s - max)/sum over the visited keys of row r (query r mod seq), 0 elsewhere.
cudaError_t causal_softmax(const float *s, int rows, int seq, int window, double scaling, float *p, cudaStream_t st);
// attention.ts backward: ds = p * (dp - sum_j dp_j p_j) * scaling over the visited keys, 0 elsewhere.
cudaError_t causal_softmax_backward(const float *p, const float *dp, int rows, int seq, int window, double scaling,
                                    float *ds, cudaStream_t st);
// swiglu.ts: m = silu(gate) * up; backward dgate, dup.
cudaError_t swiglu_forward(const float *gate, const float *up, size_t n, float *m, cudaStream_t st);
cudaError_t swiglu_backward(const float *gate, const float *up, const float *g, size_t n, float *dgate, float *dup,
                            cudaStream_t st);
// binary-linear.ts materialize: w (=|+=) alpha[n] * sign+(latent[n, k]).
cudaError_t binary_weight(const float *latent, const float *alpha, int rows, int cols, bool accumulate, float *w,
                          cudaStream_t st);
// binary-linear.ts backward's passes over dW: g_latent = alpha * dW, g_alpha[n] = sum_k sign+(latent) dW.
cudaError_t binary_weight_grad(const float *dw, const float *latent, const float *alpha, int rows, int cols,
                               float *g_latent, float *g_alpha, cudaStream_t st);
// train.ts: d = out - y, g = 2d/n, slot = sum d^2 (double, deterministic); g may be null (loss only).
cudaError_t mse(const float *out, const float *y, size_t n, float *g, double *partial, double *slot, cudaStream_t st);
// adam.ts: m, v, param updated with step = lr/c1, rc2 = 1/sqrt(c2) (double arithmetic, float32 storage).
cudaError_t adam(float *param, const float *grad, float *m, float *v, size_t n, double step, double rc2, double b1,
                 double b2, double eps, cudaStream_t st);
// Slots of partial sums a deterministic reduction needs.
constexpr int kPartials = 1024;

// recon_block.cu: the device trainer of `s` on stream `st` with cuBLAS `blas` (its `handle` bound to `st`);
// nullptr and `err` when it cannot be made (device memory). cuda_backend.cu's Backend::recon_trainer.
bwq::rt::ReconTrainer *make_trainer(const bwq::rt::ReconSpec &s, cudaStream_t st, const bwq_cuda::CublasApi &blas,
                                    void *handle, int max_smem, std::string &err);

}  // namespace bwq_recon

#endif
