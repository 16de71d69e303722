// Kernels of the reconstruction's device training step (recon.cuh; references in src/quant/reconstruct/).
#include "../ops_cuda.cuh"
#include "recon.cuh"

namespace bwq_recon {
namespace {

using bwq::rt::TrainQKind;
using bwq_ops::block_max;
using bwq_ops::block_sum;
using bwq_ops::grid_1d;

constexpr int kRow = 256;     // threads per row kernel
constexpr double kLevelsMinT = 0.05;  // act-quant.ts LEVELS_MIN_T

__device__ __forceinline__ int row_lo(int r, Rows rr) {
  if (rr.period == 0) return 0;
  const int i = r % rr.period;
  return rr.window > 0 ? max(0, i - rr.window + 1) : 0;
}
__device__ __forceinline__ int row_hi(int r, int cols, Rows rr) { return rr.period == 0 ? cols : (r % rr.period) + 1; }

// ---- rmsnorm.ts
__global__ void rms_fwd_kernel(const float *x, int cols, const float *w, double eps, float *y, double *inv) {
  const size_t o = (size_t)blockIdx.x * cols;
  double ss = 0;
  for (int j = threadIdx.x; j < cols; j += blockDim.x) ss += (double)x[o + j] * x[o + j];
  ss = block_sum(ss);
  const double ir = 1.0 / sqrt(ss / cols + eps);
  if (threadIdx.x == 0) inv[blockIdx.x] = ir;
  for (int j = threadIdx.x; j < cols; j += blockDim.x) y[o + j] = (float)((double)w[j] * x[o + j] * ir);
}
__global__ void rms_bwd_kernel(const float *x, const float *g, int cols, const float *w, const double *inv, float *dx,
                               bool accumulate) {
  const size_t o = (size_t)blockIdx.x * cols;
  const double ir = inv[blockIdx.x];
  double dot = 0;
  for (int j = threadIdx.x; j < cols; j += blockDim.x) dot += (double)w[j] * g[o + j] * x[o + j];
  dot = block_sum(dot);
  const double c = ir * ir * ir * dot / cols;
  for (int j = threadIdx.x; j < cols; j += blockDim.x) {
    const float v = (float)(ir * w[j] * g[o + j] - c * x[o + j]);
    dx[o + j] = accumulate ? dx[o + j] + v : v;
  }
}

// ---- rope.ts (one thread per (row, head, i < half))
__global__ void rope_kernel(float *x, size_t count, int seq, int heads, int hd, int half, const float *cos_t,
                            const float *sin_t, int sign) {
  for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < count; e += (size_t)gridDim.x * blockDim.x) {
    const int i = (int)(e % half);
    const size_t rh = e / half;  // row * heads + head
    const size_t row = rh / heads;
    const int t = (int)(row % seq);
    float *p = x + rh * hd;
    const double a = p[i], b = p[i + half];
    const double c = cos_t[(size_t)t * half + i], s = sign * (double)sin_t[(size_t)t * half + i];
    p[i] = (float)(a * c - b * s);
    p[i + half] = (float)(b * c + a * s);
  }
}

// ---- head layout
__global__ void heads_kernel(const float *x, int batch, int seq, int heads, int hd, float *y, bool to) {
  const size_t count = (size_t)batch * seq * heads * hd;
  for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < count; e += (size_t)gridDim.x * blockDim.x) {
    // e indexes the token-major layout [b, t, h, j]
    const int j = (int)(e % hd);
    size_t r = e / hd;
    const int h = (int)(r % heads);
    r /= heads;
    const int t = (int)(r % seq);
    const int b = (int)(r / seq);
    const size_t hm = (((size_t)b * heads + h) * seq + t) * hd + j;
    if (to) y[hm] = x[e];
    else y[e] = x[hm];
  }
}

