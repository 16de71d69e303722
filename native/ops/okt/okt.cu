// The OKT of BWLA on the device (okt.h; docs/ALGORITHMS.md §OKT): the algorithm of src/quant/okt.ts learnOkt,
// step for step, with the stacked weights D [n, a, b] and the activation rows X [T, a, b] resident for the call.
//
// Layouts. A row's a x b matrix is kept either natural ([a, b], element (i, j) at i*b + j) or transposed
// ([b, a], at j*a + i). The R2 step works on natural rows and the R1 step on transposed ones, because then
// every product is a plain (or strided-batched) cuBLAS SGEMM on row-major [rows*p, q] matrices:
//   Q  = L^T D_n          (strided-batched; R2 step: L = R1, Q natural; R1 step: (D_n R2)^T, Q transposed)
//   M  = Q^T T            (the q x q coefficient of the majoriser, split over row chunks, chunks summed in double)
//   Y' = Q R              (the candidate for the new factor R = polar(M), one SGEMM)
// The targets T and the activation pieces are written by one elementwise pass that also transposes the current
// Y into the step's layout. Per-row sums (|y| or its smoothed form, y^4, max y^2) do not depend on the layout.
//
// Precision: data and products float32 (cuBLAS FP32 compute, no TF32); every reduction of the objective
// (row sums, sums over rows), the targets' alpha, the token weights and the majoriser matrices in double; the
// polar factor on the host in double (okt_host.cpp). The accept test of the activation term's back-off compares
// these double objectives, as the reference does.
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>

#include <algorithm>
#include <string>
#include <vector>

#include "../gemm/packed_gemm.cuh"
#include "../ops_cuda.cuh"
#include "okt.h"
#include "okt_em.h"

namespace {

using bwq_ops::block_sum;

constexpr int kOpN = 0, kOpT = 1, kR32F = 0, kCompute32F = 68, kGemmDefault = -1;
constexpr int RED_THREADS = 256;
constexpr int TILE = 32, TILE_ROWS = 8;

enum RowMode : int { ROW_SQ = 0, ROW_ABS = 1, ROW_POW4 = 2 };
enum PieceMode : int { PIECE_TARGET = 0, PIECE_LY = 1, PIECE_G = 2 };

// s log cosh(y/s) (|y| for s = 0) without overflow (okt.ts smoothAbs)
__device__ __forceinline__ double smooth_abs(double y, double s) {
  const double v = fabs(y);
  if (s <= 0) return v;
  return v + s * (log1p(exp(-2 * v / s)) - 0.69314718055994530942);
}

// Per row r of y [rows, K] (one block per row, grid-stride over rows):
//   ROW_SQ:   out_a[r] = sum y^2
//   ROW_ABS:  out_a[r] = sum smooth_abs(y, sigma * rms[r])
//   ROW_POW4: out_a[r] = sum y^4, out_b[r] = max y^2
__global__ void __launch_bounds__(RED_THREADS) row_stats_kernel(const float *__restrict__ y, int rows, int K, int mode,
                                                                 double sigma, const double *__restrict__ rms,
                                                                 double *__restrict__ out_a,
                                                                 double *__restrict__ out_b) {
  for (int r = blockIdx.x; r < rows; r += gridDim.x) {
    const float *row = y + (size_t)r * K;
    const double s = mode == ROW_ABS && rms ? sigma * rms[r] : 0.0;
    double acc = 0;
    float mx = 0;
    for (int k = threadIdx.x; k < K; k += RED_THREADS) {
      const double v = row[k];
      if (mode == ROW_SQ) acc += v * v;
      else if (mode == ROW_ABS) acc += smooth_abs(v, s);
      else {
        const double v2 = v * v;
        acc += v2 * v2;
        mx = fmaxf(mx, fabsf(row[k]));
      }
    }
    acc = block_sum(acc);
    if (mode == ROW_POW4) mx = bwq_ops::block_max(mx);
    if (threadIdx.x == 0) {
      out_a[r] = acc;
      if (mode == ROW_POW4) out_b[r] = (double)mx * (double)mx;
    }
  }
}

// out[0] = sum_r (w ? w[r] * v[r] : v[r] * v[r]) in one block (fixed order: reproducible)
__global__ void __launch_bounds__(1024) weighted_sum_kernel(const double *__restrict__ v, const double *__restrict__ w,
                                                            int n, double *__restrict__ out) {
  double acc = 0;
  for (int r = threadIdx.x; r < n; r += blockDim.x) acc += w ? w[r] * v[r] : v[r] * v[r];
  acc = block_sum(acc);
  if (threadIdx.x == 0) out[0] = acc;
}

// d[r, :] = fl(x[r, :] * scale[r]) (the product in double)
__global__ void scale_rows_kernel(float *__restrict__ d, int rows, int K, const double *__restrict__ scale) {
  const size_t total = (size_t)rows * K;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x)
    d[i] = (float)((double)d[i] * scale[i / K]);
}

