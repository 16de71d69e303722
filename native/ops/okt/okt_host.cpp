// Host half of the device OKT (okt.h): the problem's checks and the orthogonal polar factor of the Procrustes
// step, R = U V^T of M = U S V^T, by one-sided Jacobi (Hestenes) rotations in double. A line-by-line port of
// src/linalg/svd.ts (sweeps until no pair has |gamma| > 1e-15 sqrt(alpha beta), at most 60; columns ordered by
// descending norm; zero singular values get U columns by Gram-Schmidt from unit vectors) and
// src/linalg/procrustes.ts, so that both paths take the same factor (it is unique where M is nonsingular).
#include <math.h>

#include <algorithm>
#include <numeric>
#include <string>
#include <vector>

#include "okt.h"

namespace bwq_okt {

namespace {

// (x, y) <- (c x - s y, s x + c y) on two rows of length len
void rotate_pair(double *x, double *y, int len, double c, double s) {
  for (int i = 0; i < len; ++i) {
    const double u = x[i], v = y[i];
    x[i] = c * u - s * v;
    y[i] = s * u + c * v;
  }
}

}  // namespace

void polar(const double *m, int n, double *r) {
  const int rows = n;  // square: svd.ts's m >= n branch
  std::vector<double> g((size_t)rows * n), vt((size_t)n * n, 0.0);  // column-major A and V
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < n; ++j) g[(size_t)j * rows + i] = m[(size_t)i * n + j];
  for (int j = 0; j < n; ++j) vt[(size_t)j * n + j] = 1;
  const double tol = 1e-15;
  for (int sweep = 0; sweep < 60; ++sweep) {
    bool rotated = false;
    for (int p = 0; p < n - 1; ++p) {
      double *gp = &g[(size_t)p * rows];
      for (int q = p + 1; q < n; ++q) {
        double *gq = &g[(size_t)q * rows];
        double alpha = 0, beta = 0, gamma = 0;
        for (int i = 0; i < rows; ++i) {
          alpha += gp[i] * gp[i];
          beta += gq[i] * gq[i];
          gamma += gp[i] * gq[i];
        }
        if (gamma == 0 || fabs(gamma) <= tol * sqrt(alpha * beta)) continue;
        rotated = true;
        const double zeta = (beta - alpha) / (2 * gamma);
        const double t = (zeta < 0 ? -1.0 : 1.0) / (fabs(zeta) + sqrt(1 + zeta * zeta));
        const double c = 1 / sqrt(1 + t * t), s = c * t;
        rotate_pair(gp, gq, rows, c, s);
        rotate_pair(&vt[(size_t)p * n], &vt[(size_t)q * n], n, c, s);
      }
    }
    if (!rotated) break;
  }
  std::vector<double> norms(n);
  for (int j = 0; j < n; ++j) {
    double s = 0;
    for (int i = 0; i < rows; ++i) s += g[(size_t)j * rows + i] * g[(size_t)j * rows + i];
    norms[j] = sqrt(s);
  }
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int x, int y) { return norms[x] > norms[y]; });
  std::vector<double> u((size_t)rows * n, 0.0), v((size_t)n * n), sv(n);
  for (int k = 0; k < n; ++k) {
    const int j = order[k];
    const double sigma = norms[j];
    sv[k] = sigma;
    for (int i = 0; i < n; ++i) v[(size_t)i * n + k] = vt[(size_t)j * n + i];
    if (sigma > 0)
      for (int i = 0; i < rows; ++i) u[(size_t)i * n + k] = g[(size_t)j * rows + i] / sigma;
  }
  // zero singular values: orthonormal completion of U
  std::vector<double> col(rows);
  for (int k = 0; k < n; ++k) {
    if (sv[k] > 0) continue;
    for (int e = 0; e < rows; ++e) {
      std::fill(col.begin(), col.end(), 0.0);
      col[e] = 1;
      for (int j = 0; j < n; ++j) {
        if (j == k || (sv[j] == 0 && j > k)) continue;
        double d = 0;
        for (int i = 0; i < rows; ++i) d += u[(size_t)i * n + j] * col[i];
        for (int i = 0; i < rows; ++i) col[i] -= d * u[(size_t)i * n + j];
      }
      double nn = 0;
      for (int i = 0; i < rows; ++i) nn += col[i] * col[i];
      nn = sqrt(nn);
      if (nn > 1e-8) {
        for (int i = 0; i < rows; ++i) u[(size_t)i * n + k] = col[i] / nn;
        break;
      }
    }
  }
  // R = U V^T, summed in ascending k (gemm's order in dense.ts)
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) {
      double s = 0;
      for (int k = 0; k < n; ++k) s += u[(size_t)i * n + k] * v[(size_t)j * n + k];
      r[(size_t)i * n + j] = s;
    }
}

std::string check(const bwq_okt_problem &p) {
  if (p.a < 1 || p.b < 1 || (long long)p.a * p.b != p.k)
    return "OKT: k = " + std::to_string(p.k) + " is not a = " + std::to_string(p.a) + " times b = " + std::to_string(p.b);
  if (p.n_weights < 1 || !p.weights || !p.rows) return "OKT: no weight matrices";
  for (int i = 0; i < p.n_weights; ++i)
    if (!p.weights[i] || p.rows[i] < 1) return "OKT: weight matrix " + std::to_string(i) + " is empty";
  if (p.tokens < 0 || (p.tokens > 0 && !p.activations)) return "OKT: activation rows without data";
  if (!p.r1_init || !p.r2_init) return "OKT: no initial R1 / R2";
  if (p.iterations < 0 || p.anneal_iterations < 0 || p.n_anneal < 0 || (p.n_anneal > 0 && !p.anneal))
    return "OKT: negative iteration counts or a missing anneal schedule";
  if (!(p.tolerance >= 0) || !(p.activation_weight >= 0)) return "OKT: tolerance and activation weight must be >= 0";
  return "";
}

}  // namespace bwq_okt

extern "C" BWQ_EXPORT int bwq_okt_polar(const double *m, int n, double *r) {
  if (!m || !r || n < 1) return BWQ_EINVAL;
  bwq_okt::polar(m, n, r);
  return BWQ_OK;
}
