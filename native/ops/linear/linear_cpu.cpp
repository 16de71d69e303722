// Linear layers on the CPU:
//   packed_linear:       y[m,n] = fl(s[m] * wscale[n] * acc[m,n]) (double product), acc = code . B exact from the
//                        popcount kernels (native/src: scalar / AVX2 / AVX-512); INT8PAIR: acc = 256 acc_hi + acc_lo
//   float_binary_linear: y[m,n] = wscale[n] * sum_k x[m,k] B[n,k]  (float32 sums)
//   gemm:                c[m,n] (+)= sum_k a[m,k] W[n,k], W in f32 / bf16 / f16 (float32 sums)
// The float GEMM converts a panel of W rows to float32, then runs 4x4 register tiles of dot products with
// outer products of 32 columns at a time (compiled per ISA by BWQ_CLONES).
#include <string.h>

// Multiply-adds of the float GEMMs become FMAs where the ISA has them.
#pragma GCC optimize("fp-contract=fast")

#include <algorithm>
#include <vector>

#include "../../include/bwq.h"
#include "../half.h"
#include "../ops_cpu.h"

namespace bwq {
namespace cpu {

namespace {
constexpr int kPanel = 32;  // W rows per task

// Outer-product micro-kernel: c[0:MR, 0:nn] (+)= a[0:MR, 0:k] . wt[0:k, 0:32] where wt holds 32 columns of the
// right-hand side per k (row stride ldwt): 2 x 16-float vectors per row of c, no horizontal sums.
typedef float v16 __attribute__((vector_size(64), aligned(4)));
// 8-row tiles (16 vector accumulators) where AVX-512 has 32 vector registers; 4-row tiles elsewhere.
inline bool wide_tiles() {
  static const bool wide = bwq_cpu_level() == BWQ_CPU_AVX512;
  return wide;
}
template <int MR>
__attribute__((always_inline)) inline void tile(const float *a, int lda, const float *wt, int k, float *c, int ldc,
                                                int nn, bool accumulate, int ldwt = 32) {
  v16 acc[MR][2];
  for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = (v16){};
  for (int p = 0; p < k; ++p) {
    const v16 w0 = *(const v16 *)(wt + (size_t)p * ldwt), w1 = *(const v16 *)(wt + (size_t)p * ldwt + 16);
    for (int i = 0; i < MR; ++i) {
      const float av = a[(size_t)i * lda + p];
      acc[i][0] += av * w0;
      acc[i][1] += av * w1;
    }
  }
  for (int i = 0; i < MR; ++i) {
    float *o = c + (size_t)i * ldc;
    if (nn == 32 && !accumulate) {
      *(v16 *)o = acc[i][0];
      *(v16 *)(o + 16) = acc[i][1];
    } else if (nn == 32) {
      *(v16 *)o = *(v16 *)o + acc[i][0];
      *(v16 *)(o + 16) = *(v16 *)(o + 16) + acc[i][1];
    } else {
      for (int l = 0; l < nn; ++l) o[l] = (accumulate ? o[l] : 0.0f) + acc[i][l >> 4][l & 15];
    }
  }
}
}  // namespace

BWQ_CLONES void panel_gemm(const float *a, int m, int lda, const float *w, int ldw, int nn, int k, float *c, int ldc,
                           bool accumulate) {
  thread_local std::vector<float> wt;
  wt.resize((size_t)k * 32);
  for (int j0 = 0; j0 < nn; j0 += 32) {
    const int cols = nn - j0 < 32 ? nn - j0 : 32;
    for (int j = 0; j < 32; ++j) {
      const float *row = w + (size_t)(j0 + j) * ldw;
      if (j < cols)
        for (int p = 0; p < k; ++p) wt[(size_t)p * 32 + j] = row[p];
      else
        for (int p = 0; p < k; ++p) wt[(size_t)p * 32 + j] = 0;
    }
    int i = 0;
    if (wide_tiles())
      for (; i + 8 <= m; i += 8)
        tile<8>(a + (size_t)i * lda, lda, wt.data(), k, c + (size_t)i * ldc + j0, ldc, cols, accumulate);
    for (; i + 4 <= m; i += 4)
      tile<4>(a + (size_t)i * lda, lda, wt.data(), k, c + (size_t)i * ldc + j0, ldc, cols, accumulate);
    for (; i < m; ++i) tile<1>(a + (size_t)i * lda, lda, wt.data(), k, c + (size_t)i * ldc + j0, ldc, cols, accumulate);
  }
}

BWQ_CLONES void panel_gemm_nn(const float *a, int m, int lda, const float *b, int ldb, int n, int k, float *c, int ldc,
                              bool accumulate) {
  for (int j0 = 0; j0 + 32 <= n; j0 += 32) {
    int i = 0;
    if (wide_tiles())
      for (; i + 8 <= m; i += 8)
        tile<8>(a + (size_t)i * lda, lda, b + j0, k, c + (size_t)i * ldc + j0, ldc, 32, accumulate, ldb);
    for (; i + 4 <= m; i += 4)
      tile<4>(a + (size_t)i * lda, lda, b + j0, k, c + (size_t)i * ldc + j0, ldc, 32, accumulate, ldb);
    for (; i < m; ++i) tile<1>(a + (size_t)i * lda, lda, b + j0, k, c + (size_t)i * ldc + j0, ldc, 32, accumulate, ldb);
  }
  for (int j = n - n % 32; j < n; ++j)  // columns past the last multiple of 32
    for (int i = 0; i < m; ++i) {
      float s = 0;
      for (int p = 0; p < k; ++p) s += a[(size_t)i * lda + p] * b[(size_t)p * ldb + j];
      c[(size_t)i * ldc + j] = accumulate ? c[(size_t)i * ldc + j] + s : s;
    }
}

namespace {
// Rows [n0, n0 + nn) of W as float32 (a view when W is float32 already).
const float *panel_of(const FloatWeights &w, int n0, int nn, std::vector<float> &buf) {
  const size_t k = (size_t)w.k;
  if (w.dtype == DType::F32) return (const float *)w.data + (size_t)n0 * k;
  buf.resize((size_t)nn * k);
  const uint16_t *src = (const uint16_t *)w.data + (size_t)n0 * k;
  for (size_t i = 0; i < (size_t)nn * k; ++i) buf[i] = w.dtype == DType::BF16 ? bf16_to_f32(src[i]) : f16_to_f32(src[i]);
  return buf.data();
}

// Rows [n0, n0 + nn) of B as +-1 float32.
const float *binary_panel(const PackedWeights &w, int n0, int nn, std::vector<float> &buf) {
  const int k = w.k;
  buf.resize((size_t)nn * k);
  const uint32_t *words = (const uint32_t *)w.data;
  for (int j = 0; j < nn; ++j) {
    const uint32_t *row = words + (size_t)(n0 + j) * w.ld_words;
    float *o = buf.data() + (size_t)j * k;
    for (int q = 0; q < k; ++q) o[q] = (row[q >> 5] >> (q & 31)) & 1u ? 1.0f : -1.0f;
  }
  return buf.data();
}

// Splits the n output columns into panels; with few panels, the m rows too.
void run_panels(int m, int n, const std::function<void(int, int, int, int)> &fn) {
  const int panels = (n + kPanel - 1) / kPanel;
  const int want = 4 * pool_threads();
  const int mchunks = panels >= want || m < 8 ? 1 : std::min((m + 3) / 4, (want + panels - 1) / panels);
  const int mstep = (m + mchunks - 1) / mchunks;
  parallel_for(panels * mchunks, [&](int t) {
    const int p = t % panels, mc = t / panels;
    const int n0 = p * kPanel, nn = std::min(kPanel, n - n0);
    const int m0 = mc * mstep, m1 = std::min(m, m0 + mstep);
    if (m0 < m1) fn(m0, m1, n0, nn);
  });
}
}  // namespace

void gemm(const float *a, int m, int lda, const FloatWeights &w, float *c, int ldc, bool accumulate) {
  if (m <= 0 || w.n <= 0) return;
  run_panels(m, w.n, [&](int m0, int m1, int n0, int nn) {
    thread_local std::vector<float> buf;
    const float *panel = panel_of(w, n0, nn, buf);
    panel_gemm(a + (size_t)m0 * lda, m1 - m0, lda, panel, w.k, nn, w.k, c + (size_t)m0 * ldc + n0, ldc, accumulate);
  });
}

void gram(const float *x, int rows, int cols, float *h) {
  if (rows <= 0 || cols <= 0) return;
  // xt [cols, rows] = x^T; then h (+)= xt . xt^T, which is gemm's a . W^T with a = W = xt
  std::vector<float> xt((size_t)rows * cols);
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) xt[(size_t)c * rows + r] = x[(size_t)r * cols + c];
  gemm(xt.data(), cols, rows, FloatWeights{cols, rows, DType::F32, xt.data()}, h, cols, true);
}

void float_binary_linear(const float *x, int rows, const PackedWeights &w, const float *wscale, float *y) {
  if (rows <= 0 || w.n <= 0) return;
  run_panels(rows, w.n, [&](int m0, int m1, int n0, int nn) {
    thread_local std::vector<float> buf;
    const float *panel = binary_panel(w, n0, nn, buf);
    float *c = y + (size_t)m0 * w.n + n0;
    panel_gemm(x + (size_t)m0 * w.k, m1 - m0, w.k, panel, w.k, nn, w.k, c, w.n, false);
    for (int i = 0; i < m1 - m0; ++i)
      for (int j = 0; j < nn; ++j) c[(size_t)i * w.n + j] *= wscale[n0 + j];
  });
}

void packed_linear(const Codes &codes, int rows, const PackedWeights &w, const float *wscale, int32_t *acc, float *y) {
  const int n = w.n, k = w.k;
  const uint32_t *W = (const uint32_t *)w.data;
  if (codes.form == CodeForm::TERNARY) {
    bwq_cpu_ternary_binary_gemm(codes.plus, codes.minus, W, rows, n, k, acc);
  } else {
    bwq_cpu_int8_binary_gemm(codes.i8, W, rows, n, k, acc);
    if (codes.form == CodeForm::INT8PAIR) bwq_cpu_int8_binary_gemm(codes.i8_low, W, rows, n, k, acc + (size_t)rows * n);
  }
  const bool pair = codes.form == CodeForm::INT8PAIR;
  parallel_rows(rows, 4, [&](int r0, int r1) {
    for (int r = r0; r < r1; ++r) {
      const double s = codes.scales[r];
      const int32_t *hi = acc + (size_t)r * n, *lo = acc + (size_t)(rows + r) * n;
      float *o = y + (size_t)r * n;
      for (int j = 0; j < n; ++j) {
        const double sum = pair ? 256.0 * hi[j] + lo[j] : (double)hi[j];
        o[j] = (float)(s * (double)wscale[j] * sum);
      }
    }
  });
}

}  // namespace cpu
}  // namespace bwq