// The per-element value of a piece at y (row constants: h = row sum of |y| (smoothed), s = sigma rms, c = token
// weight, m = max y^2), okt.ts weightTargets / activationPieces:
//   TARGET: alpha tanh(y/s) (s > 0) or alpha sign(y) (y >= 0: +alpha), alpha = h / K
//   LY:     12 c m y        G: 4 c y^3
__device__ __forceinline__ float piece_value(int mode, float yf, double h, double s, double c, double m, int K) {
  const double v = yf;
  if (mode == PIECE_TARGET) {
    const double alpha = h / K;
    return (float)(s > 0 ? alpha * tanh(v / s) : v >= 0 ? alpha : -alpha);
  }
  if (mode == PIECE_LY) return (float)(12 * c * m * v);
  return (float)(4 * c * v * v * v);
}

// out (rows in layout out_t) = piece(y (rows in layout in_t)); a row's matrix is [P, Q] in the output layout
// (P = a, Q = b natural; P = b, Q = a transposed). Tiles of 32 x 32 through shared memory when the layouts
// differ, so both the reads and the writes are coalesced. grid (ceil(Q/32), ceil(P/32), z over rows).
template <bool TRANSPOSE>
__global__ void __launch_bounds__(TILE *TILE_ROWS) piece_kernel(const float *__restrict__ y, int rows, int P, int Q,
                                                                int mode, const double *__restrict__ h,
                                                                const double *__restrict__ rms, double sigma,
                                                                const double *__restrict__ c,
                                                                const double *__restrict__ m, float *__restrict__ out) {
  __shared__ float tile[TILE][TILE + 1];
  const int K = P * Q;
  for (int r = blockIdx.z; r < rows; r += gridDim.z) {
    const float *src = y + (size_t)r * K;
    float *dst = out + (size_t)r * K;
    const double hr = h ? h[r] : 0, sr = rms ? sigma * rms[r] : 0, cr = c ? c[r] : 0, mr = m ? m[r] : 0;
    const int q0 = blockIdx.x * TILE, p0 = blockIdx.y * TILE;
    if (!TRANSPOSE) {
      for (int i = threadIdx.y; i < TILE; i += TILE_ROWS) {
        const int p = p0 + i, q = q0 + threadIdx.x;
        if (p < P && q < Q) dst[(size_t)p * Q + q] = piece_value(mode, src[(size_t)p * Q + q], hr, sr, cr, mr, K);
      }
    } else {
      // input layout [Q, P]: load the tile (q, p) with p fastest, write (p, q) with q fastest
      for (int i = threadIdx.y; i < TILE; i += TILE_ROWS) {
        const int q = q0 + i, p = p0 + threadIdx.x;
        if (q < Q && p < P) tile[i][threadIdx.x] = src[(size_t)q * P + p];
      }
      __syncthreads();
      for (int i = threadIdx.y; i < TILE; i += TILE_ROWS) {
        const int p = p0 + i, q = q0 + threadIdx.x;
        if (p < P && q < Q) dst[(size_t)p * Q + q] = piece_value(mode, tile[threadIdx.x][i], hr, sr, cr, mr, K);
      }
      __syncthreads();
    }
  }
}

