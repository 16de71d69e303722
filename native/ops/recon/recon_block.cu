// The reconstruction's training step on the GPU (native/runtime/recon_trainer.h): one decoder block's student
// resident on the device, forward, backward and Adam per call, written top to bottom as the TypeScript reference
// src/quant/reconstruct/block.ts (forward / backward), attention.ts, binary-linear.ts, quant-site.ts and train.ts.
// Products on cuBLAS (FP32), the rest in the kernels of recon.cu.
#include <math.h>
#include <string.h>

#include <algorithm>
#include <string>
#include <vector>

#include "../gemm/packed_gemm.cuh"
#include "../ops_cuda.cuh"
#include "recon.cuh"

namespace bwq_recon {
namespace {

using namespace bwq::rt;  // the trainer's interface, the site and linear indices

constexpr int kOpN = 0, kOpT = 1, kR32F = 0, kCompute32F = 68, kGemmDefault = -1;

struct Linear {
  int rows = 0, cols = 0, rank = 0;
  float *latent = nullptr, *alpha = nullptr, *a = nullptr, *b = nullptr, *bias = nullptr;
  float *w = nullptr;  // the materialized weight of the current parameters
  float *g_latent = nullptr, *g_alpha = nullptr, *g_a = nullptr, *g_b = nullptr;
  float *m[4] = {}, *v[4] = {};  // Adam moments of latent, alpha, a, b
  double lr[4] = {};
};

struct Rotation {
  int a = 0, b = 0, rem = 0;
  float *r1 = nullptr, *r2 = nullptr, *r3 = nullptr;     // forward factors
  float *r1t = nullptr, *r2t = nullptr, *r3t = nullptr;  // transposed: the backward
};

// Per-row constants of one site's forward (cur and prev stages).
struct SiteRows {
  double *stat_cur = nullptr, *scale_cur = nullptr, *stat_prev = nullptr, *scale_prev = nullptr;
};

// A site's forward values kept for its backward.
struct SiteStep {
  const float *x = nullptr;  // the quantizer's input (after the rotation)
  const float *out = nullptr;
  int rows = 0, cols = 0;
  Rows rr;
};

class Trainer final : public ReconTrainer {
 public:
  Trainer(cudaStream_t st, const bwq_cuda::CublasApi &blas, void *handle, int max_smem)
      : st_(st), blas_(blas), handle_(handle), max_smem_(max_smem) {}
  ~Trainer() override {
    cudaStreamSynchronize(st_);
    for (void *p : allocs_) cudaFree(p);
  }

  std::string init(const ReconSpec &s);
  std::string step(const float *x, const float *y, int batch, const ReconSitePoint *sites, double lr_scale,
                   double *out) override;
  std::string loss(const float *x, const float *y, int batch, const ReconSitePoint *sites, double *sum_sq) override;
  std::string read(int linear, int what, float *latent, float *alpha, float *a, float *b) override;

 private:
  cudaStream_t st_;
  bwq_cuda::CublasApi blas_;
  void *handle_;
  int max_smem_;
  std::string err_;
  std::vector<void *> allocs_;
  ReconSpec s_{};
  Linear lin_[RECON_LINEARS];
  Rotation rot_[4];
  SiteRows site_rows_[RECON_SITES];
  const ReconSitePoint *pts_ = nullptr;
  double p_used_[2][RECON_SITES] = {};
  bool dirty_ = true;
  long long t_ = 0;  // Adam steps taken
  int batch_ = 1;
  // fixed tensors
  float *in_norm_ = nullptr, *post_norm_ = nullptr, *q_norm_ = nullptr, *k_norm_ = nullptr;
  float *cos_ = nullptr, *sin_ = nullptr;
  // forward values
  float *h_ = nullptr, *y_ = nullptr, *x1_ = nullptr, *ai_x_ = nullptr, *ai_out_ = nullptr;
  double *inv1_ = nullptr, *inv2_ = nullptr, *qinv_ = nullptr, *kinv_ = nullptr;
  float *q_pre_ = nullptr, *k_pre_ = nullptr, *q_ = nullptr, *k_ = nullptr, *v_ = nullptr;
  float *qh_ = nullptr, *kh_ = nullptr, *vh_ = nullptr, *qs_ = nullptr, *ks_ = nullptr, *vs_ = nullptr;
  float *scores_ = nullptr, *p_ = nullptr, *ph_ = nullptr, *dp_ = nullptr;
  float *oh_ = nullptr, *ctx_ = nullptr, *ao_x_ = nullptr, *ao_out_ = nullptr;
  float *h2_ = nullptr, *x2_ = nullptr, *mi_x_ = nullptr, *mi_out_ = nullptr;
  float *gate_ = nullptr, *up_ = nullptr, *mid_ = nullptr, *mo_x_ = nullptr, *mo_out_ = nullptr, *out_ = nullptr;
  SiteStep steps_[RECON_SITES];
  const float *qs_used_ = nullptr, *ks_used_ = nullptr, *vs_used_ = nullptr, *ph_used_ = nullptr;
  // backward scratch
  float *g_out_ = nullptr, *buf_a_ = nullptr, *buf_b_ = nullptr, *buf_c_ = nullptr, *d_gate_ = nullptr,
        *d_up_ = nullptr, *gh2_ = nullptr;
  float *d_oh_ = nullptr, *d_qs_ = nullptr, *d_ks_ = nullptr, *d_vs_ = nullptr, *d_qh_ = nullptr, *d_kh_ = nullptr,
        *d_vh_ = nullptr, *dq_ = nullptr, *dk_ = nullptr, *dv_ = nullptr, *dq2_ = nullptr, *dk2_ = nullptr;
  float *dw_ = nullptr, *xb_ = nullptr, *ga_ = nullptr, *rot_tmp_ = nullptr;
  double *row_share_ = nullptr, *partial_ = nullptr, *slots_ = nullptr;  // slots: [0] loss, [1 + s] site grads, 2 sums

