// Householder QR of a tall matrix on the CPU threads: the randomized SVD's sketches (src/linalg/randomized-svd.ts),
// m up to the widest linear (28 672 for Llama-2-70B's down_proj) by n = rank + oversampling. The reference is
// src/linalg/qr.ts: the same float64 expressions in the same order per column (each column's dot product and update
// run on one thread, the columns spread over the threads), no FMA contraction, so Q and R are equal bit for bit
// (test/linalg/qr-native.test.ts). The working copies are column-major so that a column is contiguous.
#pragma GCC optimize("fp-contract=off")
#include <math.h>

#include <vector>

#include "../ops_cpu.h"

namespace bwq {
namespace cpu {

void householder_qr(const double *a, int m, int n, double *q, double *r) {
  std::vector<double> w((size_t)m * n), vs((size_t)m * n, 0.0), betas((size_t)n, 0.0);
  for (int i = 0; i < m; ++i)
    for (int c = 0; c < n; ++c) w[(size_t)c * m + i] = a[(size_t)i * n + c];
  const int grain = std::max(1, 65536 / std::max(1, m));
  for (int j = 0; j < n; ++j) {
    const double *wj = &w[(size_t)j * m];
    double norm = 0;
    for (int i = j; i < m; ++i) norm += wj[i] * wj[i];
    norm = sqrt(norm);
    const double x0 = wj[j];
    const double alpha = x0 >= 0 ? -norm : norm;
    double *v = &vs[(size_t)j * m];
    double vnorm2 = 0;
    for (int i = j; i < m; ++i) {
      v[i] = i == j ? x0 - alpha : wj[i];
      vnorm2 += v[i] * v[i];
    }
    if (vnorm2 == 0 || norm == 0) continue;
    const double beta = 2 / vnorm2;
    betas[j] = beta;
    parallel_rows(n - j, grain, [&](int c0, int c1) {
      for (int c = j + c0; c < j + c1; ++c) {
        double *wc = &w[(size_t)c * m];
        double dot = 0;
        for (int i = j; i < m; ++i) dot += v[i] * wc[i];
        const double f = beta * dot;
        for (int i = j; i < m; ++i) wc[i] = wc[i] - f * v[i];
      }
    });
  }
  // Q = H_0 ... H_{n-1} applied to the first n columns of I, column by column
  std::vector<double> qc((size_t)m * n, 0.0);
  for (int i = 0; i < n; ++i) qc[(size_t)i * m + i] = 1;
  parallel_rows(n, 1, [&](int c0, int c1) {
    for (int c = c0; c < c1; ++c) {
      double *col = &qc[(size_t)c * m];
      for (int j = n - 1; j >= 0; --j) {
        const double beta = betas[j];
        if (beta == 0) continue;
        const double *v = &vs[(size_t)j * m];
        double dot = 0;
        for (int i = j; i < m; ++i) dot += v[i] * col[i];
        const double f = beta * dot;
        for (int i = j; i < m; ++i) col[i] = col[i] - f * v[i];
      }
    }
  });
  for (size_t k = 0; k < (size_t)n * n; ++k) r[k] = 0;
  for (int i = 0; i < n; ++i)
    for (int c = i; c < n; ++c) r[(size_t)i * n + c] = w[(size_t)c * m + i];
  // non-negative diagonal
  for (int i = 0; i < n; ++i) {
    const bool flip = r[(size_t)i * n + i] < 0;
    if (flip)
      for (int c = i; c < n; ++c) r[(size_t)i * n + c] = -r[(size_t)i * n + c];
    const double *col = &qc[(size_t)i * m];
    for (int row = 0; row < m; ++row) q[(size_t)row * n + i] = flip ? -col[row] : col[row];
  }
}

}  // namespace cpu
}  // namespace bwq