// out[j] = sum_s parts[s * n2 + j] in double (the split products' chunks)
__global__ void sum_parts_kernel(const float *__restrict__ parts, int slots, int n2, double *__restrict__ out) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= n2) return;
  double acc = 0;
  for (int s = 0; s < slots; ++s) acc += parts[(size_t)s * n2 + j];
  out[j] = acc;
}

struct DeviceError {
  std::string msg;
};

// Every device allocation of the call, freed at its end.
class Arena {
 public:
  ~Arena() {
    for (void *p : owned_) cudaFree(p);
  }
  template <class T>
  T *take(size_t count, const char *what) {
    void *p = nullptr;
    const cudaError_t e = cudaMalloc(&p, count * sizeof(T) + 16);
    if (e != cudaSuccess) {
      cudaGetLastError();
      char buf[256];
      snprintf(buf, sizeof buf, "OKT: cannot allocate %.1f MiB of device memory for %s (%s)",
               (double)count * sizeof(T) / 1048576.0, what, cudaGetErrorString(e));
      throw DeviceError{buf};
    }
    owned_.push_back(p);
    return (T *)p;
  }

 private:
  std::vector<void *> owned_;
};

void check(cudaError_t e, const char *what) {
  if (e == cudaSuccess) return;
  cudaGetLastError();
  throw DeviceError{std::string("OKT: CUDA error in ") + what + ": " + cudaGetErrorString(e)};
}

// One stack of rows (weights or activations) with what the steps need about it.
struct Stack {
  int n = 0;                // rows
  float *d = nullptr;       // [n, a, b] natural
  float *q = nullptr;       // the step's L^T D_n, in the step's layout
  float *y = nullptr;       // current rotated rows, layout `transposed`
  float *yc = nullptr;      // candidate
  float *t = nullptr;       // targets / LY piece, in the step's layout
  float *g = nullptr;       // G piece (activations only)
  double *ra = nullptr, *rb = nullptr;    // current row sums (ROW_ABS: h; ROW_POW4: y^4 sums, max y^2)
  double *rac = nullptr, *rbc = nullptr;  // the candidate's
  bool transposed = false;
};

class Okt {
 public:
  Okt(const bwq_okt_problem &p, cudaStream_t st, const bwq_cuda::CublasApi &blas, void *handle)
      : p_(p), st_(st), blas_(blas), h_(handle), K_(p.k), a_(p.a), b_(p.b) {}

  void run(bwq_okt_result &r) {
    lambda_ = p_.tokens > 0 && p_.activations ? p_.activation_weight : 0;
    setup();
    r1_.assign(p_.r1_init, p_.r1_init + (size_t)a_ * a_);
    r2_.assign(p_.r2_init, p_.r2_init + (size_t)b_ * b_);
    upload_factor(dr1_, r1_, a_);
    upload_factor(dr2_, r2_, b_);
    // Y = R1^T D_n R2 (natural)
    initial_rotation(w_);
    if (act_) initial_rotation(x_);

    const double weight_before = weight_objective(w_, 0, false);
    const double tail_before = act_ ? tail(x_, false) : NAN;
    std::vector<double> history;
    const auto exact = bwq_okt::run_stages(p_, beta_, history, [this](double sigma) { return objective(sigma, false); },
                                           [this](int f, double sigma, double j) { return factor_step(f, sigma, j); });
    std::copy(r1_.begin(), r1_.end(), r.r1);
    std::copy(r2_.begin(), r2_.end(), r.r2);
    r.history_len = (int)history.size();
    std::copy(history.begin(), history.end(), r.history);
    r.iterations = exact.first;
    r.converged = exact.second ? 1 : 0;
    r.weight_error_before = weight_before;
    r.weight_error_after = weight_objective(w_, 0, false);
    r.tail_before = tail_before;
    r.tail_after = act_ ? tail(x_, false) : NAN;
  }