// ---- act-quant.ts quantForward: one block per row
__global__ void quant_fwd_kernel(TrainQ q, double param, const float *x, int cols, Rows rr, double weight,
                                 bool accumulate, float *out, double *stat, double *scale) {
  const int r = blockIdx.x;
  const size_t o = (size_t)r * cols;
  const int lo = row_lo(r, rr), hi = row_hi(r, cols, rr);
  const int count = rr.period != 0 && rr.unmasked ? hi - lo : cols;
  if (!accumulate) {
    for (int j = threadIdx.x; j < lo; j += blockDim.x) out[o + j] = 0.0f;
    for (int j = hi + threadIdx.x; j < cols; j += blockDim.x) out[o + j] = 0.0f;
  }
  auto put = [&](int j, double v) {
    const float f = (float)(weight * (double)(float)v);
    out[o + j] = accumulate ? out[o + j] + f : f;
  };
  if (q.kind == TrainQKind::NONE) {
    for (int j = lo + threadIdx.x; j < hi; j += blockDim.x) put(j, x[o + j]);
    if (threadIdx.x == 0) stat[r] = 0, scale[r] = 0;
    return;
  }
  if (q.kind == TrainQKind::INT) {
    float amax = 0.0f;
    for (int j = lo + threadIdx.x; j < hi; j += blockDim.x) amax = fmaxf(amax, fabsf(x[o + j]));
    amax = block_max(amax);
    const double qmax = (double)((1 << (q.arg - 1)) - 1);
    const double s = amax == 0.0f ? 1.0 : (param * amax) / qmax;
    if (threadIdx.x == 0) stat[r] = amax, scale[r] = s;
    for (int j = lo + threadIdx.x; j < hi; j += blockDim.x) {
      double v = rint(x[o + j] / s);
      v = fmin(qmax, fmax(-qmax, v));
      put(j, v * s);
    }
    return;
  }
  double sum = 0;
  for (int j = lo + threadIdx.x; j < hi; j += blockDim.x) sum += fabs((double)x[o + j]);
  const double mu = block_sum(sum) / count;
  if (q.kind == TrainQKind::LEVELS) {
    const double qmax = (q.arg - 1) / 2.0;
    const double t = fmax(param, kLevelsMinT);
    const double u = 6 * t * mu / q.arg;
    if (threadIdx.x == 0) stat[r] = mu, scale[r] = u;
    for (int j = lo + threadIdx.x; j < hi; j += blockDim.x) {
      if (u == 0) {
        put(j, 0.0);
        continue;
      }
      double v = floor(x[o + j] / u + 0.5);  // JS Math.round
      v = fmin(qmax, fmax(-qmax, v));
      put(j, v * u);
    }
    return;
  }
  // ternary
  const double delta = param * mu;
  double kept = 0, kept_sum = 0;
  for (int j = lo + threadIdx.x; j < hi; j += blockDim.x) {
    const double a = fabs((double)x[o + j]);
    if (a > delta) kept += 1, kept_sum += a;
  }
  kept = block_sum(kept);
  kept_sum = block_sum(kept_sum);
  const double s = kept == 0 ? 0 : kept_sum / kept;
  if (threadIdx.x == 0) stat[r] = mu, scale[r] = s;
  for (int j = lo + threadIdx.x; j < hi; j += blockDim.x) {
    const double v = x[o + j];
    put(j, fabs(v) > delta ? (v > 0 ? s : -s) : 0.0);
  }
}