  template <class T>
  T *dev(size_t n) {
    void *p = nullptr;
    if (!err_.empty()) return nullptr;
    if (n == 0) n = 1;
    if (cudaMalloc(&p, n * sizeof(T)) != cudaSuccess) {
      cudaGetLastError();
      err_ = "device reconstruction: out of device memory (" + std::to_string(n * sizeof(T) >> 20) + " MiB)";
      return nullptr;
    }
    allocs_.push_back(p);
    cudaMemsetAsync(p, 0, n * sizeof(T), st_);
    return static_cast<T *>(p);
  }
  float *upload(const float *host, size_t n) {
    float *d = dev<float>(n);
    if (d && host && n) ck(cudaMemcpyAsync(d, host, n * sizeof(float), cudaMemcpyHostToDevice, st_), "upload");
    return d;
  }
  float *upload_transposed(const float *host, int n) {
    std::vector<float> t((size_t)n * n);
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < n; ++j) t[(size_t)j * n + i] = host[(size_t)i * n + j];
    float *d = upload(t.data(), t.size());
    cudaStreamSynchronize(st_);  // t is freed on return
    return d;
  }
  bool ck(cudaError_t e, const char *what) {
    if (e != cudaSuccess && err_.empty()) err_ = std::string("device reconstruction: CUDA error in ") + what + ": " + cudaGetErrorString(e);
    return err_.empty();
  }
  // Row-major c [m, n] = op(a) op(b) (+ beta c), batched with element strides (see cuda_backend.cu gemm_t).
  void mm(bool ta, bool tb, int m, int k, int n, const float *a, const float *b, float *c, float beta = 0,
          int batch = 1, long long sa = 0, long long sb = 0, long long sc = 0) {
    if (!err_.empty() || m <= 0 || n <= 0 || k <= 0) return;
    const float one = 1.0f;
    int rc;
    if (batch == 1 || !blas_.gemm_strided_batched_ex) {
      rc = 0;
      for (int i = 0; i < batch && rc == 0; ++i)
        rc = blas_.gemm_ex(handle_, tb ? kOpT : kOpN, ta ? kOpT : kOpN, n, m, k, &one, b + i * sb, kR32F, tb ? k : n,
                           a + i * sa, kR32F, ta ? m : k, &beta, c + i * sc, kR32F, n, kCompute32F, kGemmDefault);
    } else {
      rc = blas_.gemm_strided_batched_ex(handle_, tb ? kOpT : kOpN, ta ? kOpT : kOpN, n, m, k, &one, b, kR32F,
                                         tb ? k : n, sb, a, kR32F, ta ? m : k, sa, &beta, c, kR32F, n, sc, batch,
                                         kCompute32F, kGemmDefault);
    }
    if (rc != 0 && err_.empty())
      err_ = "device reconstruction: cuBLAS error " + std::to_string(rc) + " (" + std::to_string(m) + " x " +
             std::to_string(n) + " x " + std::to_string(k) + ")";
  }