 private:
  // ---- setup: stack, scale, statistics
  void setup() {
    int n = 0;
    for (int i = 0; i < p_.n_weights; ++i) n += p_.rows[i];
    alloc_stack(w_, n, false);
    size_t off = 0;
    for (int i = 0; i < p_.n_weights; ++i) {
      const size_t count = (size_t)p_.rows[i] * K_;
      check(cudaMemcpyAsync(w_.d + off, p_.weights[i], count * 4, cudaMemcpyHostToDevice, st_), "upload");
      off += count;
    }
    // row sums of squares -> per-matrix 1/rms(W), the stack's energy and each row's rms (rotation-invariant)
    std::vector<double> ss = row_sums(w_.d, n, ROW_SQ);
    std::vector<double> scale(n);
    energy_ = 0;
    row_rms_.resize(n);
    int r0 = 0;
    for (int i = 0; i < p_.n_weights; ++i) {
      double m = 0;
      for (int r = r0; r < r0 + p_.rows[i]; ++r) m += ss[r];
      const double s = m > 0 ? 1 / sqrt(m / ((double)p_.rows[i] * K_)) : 1;
      for (int r = r0; r < r0 + p_.rows[i]; ++r) {
        scale[r] = s;
        energy_ += ss[r] * s * s;
        row_rms_[r] = sqrt(ss[r] * s * s / K_);
      }
      r0 += p_.rows[i];
    }
    double *dscale = arena_.take<double>(n, "row scales");
    check(cudaMemcpyAsync(dscale, scale.data(), n * sizeof(double), cudaMemcpyHostToDevice, st_), "upload");
    scale_rows_kernel<<<bwq_ops::grid_1d((size_t)n * K_), 256, 0, st_>>>(w_.d, n, K_, dscale);
    check(cudaGetLastError(), "scale_rows");
    drms_ = arena_.take<double>(n, "row rms");
    check(cudaMemcpyAsync(drms_, row_rms_.data(), n * sizeof(double), cudaMemcpyHostToDevice, st_), "upload");

    act_ = lambda_ > 0;
    if (act_) {
      alloc_stack(x_, p_.tokens, true);
      check(cudaMemcpyAsync(x_.d, p_.activations, (size_t)p_.tokens * K_ * 4, cudaMemcpyHostToDevice, st_), "upload");
      // c_t = K / (3 T' ||x_t||^4), T' = rows with ||x_t|| > 0
      std::vector<double> xs = row_sums(x_.d, p_.tokens, ROW_SQ);
      std::vector<double> c(p_.tokens, 0.0);
      int counted = 0;
      for (int t = 0; t < p_.tokens; ++t)
        if (xs[t] > 0) {
          c[t] = 1 / (xs[t] * xs[t]);
          counted++;
        }
      for (int t = 0; t < p_.tokens; ++t) c[t] = c[t] * K_ / (3.0 * std::max(counted, 1));
      dc_ = arena_.take<double>(p_.tokens, "token weights");
      check(cudaMemcpyAsync(dc_, c.data(), c.size() * sizeof(double), cudaMemcpyHostToDevice, st_), "upload");
    }
    const int qmax = std::max(a_, b_);
    drc_ = arena_.take<float>((size_t)qmax * qmax, "factors");
    dr1_ = arena_.take<float>((size_t)a_ * a_, "factors");
    dr2_ = arena_.take<float>((size_t)b_ * b_, "factors");
    parts_ = arena_.take<float>((size_t)(kMaxSlots + 1) * qmax * qmax, "split products");
    dm_ = arena_.take<double>((size_t)qmax * qmax, "majoriser");
    dsum_ = arena_.take<double>(1, "sums");
  }