// ---- act-quant.ts quantBackward: one block per row; row_share[r] = the row's parameter gradient (before weight)
__global__ void quant_bwd_kernel(TrainQ q, double param, const float *x, const float *g, int cols, Rows rr,
                                 const double *stat, const double *scale, double weight, float *dx,
                                 double *row_share) {
  const int r = blockIdx.x;
  const size_t o = (size_t)r * cols;
  const int lo = row_lo(r, rr), hi = row_hi(r, cols, rr);
  double acc = 0;
  if (q.kind == TrainQKind::INT || q.kind == TrainQKind::LEVELS) {
    const bool is_int = q.kind == TrainQKind::INT;
    const double qmax = is_int ? (double)((1 << (q.arg - 1)) - 1) : (q.arg - 1) / 2.0;
    const double s = scale[r];
    const double dsdp = is_int ? (stat[r] == 0 ? 0 : stat[r] / qmax) : (param > kLevelsMinT ? 6 * stat[r] / q.arg : 0);
    if (s != 0) {
      for (int j = lo + threadIdx.x; j < hi; j += blockDim.x) {
        const double z = x[o + j] / s;
        const double gj = g[o + j];
        if (z >= qmax) acc += gj * qmax;
        else if (z <= -qmax) acc -= gj * qmax;
        else {
          const double rz = is_int ? rint(z) : floor(z + 0.5);
          acc += gj * (rz - z);
          dx[o + j] = (float)(dx[o + j] + weight * gj);
        }
      }
    }
    acc = block_sum(acc);
    if (threadIdx.x == 0) row_share[r] = acc * dsdp;
    return;
  }
  // ternary
  const double mu = stat[r], s = scale[r], delta = param * mu;
  const double w = fmax(delta, 0.05 * mu);
  for (int j = lo + threadIdx.x; j < hi; j += blockDim.x) {
    const double gj = g[o + j];
    dx[o + j] = (float)(dx[o + j] + weight * gj);
    const double v = x[o + j];
    if (w > 0 && fabs(fabs(v) - delta) < w / 2) acc -= gj * (v > 0 ? s : v < 0 ? -s : 0) * (mu / w);
  }
  acc = block_sum(acc);
  if (threadIdx.x == 0) row_share[r] = acc;
}

__global__ void none_bwd_kernel(const float *g, size_t n, double weight, float *dx) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    dx[i] = (float)(dx[i] + weight * g[i]);
}

// Deterministic sum of `n` doubles: one block, fixed order for a given n. slot += weight * sum (or = with set).
__global__ void reduce_kernel(const double *v, size_t n, double weight, bool set, double *slot) {
  double s = 0;
  for (size_t i = threadIdx.x; i < n; i += blockDim.x) s += v[i];
  s = block_sum(s);
  if (threadIdx.x == 0) *slot = set ? weight * s : *slot + weight * s;
}

__global__ void abs_partial_kernel(const float *x, size_t n, double *partial) {
  double s = 0;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    s += fabs((double)x[i]);
  s = block_sum(s);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// ---- attention.ts softmax rows (one block per row)
__global__ void softmax_kernel(const float *s, int seq, int window, double scaling, float *p) {
  const int r = blockIdx.x;
  const int i = r % seq;
  const int lo = window > 0 ? max(0, i - window + 1) : 0;
  const size_t o = (size_t)r * seq;
  float mx = -INFINITY;
  for (int j = lo + threadIdx.x; j <= i; j += blockDim.x) mx = fmaxf(mx, (float)(s[o + j] * scaling));
  // the max in double as the reference: s*scaling rounded once more does not change which entry is largest
  // enough to matter; exp(x - max) below is taken in double from the same products
  const double m = block_max(mx);
  double sum = 0;
  for (int j = lo + threadIdx.x; j <= i; j += blockDim.x) sum += exp(s[o + j] * scaling - m);
  sum = block_sum(sum);
  for (int j = threadIdx.x; j < seq; j += blockDim.x)
    p[o + j] = j >= lo && j <= i ? (float)(exp(s[o + j] * scaling - m) / sum) : 0.0f;
}
__global__ void softmax_bwd_kernel(const float *p, const float *dp, int seq, int window, double scaling, float *ds) {
  const int r = blockIdx.x;
  const int i = r % seq;
  const int lo = window > 0 ? max(0, i - window + 1) : 0;
  const size_t o = (size_t)r * seq;
  double dot = 0;
  for (int j = lo + threadIdx.x; j <= i; j += blockDim.x) dot += (double)dp[o + j] * p[o + j];
  dot = block_sum(dot);
  for (int j = threadIdx.x; j < seq; j += blockDim.x)
    ds[o + j] = j >= lo && j <= i ? (float)(p[o + j] * (dp[o + j] - dot) * scaling) : 0.0f;
}

// ---- swiglu.ts
__global__ void swiglu_fwd_kernel(const float *gate, const float *up, size_t n, float *m) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    const double z = gate[i];
    m[i] = (float)(z / (1 + exp(-z)) * up[i]);
  }
}
__global__ void swiglu_bwd_kernel(const float *gate, const float *up, const float *g, size_t n, float *dgate,
                                  float *dup) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    const double z = gate[i];
    const double s = 1 / (1 + exp(-z));
    dgate[i] = (float)(g[i] * (double)up[i] * s * (1 + z * (1 - s)));
    dup[i] = (float)(g[i] * z * s);
  }
}