  void materialize();
  void linear_forward(int i, const float *x, int rows, float *y);
  void linear_backward(int i, const float *x, const float *g, int rows, float *dx, bool accumulate_dx);
  const float *rotate(int site, const float *x, int rows, bool backward, float *y);
  double stage_factor(const ReconSitePoint &pt, TrainQ q, const float *x, int rows, int cols, Rows rr, float *scratch);
  const float *site_forward(int s, const float *x, int rows, int cols, Rows rr, float *out);
  const float *site_backward(int s, const float *g, float *dx);
  void forward(int batch);
  size_t forward_loss(const float *x, const float *y, int batch, const ReconSitePoint *sites, bool grad);
  void backward(int batch);
  void attention_forward(int batch);
  void attention_backward(int batch, const float *g_ctx);
};

std::string Trainer::init(const ReconSpec &s) {
  s_ = s;
  const int T = s.max_batch * s.seq, H = s.hidden, I = s.intermediate, Q = s.heads * s.head_dim,
            KD = s.kv_heads * s.head_dim;
  if (T <= 0 || H <= 0 || I <= 0 || s.heads <= 0 || s.kv_heads <= 0 || s.heads % s.kv_heads != 0)
    return "device reconstruction: bad block dimensions";
  size_t max_nk = 0, max_r = 0;
  for (int i = 0; i < RECON_LINEARS; ++i) {
    const ReconLinearSpec &ls = s.linears[i];
    Linear &l = lin_[i];
    l.rows = ls.rows, l.cols = ls.cols, l.rank = ls.rank;
    const size_t nk = (size_t)ls.rows * ls.cols;
    max_nk = std::max(max_nk, nk);
    max_r = std::max(max_r, (size_t)ls.rank);
    l.latent = upload(ls.latent, nk);
    l.alpha = upload(ls.alpha, ls.rows);
    l.a = upload(ls.lr_a, (size_t)ls.rows * ls.rank);
    l.b = upload(ls.lr_b, (size_t)ls.rank * ls.cols);
    l.bias = ls.bias ? upload(ls.bias, ls.rows) : nullptr;
    l.w = dev<float>(nk);
    l.g_latent = dev<float>(nk);
    l.g_alpha = dev<float>(ls.rows);
    l.g_a = dev<float>((size_t)ls.rows * ls.rank);
    l.g_b = dev<float>((size_t)ls.rank * ls.cols);
    const size_t sizes[4] = {nk, (size_t)ls.rows, (size_t)ls.rows * ls.rank, (size_t)ls.rank * ls.cols};
    for (int j = 0; j < 4; ++j) l.m[j] = dev<float>(sizes[j]), l.v[j] = dev<float>(sizes[j]);
    l.lr[0] = ls.lr_latent, l.lr[1] = ls.lr_alpha, l.lr[2] = ls.lr_lowrank_a, l.lr[3] = ls.lr_lowrank_b;
  }
  size_t rot_width = 0;
  for (int i = 0; i < 4; ++i) {
    const ReconRotationSpec &rs = s.rotations[i];
    if (rs.a <= 0) continue;
    Rotation &r = rot_[i];
    r.a = rs.a, r.b = rs.b, r.rem = rs.rem;
    r.r1 = upload(rs.r1, (size_t)rs.a * rs.a), r.r2 = upload(rs.r2, (size_t)rs.b * rs.b);
    r.r1t = upload_transposed(rs.r1, rs.a), r.r2t = upload_transposed(rs.r2, rs.b);
    if (rs.rem > 0) r.r3 = upload(rs.r3, (size_t)rs.rem * rs.rem), r.r3t = upload_transposed(rs.r3, rs.rem);
    rot_width = std::max(rot_width, (size_t)rs.a * rs.b + rs.rem);
  }
  in_norm_ = upload(s.input_norm, H);
  post_norm_ = upload(s.post_norm, H);
  if (s.q_norm) q_norm_ = upload(s.q_norm, s.head_dim), k_norm_ = upload(s.k_norm, s.head_dim);
  if (s.rope_half > 0) cos_ = upload(s.rope_cos, (size_t)s.seq * s.rope_half), sin_ = upload(s.rope_sin, (size_t)s.seq * s.rope_half);
  const size_t W = std::max({H, I, Q}), TT = (size_t)s.max_batch * s.heads * s.seq * s.seq;
  h_ = dev<float>((size_t)T * H), y_ = dev<float>((size_t)T * H), x1_ = dev<float>((size_t)T * H);
  ai_x_ = dev<float>((size_t)T * H), ai_out_ = dev<float>((size_t)T * H);
  inv1_ = dev<double>(T), inv2_ = dev<double>(T);
  if (q_norm_) {
    q_pre_ = dev<float>((size_t)T * Q), k_pre_ = dev<float>((size_t)T * KD);
    qinv_ = dev<double>((size_t)T * s.heads), kinv_ = dev<double>((size_t)T * s.kv_heads);
    dq2_ = dev<float>((size_t)T * Q), dk2_ = dev<float>((size_t)T * KD);
  }
  q_ = dev<float>((size_t)T * Q), k_ = dev<float>((size_t)T * KD), v_ = dev<float>((size_t)T * KD);
  qh_ = dev<float>((size_t)T * Q), kh_ = dev<float>((size_t)T * KD), vh_ = dev<float>((size_t)T * KD);
  qs_ = dev<float>((size_t)T * Q), ks_ = dev<float>((size_t)T * KD), vs_ = dev<float>((size_t)T * KD);
  scores_ = dev<float>(TT), p_ = dev<float>(TT), ph_ = dev<float>(TT), dp_ = dev<float>(TT);
  oh_ = dev<float>((size_t)T * Q), ctx_ = dev<float>((size_t)T * Q);
  ao_x_ = dev<float>((size_t)T * Q), ao_out_ = dev<float>((size_t)T * Q);
  h2_ = dev<float>((size_t)T * H), x2_ = dev<float>((size_t)T * H), mi_x_ = dev<float>((size_t)T * H),
  mi_out_ = dev<float>((size_t)T * H);
  gate_ = dev<float>((size_t)T * I), up_ = dev<float>((size_t)T * I), mid_ = dev<float>((size_t)T * I);
  mo_x_ = dev<float>((size_t)T * I), mo_out_ = dev<float>((size_t)T * I), out_ = dev<float>((size_t)T * H);
  g_out_ = dev<float>((size_t)T * H), gh2_ = dev<float>((size_t)T * H);
  buf_a_ = dev<float>(T * W), buf_b_ = dev<float>(T * W), buf_c_ = dev<float>(T * W);
  d_gate_ = dev<float>((size_t)T * I), d_up_ = dev<float>((size_t)T * I);
  d_oh_ = dev<float>((size_t)T * Q), d_qs_ = dev<float>((size_t)T * Q), d_qh_ = dev<float>((size_t)T * Q);
  d_ks_ = dev<float>((size_t)T * KD), d_vs_ = dev<float>((size_t)T * KD), d_kh_ = dev<float>((size_t)T * KD),
  d_vh_ = dev<float>((size_t)T * KD);
  dq_ = dev<float>((size_t)T * Q), dk_ = dev<float>((size_t)T * KD), dv_ = dev<float>((size_t)T * KD);
  dw_ = dev<float>(max_nk);
  xb_ = dev<float>((size_t)T * std::max<size_t>(max_r, 1)), ga_ = dev<float>((size_t)T * std::max<size_t>(max_r, 1));
  if (rot_width) rot_tmp_ = dev<float>((size_t)T * rot_width);
  const size_t max_rows = (size_t)T * s.heads;
  for (auto &sr : site_rows_) {
    sr.stat_cur = dev<double>(max_rows), sr.scale_cur = dev<double>(max_rows);
    sr.stat_prev = dev<double>(max_rows), sr.scale_prev = dev<double>(max_rows);
  }
  row_share_ = dev<double>(max_rows);
  partial_ = dev<double>(kPartials);
  slots_ = dev<double>(1 + RECON_SITES + 2);
  if (err_.empty()) ck(cudaStreamSynchronize(st_), "init");
  return err_;
}

// binary-linear.ts materializeWith: W = A B + diag(alpha) sign+(latent).
void Trainer::materialize() {
  if (!dirty_) return;
  for (Linear &l : lin_) {
    if (l.rank > 0) mm(false, false, l.rows, l.rank, l.cols, l.a, l.b, l.w);
    ck(binary_weight(l.latent, l.alpha, l.rows, l.cols, l.rank > 0, l.w, st_), "binary_weight");
  }
  dirty_ = false;
}

// binary-linear.ts forward: y = x W^T (+ bias).
void Trainer::linear_forward(int i, const float *x, int rows, float *y) {
  const Linear &l = lin_[i];
  mm(false, true, rows, l.cols, l.rows, x, l.w, y);
  if (l.bias) ck(bwq_ops::add_bias(y, rows, l.rows, l.bias, st_), "add_bias");
}

// binary-linear.ts backward: dx (+)= G W; dW = G^T X; g_latent, g_alpha; the low-rank factors' gradients factored.
void Trainer::linear_backward(int i, const float *x, const float *g, int rows, float *dx, bool accumulate_dx) {
  Linear &l = lin_[i];
  mm(false, false, rows, l.rows, l.cols, g, l.w, dx, accumulate_dx ? 1.0f : 0.0f);
  mm(true, false, l.rows, rows, l.cols, g, x, dw_);
  ck(binary_weight_grad(dw_, l.latent, l.alpha, l.rows, l.cols, l.g_latent, l.g_alpha, st_), "binary_weight_grad");
  if (l.rank > 0) {
    mm(false, true, rows, l.cols, l.rank, x, l.b, xb_);      // X B^T [T, r]
    mm(true, false, l.rows, rows, l.rank, g, xb_, l.g_a);    // G^T (X B^T) [N, r]
    mm(false, false, rows, l.rows, l.rank, g, l.a, ga_);     // G A [T, r]
    mm(true, false, l.rank, rows, l.cols, ga_, x, l.g_b);    // (G A)^T X [r, K]
  }
}

// rotation.ts: y = x R (backward: g R^T = the transposed factors); x itself when the site has no rotation.
const float *Trainer::rotate(int site, const float *x, int rows, bool backward, float *y) {
  const Rotation &r = rot_[site];
  if (r.a == 0) return x;
  ck(bwq_ops::kron_rotate(x, rows, r.a, r.b, r.rem, backward ? r.r1t : r.r1, backward ? r.r2t : r.r2,
                          backward ? r.r3t : r.r3, rot_tmp_, y, max_smem_, st_),
     "kron_rotate");
  return y;
}

// quant-site.ts factor: p = sum|q_last(x)| / sum|q(x)| (1 when either is 0), on this step's input.
double Trainer::stage_factor(const ReconSitePoint &pt, TrainQ q, const float *x, int rows, int cols, Rows rr,
                             float *scratch) {
  const size_t n = (size_t)rows * cols;
  double sums[2] = {0, 0};
  const TrainQ which[2] = {pt.last, q};
  for (int i = 0; i < 2; ++i) {
    // the per-row statistics are not kept: row_share_ (free until the backward) takes them
    ck(quant_forward(which[i], pt.param, x, rows, cols, rr, 1.0, false, scratch, row_share_, row_share_, st_),
       "quant_forward");
    ck(sum_abs(scratch, n, partial_, slots_ + 1 + RECON_SITES + i, st_), "sum_abs");
  }
  if (!ck(cudaMemcpyAsync(sums, slots_ + 1 + RECON_SITES, 2 * sizeof(double), cudaMemcpyDeviceToHost, st_), "factor") ||
      !ck(cudaStreamSynchronize(st_), "factor"))
    return 1;
  return sums[1] > 0 && sums[0] > 0 ? sums[0] / sums[1] : 1;
}

// quant-site.ts forward (with the site's rotation first): returns the site's output (x itself when absent).
const float *Trainer::site_forward(int s, const float *x, int rows, int cols, Rows rr, float *out) {
  const ReconSitePoint &pt = pts_[s];
  SiteStep &step = steps_[s];
  step = SiteStep{x, x, rows, cols, rr};
  if (!pt.present) return x;
  double pc = 1, pp = 1;
  if (pt.align) {
    pc = std::isnan(pt.p_cur) ? (pt.cur_is_last ? 1 : stage_factor(pt, pt.cur, x, rows, cols, rr, out)) : pt.p_cur;
    if (pt.blend) pp = std::isnan(pt.p_prev) ? stage_factor(pt, pt.prev, x, rows, cols, rr, out) : pt.p_prev;
  }
  p_used_[0][s] = pc, p_used_[1][s] = pp;
  const SiteRows &sr = site_rows_[s];
  const double wc = pt.blend ? pt.lambda * pc : pc;
  ck(quant_forward(pt.cur, pt.param, x, rows, cols, rr, wc, false, out, sr.stat_cur, sr.scale_cur, st_), "quant_forward");
  if (pt.blend)
    ck(quant_forward(pt.prev, pt.param, x, rows, cols, rr, (1 - pt.lambda) * pp, true, out, sr.stat_prev,
                     sr.scale_prev, st_),
       "quant_forward");
  step.out = out;
  return out;
}

// quant-site.ts backward: dx = the straight-through gradient of g (dx zeroed here); the parameter gradient into
// its slot. Returns g itself when the site is absent.
const float *Trainer::site_backward(int s, const float *g, float *dx) {
  const ReconSitePoint &pt = pts_[s];
  const SiteStep &step = steps_[s];
  if (!pt.present) return g;
  const size_t n = (size_t)step.rows * step.cols;
  ck(cudaMemsetAsync(dx, 0, n * sizeof(float), st_), "memset");
  const SiteRows &sr = site_rows_[s];
  const double pc = p_used_[0][s], pp = p_used_[1][s];
  const double wc = pt.blend ? pt.lambda * pc : pc;
  ck(quant_backward(pt.cur, pt.param, step.x, g, step.rows, step.cols, step.rr, sr.stat_cur, sr.scale_cur, wc, dx,
                    row_share_, slots_ + 1 + s, st_),
     "quant_backward");
  if (pt.blend)
    ck(quant_backward(pt.prev, pt.param, step.x, g, step.rows, step.cols, step.rr, sr.stat_prev, sr.scale_prev,
                      (1 - pt.lambda) * pp, dx, row_share_, slots_ + 1 + s, st_),
       "quant_backward");
  return dx;
}

// attention.ts attentionForward on the head-major layout [batch, heads, seq, hd]: the heads of one kv group are
// consecutive, so each (sequence, kv head) is one product of [group*seq, hd] rows.
void Trainer::attention_forward(int batch) {
  const int S = s_.seq, hd = s_.head_dim, G = s_.heads / s_.kv_heads, BK = batch * s_.kv_heads, GS = G * S;
  ck(to_heads(q_, batch, S, s_.heads, hd, qh_, st_), "to_heads");
  ck(to_heads(k_, batch, S, s_.kv_heads, hd, kh_, st_), "to_heads");
  ck(to_heads(v_, batch, S, s_.kv_heads, hd, vh_, st_), "to_heads");
  qs_used_ = site_forward(SITE_QUERY, qh_, batch * s_.heads * S, hd, Rows{}, qs_);
  ks_used_ = site_forward(SITE_KEY, kh_, batch * s_.kv_heads * S, hd, Rows{}, ks_);
  vs_used_ = site_forward(SITE_VALUE, vh_, batch * s_.kv_heads * S, hd, Rows{}, vs_);
  mm(false, true, GS, hd, S, qs_used_, ks_used_, scores_, 0, BK, (long long)GS * hd, (long long)S * hd,
     (long long)GS * S);
  const int rows = batch * s_.heads * S;
  ck(causal_softmax(scores_, rows, S, s_.sliding_window, 1.0 / sqrt((double)hd), p_, st_), "softmax");
  ph_used_ = site_forward(SITE_PROBS, p_, rows, S, Rows{S, s_.sliding_window, s_.probs_unmasked}, ph_);
  mm(false, false, GS, S, hd, ph_used_, vs_used_, oh_, 0, BK, (long long)GS * S, (long long)S * hd,
     (long long)GS * hd);
  ck(from_heads(oh_, batch, S, s_.heads, hd, ctx_, st_), "from_heads");
}

// attention.ts attentionBackward: dq_, dk_, dv_ (token-major) for g_ctx.
void Trainer::attention_backward(int batch, const float *g_ctx) {
  const int S = s_.seq, hd = s_.head_dim, G = s_.heads / s_.kv_heads, BK = batch * s_.kv_heads, GS = G * S;
  const int rows = batch * s_.heads * S;
  ck(to_heads(g_ctx, batch, S, s_.heads, hd, d_oh_, st_), "to_heads");
  mm(false, true, GS, hd, S, d_oh_, vs_used_, scores_, 0, BK, (long long)GS * hd, (long long)S * hd,
     (long long)GS * S);                                                   // dP^ = dO V^T
  mm(true, false, S, GS, hd, ph_used_, d_oh_, d_vs_, 0, BK, (long long)GS * S, (long long)GS * hd,
     (long long)S * hd);                                                   // dV^ = P^T dO (summed over the group)
  const float *dp = site_backward(SITE_PROBS, scores_, dp_);
  ck(causal_softmax_backward(p_, dp, rows, S, s_.sliding_window, 1.0 / sqrt((double)hd), scores_, st_),
     "softmax_backward");                                                  // dS (scaled) into scores_
  mm(false, false, GS, S, hd, scores_, ks_used_, d_qs_, 0, BK, (long long)GS * S, (long long)S * hd,
     (long long)GS * hd);                                                  // dQ^ = dS K^
  mm(true, false, S, GS, hd, scores_, qs_used_, d_ks_, 0, BK, (long long)GS * S, (long long)GS * hd,
     (long long)S * hd);                                                   // dK^ = dS^T Q^
  const float *dqh = site_backward(SITE_QUERY, d_qs_, d_qh_);
  const float *dkh = site_backward(SITE_KEY, d_ks_, d_kh_);
  const float *dvh = site_backward(SITE_VALUE, d_vs_, d_vh_);
  ck(from_heads(dqh, batch, S, s_.heads, hd, dq_, st_), "from_heads");
  ck(from_heads(dkh, batch, S, s_.kv_heads, hd, dk_, st_), "from_heads");
  ck(from_heads(dvh, batch, S, s_.kv_heads, hd, dv_, st_), "from_heads");
}

// block.ts forward.
void Trainer::forward(int batch) {
  const int T = batch * s_.seq, H = s_.hidden, I = s_.intermediate, Q = s_.heads * s_.head_dim, hd = s_.head_dim;
  materialize();
  ck(rms_norm_forward(h_, T, H, in_norm_, s_.eps, x1_, inv1_, st_), "rms_norm");
  const float *ai = site_forward(SITE_ATTN_IN, rotate(SITE_ATTN_IN, x1_, T, false, ai_x_), T, H, Rows{}, ai_out_);
  if (q_norm_) {
    linear_forward(LIN_Q, ai, T, q_pre_);
    linear_forward(LIN_K, ai, T, k_pre_);
    ck(rms_norm_forward(q_pre_, T * s_.heads, hd, q_norm_, s_.eps, q_, qinv_, st_), "q_norm");
    ck(rms_norm_forward(k_pre_, T * s_.kv_heads, hd, k_norm_, s_.eps, k_, kinv_, st_), "k_norm");
  } else {
    linear_forward(LIN_Q, ai, T, q_);
    linear_forward(LIN_K, ai, T, k_);
  }
  linear_forward(LIN_V, ai, T, v_);
  if (cos_) {
    ck(rope_rotate(q_, T, s_.seq, s_.heads, hd, s_.rope_half, cos_, sin_, 1, st_), "rope");
    ck(rope_rotate(k_, T, s_.seq, s_.kv_heads, hd, s_.rope_half, cos_, sin_, 1, st_), "rope");
  }
  attention_forward(batch);
  const float *ao = site_forward(SITE_ATTN_OUT, rotate(SITE_ATTN_OUT, ctx_, T, false, ao_x_), T, Q, Rows{}, ao_out_);
  linear_forward(LIN_O, ao, T, h2_);
  ck(bwq_ops::add(h2_, h_, (size_t)T * H, st_), "add");
  ck(rms_norm_forward(h2_, T, H, post_norm_, s_.eps, x2_, inv2_, st_), "rms_norm");
  const float *mi = site_forward(SITE_MLP_IN, rotate(SITE_MLP_IN, x2_, T, false, mi_x_), T, H, Rows{}, mi_out_);
  linear_forward(LIN_GATE, mi, T, gate_);
  linear_forward(LIN_UP, mi, T, up_);
  ck(swiglu_forward(gate_, up_, (size_t)T * I, mid_, st_), "swiglu");
  const float *mo = site_forward(SITE_MLP_OUT, rotate(SITE_MLP_OUT, mid_, T, false, mo_x_), T, I, Rows{}, mo_out_);
  linear_forward(LIN_DOWN, mo, T, out_);
  ck(bwq_ops::add(out_, h2_, (size_t)T * H, st_), "add");
}

// block.ts backward for g_out_; the block input's gradient is not needed (only the parameters').
void Trainer::backward(int batch) {
  const int T = batch * s_.seq, H = s_.hidden, I = s_.intermediate, hd = s_.head_dim;
  // MLP
  linear_backward(LIN_DOWN, steps_[SITE_MLP_OUT].out, g_out_, T, buf_a_, false);
  const float *g_mid = rotate(SITE_MLP_OUT, site_backward(SITE_MLP_OUT, buf_a_, buf_b_), T, true, buf_c_);
  ck(swiglu_backward(gate_, up_, g_mid, (size_t)T * I, d_gate_, d_up_, st_), "swiglu_backward");
  linear_backward(LIN_GATE, steps_[SITE_MLP_IN].out, d_gate_, T, buf_a_, false);
  linear_backward(LIN_UP, steps_[SITE_MLP_IN].out, d_up_, T, buf_a_, true);
  const float *gx2 = rotate(SITE_MLP_IN, site_backward(SITE_MLP_IN, buf_a_, buf_b_), T, true, buf_c_);
  ck(rms_norm_backward(h2_, gx2, T, H, post_norm_, inv2_, gh2_, false, st_), "rms_norm_backward");
  ck(bwq_ops::add(gh2_, g_out_, (size_t)T * H, st_), "add");
  // attention
  linear_backward(LIN_O, steps_[SITE_ATTN_OUT].out, gh2_, T, buf_a_, false);
  const float *g_ctx = rotate(SITE_ATTN_OUT, site_backward(SITE_ATTN_OUT, buf_a_, buf_b_), T, true, buf_c_);
  attention_backward(batch, g_ctx);
  if (cos_) {
    ck(rope_rotate(dq_, T, s_.seq, s_.heads, hd, s_.rope_half, cos_, sin_, -1, st_), "rope");
    ck(rope_rotate(dk_, T, s_.seq, s_.kv_heads, hd, s_.rope_half, cos_, sin_, -1, st_), "rope");
  }
  const float *dq = dq_, *dk = dk_;
  if (q_norm_) {
    ck(rms_norm_backward(q_pre_, dq_, T * s_.heads, hd, q_norm_, qinv_, dq2_, false, st_), "q_norm_backward");
    ck(rms_norm_backward(k_pre_, dk_, T * s_.kv_heads, hd, k_norm_, kinv_, dk2_, false, st_), "k_norm_backward");
    dq = dq2_, dk = dk2_;
  }
  const float *ai = steps_[SITE_ATTN_IN].out;
  linear_backward(LIN_Q, ai, dq, T, buf_a_, false);
  linear_backward(LIN_K, ai, dk, T, buf_a_, true);
  linear_backward(LIN_V, ai, dv_, T, buf_a_, true);
  site_backward(SITE_ATTN_IN, buf_a_, buf_b_);  // its parameter gradient; the input gradient stops here
}

// Uploads the windows and runs the forward at `sites`; the loss's sum of squares into slots_[0] (and with `grad`,
// dL/dout into g_out_). Returns the number of output values, 0 on a bad batch.
size_t Trainer::forward_loss(const float *x, const float *y, int batch, const ReconSitePoint *sites, bool grad) {
  if (batch < 1 || batch > s_.max_batch) {
    if (err_.empty()) err_ = "device reconstruction: batch out of range";
    return 0;
  }
  pts_ = sites;
  const size_t n = (size_t)batch * s_.seq * s_.hidden;
  ck(cudaMemcpyAsync(h_, x, n * sizeof(float), cudaMemcpyHostToDevice, st_), "upload");
  ck(cudaMemcpyAsync(y_, y, n * sizeof(float), cudaMemcpyHostToDevice, st_), "upload");
  forward(batch);
  ck(mse(out_, y_, n, grad ? g_out_ : nullptr, partial_, slots_, st_), "mse");
  return n;
}

std::string Trainer::step(const float *x, const float *y, int batch, const ReconSitePoint *sites, double lr_scale,
                          double *out) {
  if (!err_.empty()) return err_;
  const size_t n = forward_loss(x, y, batch, sites, true);
  if (!err_.empty()) return err_;
  ck(cudaMemsetAsync(slots_ + 1, 0, RECON_SITES * sizeof(double), st_), "memset");
  backward(batch);
  // adam.ts, train.ts: every tensor of every linear (the low-rank factors only at rank > 0)
  ++t_;
  const double b1 = 0.9, b2 = 0.999, eps = 1e-12;
  const double c1 = 1 - pow(b1, (double)t_), c2 = 1 - pow(b2, (double)t_), rc2 = 1 / sqrt(c2);
  for (Linear &l : lin_) {
    float *params[4] = {l.latent, l.alpha, l.a, l.b};
    const float *grads[4] = {l.g_latent, l.g_alpha, l.g_a, l.g_b};
    const size_t sizes[4] = {(size_t)l.rows * l.cols, (size_t)l.rows, (size_t)l.rows * l.rank, (size_t)l.rank * l.cols};
    for (int j = 0; j < (l.rank > 0 ? 4 : 2); ++j)
      ck(adam(params[j], grads[j], l.m[j], l.v[j], sizes[j], l.lr[j] * lr_scale / c1, rc2, b1, b2, eps, st_), "adam");
  }
  dirty_ = true;
  double slots[1 + RECON_SITES];
  ck(cudaMemcpyAsync(slots, slots_, sizeof(slots), cudaMemcpyDeviceToHost, st_), "download");
  ck(cudaStreamSynchronize(st_), "step");
  if (!err_.empty()) return err_;
  out[0] = slots[0] / (double)n;
  for (int s = 0; s < RECON_SITES; ++s) {
    out[1 + s] = slots[1 + s];
    out[1 + RECON_SITES + s] = p_used_[0][s];
    out[1 + 2 * RECON_SITES + s] = p_used_[1][s];
  }
  return "";
}

std::string Trainer::loss(const float *x, const float *y, int batch, const ReconSitePoint *sites, double *sum_sq) {
  if (!err_.empty()) return err_;
  forward_loss(x, y, batch, sites, false);
  ck(cudaMemcpyAsync(sum_sq, slots_, sizeof(double), cudaMemcpyDeviceToHost, st_), "download");
  ck(cudaStreamSynchronize(st_), "loss");
  return err_;
}

std::string Trainer::read(int linear, int what, float *latent, float *alpha, float *a, float *b) {
  if (!err_.empty()) return err_;
  if (linear < 0 || linear >= RECON_LINEARS) return "device reconstruction: no such linear";
  const Linear &l = lin_[linear];
  const float *src[4] = {what ? l.g_latent : l.latent, what ? l.g_alpha : l.alpha, what ? l.g_a : l.a,
                         what ? l.g_b : l.b};
  float *dst[4] = {latent, alpha, a, b};
  const size_t sizes[4] = {(size_t)l.rows * l.cols, (size_t)l.rows, (size_t)l.rows * l.rank, (size_t)l.rank * l.cols};
  for (int j = 0; j < 4; ++j)
    if (dst[j] && sizes[j]) ck(cudaMemcpyAsync(dst[j], src[j], sizes[j] * sizeof(float), cudaMemcpyDeviceToHost, st_), "read");
  ck(cudaStreamSynchronize(st_), "read");
  return err_;
}

}  // namespace

bwq::rt::ReconTrainer *make_trainer(const bwq::rt::ReconSpec &s, cudaStream_t st, const bwq_cuda::CublasApi &blas, void *handle,
                           int max_smem, std::string &err) {
  Trainer *t = new Trainer(st, blas, handle, max_smem);
  err = t->init(s);
  if (!err.empty()) {
    delete t;
    return nullptr;
  }
  return t;
}

}  // namespace bwq_recon