  void alloc_stack(Stack &s, int n, bool activations) {
    const size_t count = (size_t)n * K_;
    const char *what = activations ? "the activation rows" : "the stacked weights";
    s.n = n;
    s.d = arena_.take<float>(count, what);
    s.q = arena_.take<float>(count, what);
    s.y = arena_.take<float>(count, what);
    s.yc = arena_.take<float>(count, what);
    s.t = arena_.take<float>(count, what);
    if (activations) s.g = arena_.take<float>(count, what);
    s.ra = arena_.take<double>(n, what);
    s.rb = arena_.take<double>(n, what);
    s.rac = arena_.take<double>(n, what);
    s.rbc = arena_.take<double>(n, what);
  }

  // ---- reductions
  void launch_rows(const float *y, int rows, int mode, double sigma, double *out_a, double *out_b) {
    const int grid = std::min(rows, 65535 * 4);
    row_stats_kernel<<<grid, RED_THREADS, 0, st_>>>(y, rows, K_, mode, sigma, drms_, out_a, out_b);
    check(cudaGetLastError(), "row_stats");
  }
  std::vector<double> row_sums(const float *y, int rows, int mode) {
    double *tmp = arena_.take<double>(rows, "row sums");
    launch_rows(y, rows, mode, 0, tmp, nullptr);
    std::vector<double> out(rows);
    check(cudaMemcpyAsync(out.data(), tmp, rows * sizeof(double), cudaMemcpyDeviceToHost, st_), "download");
    check(cudaStreamSynchronize(st_), "sync");
    return out;
  }
  double device_sum(const double *v, const double *w, int n) {
    weighted_sum_kernel<<<1, 1024, 0, st_>>>(v, w, n, dsum_);
    check(cudaGetLastError(), "weighted_sum");
    double out = 0;
    check(cudaMemcpyAsync(&out, dsum_, sizeof(double), cudaMemcpyDeviceToHost, st_), "download");
    check(cudaStreamSynchronize(st_), "sync");
    return out;
  }
  // ε_w of the current (candidate = false) or candidate rows, |y| smoothed with sigma; fills the row sums h
  double weight_objective(Stack &s, double sigma, bool candidate) {
    const float *y = candidate ? s.yc : s.y;
    double *h = candidate ? s.rac : s.ra;
    launch_rows(y, s.n, ROW_ABS, sigma, h, nullptr);
    const double acc = device_sum(h, nullptr, s.n);
    return energy_ > 0 ? 1 - acc / (K_ * energy_) : 0;
  }
  // κ_x of the current or candidate activation rows; fills the row sums of y^4 and max y^2
  double tail(Stack &s, bool candidate) {
    double *s4 = candidate ? s.rac : s.ra, *mx = candidate ? s.rbc : s.rb;
    launch_rows(candidate ? s.yc : s.y, s.n, ROW_POW4, 0, s4, mx);
    return device_sum(s4, dc_, s.n);
  }
  double objective(double sigma, bool candidate) {
    const double jw = weight_objective(w_, sigma, candidate);
    return act_ ? jw + lambda_ * tail(x_, candidate) : jw;
  }