// ---- binary-linear.ts
__global__ void binary_weight_kernel(const float *latent, const float *alpha, int cols, size_t n, bool accumulate,
                                     float *w) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    const float a = alpha[i / cols];
    const float v = latent[i] >= 0.0f ? a : -a;
    w[i] = accumulate ? w[i] + v : v;
  }
}
__global__ void binary_grad_kernel(const float *dw, const float *latent, const float *alpha, int cols,
                                   float *g_latent, float *g_alpha) {
  const size_t o = (size_t)blockIdx.x * cols;
  const double a = alpha[blockIdx.x];
  double ga = 0;
  for (int k = threadIdx.x; k < cols; k += blockDim.x) {
    const double d = dw[o + k];
    ga += latent[o + k] >= 0.0f ? d : -d;
    g_latent[o + k] = (float)(a * d);
  }
  ga = block_sum(ga);
  if (threadIdx.x == 0) g_alpha[blockIdx.x] = (float)ga;
}

// ---- train.ts loss
__global__ void mse_kernel(const float *out, const float *y, size_t n, float *g, double *partial) {
  double s = 0;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    const double d = (double)out[i] - y[i];
    s += d * d;
    if (g) g[i] = (float)(2 * d / n);
  }
  s = block_sum(s);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// ---- adam.ts
__global__ void adam_kernel(float *param, const float *grad, float *ms, float *vs, size_t n, double step, double rc2,
                            double b1, double b2, double eps) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    const double g = grad[i];
    const float m = (float)(b1 * ms[i] + (1 - b1) * g);
    const float v = (float)(b2 * vs[i] + (1 - b2) * g * g);
    ms[i] = m;
    vs[i] = v;
    param[i] = (float)(param[i] - step * m / (sqrt((double)v) * rc2 + eps));
  }
}

}  // namespace

cudaError_t rms_norm_forward(const float *x, int rows, int cols, const float *w, double eps, float *y, double *inv,
                             cudaStream_t st) {
  if (rows > 0) rms_fwd_kernel<<<rows, kRow, 0, st>>>(x, cols, w, eps, y, inv);
  return cudaGetLastError();
}
cudaError_t rms_norm_backward(const float *x, const float *g, int rows, int cols, const float *w, const double *inv,
                              float *dx, bool accumulate, cudaStream_t st) {
  if (rows > 0) rms_bwd_kernel<<<rows, kRow, 0, st>>>(x, g, cols, w, inv, dx, accumulate);
  return cudaGetLastError();
}
cudaError_t rope_rotate(float *x, int rows, int seq, int heads, int head_dim, int half, const float *cos_t,
                        const float *sin_t, int sign, cudaStream_t st) {
  const size_t count = (size_t)rows * heads * half;
  if (count) rope_kernel<<<grid_1d(count), 256, 0, st>>>(x, count, seq, heads, head_dim, half, cos_t, sin_t, sign);
  return cudaGetLastError();
}
cudaError_t to_heads(const float *x, int batch, int seq, int heads, int hd, float *y, cudaStream_t st) {
  const size_t n = (size_t)batch * seq * heads * hd;
  if (n) heads_kernel<<<grid_1d(n), 256, 0, st>>>(x, batch, seq, heads, hd, y, true);
  return cudaGetLastError();
}
cudaError_t from_heads(const float *x, int batch, int seq, int heads, int hd, float *y, cudaStream_t st) {
  const size_t n = (size_t)batch * seq * heads * hd;
  if (n) heads_kernel<<<grid_1d(n), 256, 0, st>>>(x, batch, seq, heads, hd, y, false);
  return cudaGetLastError();
}
cudaError_t quant_forward(TrainQ q, double param, const float *x, int rows, int cols, Rows rr, double weight,
                          bool accumulate, float *out, double *stat, double *scale, cudaStream_t st) {
  const int threads = cols <= 128 ? 128 : kRow;
  if (rows > 0) quant_fwd_kernel<<<rows, threads, 0, st>>>(q, param, x, cols, rr, weight, accumulate, out, stat, scale);
  return cudaGetLastError();
}
cudaError_t quant_backward(TrainQ q, double param, const float *x, const float *g, int rows, int cols, Rows rr,
                           const double *stat, const double *scale, double weight, float *dx, double *row_share,
                           double *grad_slot, cudaStream_t st) {
  if (rows <= 0) return cudaGetLastError();
  if (q.kind == TrainQKind::NONE) {
    const size_t n = (size_t)rows * cols;
    none_bwd_kernel<<<grid_1d(n), 256, 0, st>>>(g, n, weight, dx);
    return cudaGetLastError();
  }
  const int threads = cols <= 128 ? 128 : kRow;
  quant_bwd_kernel<<<rows, threads, 0, st>>>(q, param, x, g, cols, rr, stat, scale, weight, dx, row_share);
  reduce_kernel<<<1, 1024, 0, st>>>(row_share, (size_t)rows, weight, false, grad_slot);
  return cudaGetLastError();
}
cudaError_t sum_abs(const float *x, size_t n, double *partial, double *slot, cudaStream_t st) {
  abs_partial_kernel<<<kPartials, 256, 0, st>>>(x, n, partial);
  reduce_kernel<<<1, 1024, 0, st>>>(partial, kPartials, 1.0, true, slot);
  return cudaGetLastError();
}
cudaError_t causal_softmax(const float *s, int rows, int seq, int window, double scaling, float *p, cudaStream_t st) {
  if (rows > 0) softmax_kernel<<<rows, kRow, 0, st>>>(s, seq, window, scaling, p);
  return cudaGetLastError();
}
cudaError_t causal_softmax_backward(const float *p, const float *dp, int rows, int seq, int window, double scaling,
                                    float *ds, cudaStream_t st) {
  if (rows > 0) softmax_bwd_kernel<<<rows, kRow, 0, st>>>(p, dp, seq, window, scaling, ds);
  return cudaGetLastError();
}
cudaError_t swiglu_forward(const float *gate, const float *up, size_t n, float *m, cudaStream_t st) {
  if (n) swiglu_fwd_kernel<<<grid_1d(n), 256, 0, st>>>(gate, up, n, m);
  return cudaGetLastError();
}
cudaError_t swiglu_backward(const float *gate, const float *up, const float *g, size_t n, float *dgate, float *dup,
                            cudaStream_t st) {
  if (n) swiglu_bwd_kernel<<<grid_1d(n), 256, 0, st>>>(gate, up, g, n, dgate, dup);
  return cudaGetLastError();
}
cudaError_t binary_weight(const float *latent, const float *alpha, int rows, int cols, bool accumulate, float *w,
                          cudaStream_t st) {
  const size_t n = (size_t)rows * cols;
  if (n) binary_weight_kernel<<<grid_1d(n), 256, 0, st>>>(latent, alpha, cols, n, accumulate, w);
  return cudaGetLastError();
}
cudaError_t binary_weight_grad(const float *dw, const float *latent, const float *alpha, int rows, int cols,
                               float *g_latent, float *g_alpha, cudaStream_t st) {
  if (rows > 0) binary_grad_kernel<<<rows, kRow, 0, st>>>(dw, latent, alpha, cols, g_latent, g_alpha);
  return cudaGetLastError();
}
cudaError_t mse(const float *out, const float *y, size_t n, float *g, double *partial, double *slot, cudaStream_t st) {
  mse_kernel<<<kPartials, 256, 0, st>>>(out, y, n, g, partial);
  reduce_kernel<<<1, 1024, 0, st>>>(partial, kPartials, 1.0, true, slot);
  return cudaGetLastError();
}
cudaError_t adam(float *param, const float *grad, float *m, float *v, size_t n, double step, double rc2, double b1,
                 double b2, double eps, cudaStream_t st) {
  if (n) adam_kernel<<<grid_1d(n), 256, 0, st>>>(param, grad, m, v, n, step, rc2, b1, b2, eps);
  return cudaGetLastError();
}
}  // namespace bwq_recon