  // ---- products (row-major [rows*p, q] matrices read as cuBLAS column-major transposes)
  void blas_check(int rc, const char *what) {
    if (rc != 0) throw DeviceError{std::string("OKT: cuBLAS error ") + std::to_string(rc) + " in " + what};
  }
  // s.q = (other factor applied from the left), in the layout of step f: f = 1 (R2 step): Q_n = R1^T D_n natural,
  // gemm(N, T, b, a, a, D_n ld b, R1 ld a, Q_n ld b); f = 0 (R1 step): Q_n = (D_n R2)^T transposed,
  // gemm(T, T, a, b, b, D_n ld b, R2 ld b, Q_n ld a).
  void left_product(Stack &s, int f) {
    const float one = 1, zero = 0;
    for (int r0 = 0; r0 < s.n; r0 += kBatchChunk) {
      const int batch = std::min(kBatchChunk, s.n - r0);
      const float *d = s.d + (size_t)r0 * K_;
      float *q = s.q + (size_t)r0 * K_;
      const int rc = f == 1 ? blas_.gemm_strided_batched_ex(h_, kOpN, kOpT, b_, a_, a_, &one, d, kR32F, b_, K_, dr1_,
                                                             kR32F, a_, 0, &zero, q, kR32F, b_, K_, batch,
                                                             kCompute32F, kGemmDefault)
                            : blas_.gemm_strided_batched_ex(h_, kOpT, kOpT, a_, b_, b_, &one, d, kR32F, b_, K_, dr2_,
                                                             kR32F, b_, 0, &zero, q, kR32F, a_, K_, batch,
                                                             kCompute32F, kGemmDefault);
      blas_check(rc, "the left product");
    }
  }
  // host M [size, size] (double) = Q^T C with Q, C row-major [rows, size]: gemm(N, T, size, size, rows, C ld size,
  // Q ld size) on chunks of rows (strided-batched), the chunks summed in double.
  std::vector<double> coefficient(const float *q, const float *c, size_t rows, int size) {
    const size_t n2 = (size_t)size * size;
    int slots = (int)std::min<size_t>(kMaxSlots, std::max<size_t>(1, rows / kChunkRows));
    const size_t chunk = rows / slots, rest = rows - chunk * slots;
    const float one = 1, zero = 0;
    blas_check(blas_.gemm_strided_batched_ex(h_, kOpN, kOpT, size, size, (int)chunk, &one, c, kR32F, size,
                                             (long long)(chunk * size), q, kR32F, size, (long long)(chunk * size),
                                             &zero, parts_, kR32F, size, (long long)n2, slots, kCompute32F,
                                             kGemmDefault),
               "the majoriser product");
    if (rest) {
      const size_t off = chunk * slots * size;
      blas_check(blas_.gemm_ex(h_, kOpN, kOpT, size, size, (int)rest, &one, c + off, kR32F, size, q + off, kR32F, size,
                               &zero, parts_ + slots * n2, kR32F, size, kCompute32F, kGemmDefault),
                 "the majoriser product");
      slots++;
    }
    sum_parts_kernel<<<(unsigned)((n2 + 255) / 256), 256, 0, st_>>>(parts_, slots, (int)n2, dm_);
    check(cudaGetLastError(), "sum_parts");
    std::vector<double> m(n2);
    check(cudaMemcpyAsync(m.data(), dm_, n2 * sizeof(double), cudaMemcpyDeviceToHost, st_), "download");
    check(cudaStreamSynchronize(st_), "sync");
    return m;
  }
  // s.yc = s.q R (R = drc_, size x size): gemm(N, N, size, rows, size, R ld size, Q ld size, Y ld size)
  void candidate(Stack &s, int size) {
    const float one = 1, zero = 0;
    const size_t rows = (size_t)s.n * K_ / size;
    for (size_t r0 = 0; r0 < rows; r0 += kGemmRows) {
      const int m = (int)std::min<size_t>(kGemmRows, rows - r0);
      blas_check(blas_.gemm_ex(h_, kOpN, kOpN, size, m, size, &one, drc_, kR32F, size, s.q + r0 * size, kR32F, size,
                               &zero, s.yc + r0 * size, kR32F, size, kCompute32F, kGemmDefault),
                 "the candidate product");
    }
  }

  void initial_rotation(Stack &s) {
    left_product(s, 1);  // R1^T D_n (natural)
    check(cudaMemcpyAsync(drc_, dr2_, (size_t)b_ * b_ * 4, cudaMemcpyDeviceToDevice, st_), "copy");
    candidate(s, b_);
    accept(s, true);
  }
  // the candidate becomes current; its layout is the step's (transposed = the R1 step's)
  void accept(Stack &s, bool natural) {
    std::swap(s.y, s.yc);
    std::swap(s.ra, s.rac);
    std::swap(s.rb, s.rbc);
    s.transposed = !natural;
  }

  // out (layout of step f) = piece of s.y (its own layout)
  void piece(Stack &s, int f, int mode, double sigma, float *out) {
    const bool to_transposed = f == 0;
    const int P = to_transposed ? b_ : a_, Q = to_transposed ? a_ : b_;
    const dim3 grid((Q + TILE - 1) / TILE, (P + TILE - 1) / TILE, std::min(s.n, 65535));
    const dim3 block(TILE, TILE_ROWS);
    const double *h = mode == PIECE_TARGET ? s.ra : nullptr;
    const double *rms = mode == PIECE_TARGET && sigma > 0 ? drms_ : nullptr;
    const double *c = mode == PIECE_TARGET ? nullptr : dc_;
    const double *m = mode == PIECE_LY ? s.rb : nullptr;
    if (s.transposed == to_transposed)
      piece_kernel<false><<<grid, block, 0, st_>>>(s.y, s.n, P, Q, mode, h, rms, sigma, c, m, out);
    else
      piece_kernel<true><<<grid, block, 0, st_>>>(s.y, s.n, P, Q, mode, h, rms, sigma, c, m, out);
    check(cudaGetLastError(), "piece");
  }

  void upload_factor(float *dst, const std::vector<double> &r, int size) {
    host_f_.resize((size_t)size * size);
    for (size_t i = 0; i < host_f_.size(); ++i) host_f_[i] = (float)r[i];
    check(cudaMemcpyAsync(dst, host_f_.data(), host_f_.size() * 4, cudaMemcpyHostToDevice, st_), "upload");
    check(cudaStreamSynchronize(st_), "sync");  // host_f_ is reused
  }

  // One block step on factor f (0: R1, 1: R2) (okt.ts factorStep); returns the (possibly unchanged) objective.
  double factor_step(int f, double sigma, double current) {
    const int size = f == 0 ? a_ : b_;
    const bool natural = f == 1;
    std::vector<double> &rf = f == 0 ? r1_ : r2_;
    float *drf = f == 0 ? dr1_ : dr2_;
    piece(w_, f, PIECE_TARGET, sigma, w_.t);
    left_product(w_, f);
    const std::vector<double> mw = coefficient(w_.q, w_.t, (size_t)w_.n * K_ / size, size);
    const double scale_w = energy_ > 0 ? 2 / energy_ : 0;
    if (!act_) {
      std::vector<double> m(mw.size()), q(mw.size());
      for (size_t i = 0; i < m.size(); ++i) m[i] = mw[i] * scale_w;
      bwq_okt::polar(m.data(), size, q.data());
      upload_factor(drc_, q, size);
      candidate(w_, size);
      const double value = objective(sigma, true);
      accept(w_, natural);
      rf = q;
      check(cudaMemcpyAsync(drf, drc_, (size_t)size * size * 4, cudaMemcpyDeviceToDevice, st_), "copy");
      return value;
    }
    left_product(x_, f);
    piece(x_, f, PIECE_LY, 0, x_.t);
    piece(x_, f, PIECE_G, 0, x_.g);
    const size_t xrows = (size_t)x_.n * K_ / size;
    const std::vector<double> mly = coefficient(x_.q, x_.t, xrows, size);
    const std::vector<double> mg = coefficient(x_.q, x_.g, xrows, size);
    return bwq_okt::backoff(beta_[f], size, mw, mly, mg, scale_w, lambda_, current, [&](const std::vector<double> &cand) {
      upload_factor(drc_, cand, size);
      candidate(w_, size);
      candidate(x_, size);
      return objective(sigma, true);
    }, [&](const std::vector<double> &cand) {
      accept(w_, natural);
      accept(x_, natural);
      rf = cand;
      check(cudaMemcpyAsync(drf, drc_, (size_t)size * size * 4, cudaMemcpyDeviceToDevice, st_), "copy");
    });
  }

  static constexpr int kBatchChunk = 32768;   // rows per strided-batched left product
  static constexpr int kMaxSlots = 256;       // chunks of the split majoriser product
  static constexpr size_t kChunkRows = 8192;  // target rows per chunk
  static constexpr size_t kGemmRows = 1 << 30;

  const bwq_okt_problem &p_;
  cudaStream_t st_;
  const bwq_cuda::CublasApi &blas_;
  void *h_;
  const int K_, a_, b_;
  double lambda_ = 0, energy_ = 0;
  bool act_ = false;
  double beta_[2] = {1, 1};
  Arena arena_;
  Stack w_, x_;
  std::vector<double> row_rms_, r1_, r2_;
  std::vector<float> host_f_;
  double *drms_ = nullptr, *dc_ = nullptr, *dm_ = nullptr, *dsum_ = nullptr;
  float *dr1_ = nullptr, *dr2_ = nullptr, *drc_ = nullptr, *parts_ = nullptr;
};

}  // namespace

namespace bwq_okt {

std::string run_on_stream(const bwq_okt_problem &p, bwq_okt_result &r, void *stream, const bwq_cuda::CublasApi &blas,
                          void *handle) {
  const std::string bad = check(p);
  if (!bad.empty()) return bad;
  if (!r.r1 || !r.r2 || !r.history) return "OKT: no result buffers";
  if (!handle || !blas.gemm_ex || !blas.gemm_strided_batched_ex)
    return "OKT: the device OKT needs cuBLAS with cublasGemmStridedBatchedEx";
  cudaStream_t st = (cudaStream_t)stream;
  try {
    Okt okt(p, st, blas, handle);
    okt.run(r);
    ::check(cudaStreamSynchronize(st), "sync");
  } catch (const DeviceError &e) {
    cudaStreamSynchronize(st);
    cudaGetLastError();
    return e.msg;
  }
  return "";
}

}  // namespace bwq_okt

extern "C" BWQ_EXPORT int bwq_cuda_okt(const bwq_okt_problem *problem, bwq_okt_result *result, char *msg,
                                       size_t msg_len) {
  auto say = [&](const std::string &s) {
    if (msg && msg_len) snprintf(msg, msg_len, "%s", s.c_str());
  };
  if (!problem || !result) return say("OKT: null problem or result"), BWQ_EINVAL;
  char buf[256] = "";
  const int rc = bwq_cuda::ensure_ready(buf, sizeof buf);
  if (rc != BWQ_OK) return say(buf[0] ? buf : "CUDA initialisation failed"), rc;
  bwq_cuda::CublasApi blas{};
  if (!bwq_cuda::cublas_api(&blas)) return say("OKT: libcublas could not be loaded"), BWQ_ECUBLAS;
  cudaStream_t st = nullptr;
  if (cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking) != cudaSuccess) {
    cudaGetLastError();
    return say("OKT: cannot create a CUDA stream"), BWQ_ECUDA;
  }
  void *handle = nullptr;
  std::string err;
  if (blas.create(&handle) != 0 || !handle) err = "OKT: cublasCreate failed";
  else if (blas.set_stream(handle, st) != 0) err = "OKT: cublasSetStream failed";
  else err = bwq_okt::run_on_stream(*problem, *result, st, blas, handle);
  if (handle) blas.destroy(handle);
  cudaStreamDestroy(st);
  say(err);
  if (err.empty()) return BWQ_OK;
  return bwq_okt::check(*problem).empty() ? BWQ_ECUDA : BWQ_EINVAL;
}
