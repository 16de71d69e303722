// PSP's passes over a binarized weight W [rows, cols] (BWLA, docs/ALGORITHMS.md §PSP) on the CPU threads, one row
// per task. The reference is src/quant/psp.ts (jsWeightPasses): the same float64 expressions in the same order per
// row, float32 rounding where the reference stores a Float32Array, no FMA contraction, so the results are equal bit
// for bit (test/quant/weight-passes.test.ts).
#pragma GCC optimize("fp-contract=off")
#include <math.h>
#include <stdint.h>

#include <vector>

#include "../ops_cpu.h"

namespace bwq {
namespace cpu {

namespace {

// sign⁺ of each t and the d²-weighted scale Σ d²|t| / Σ d² of the row
void binarize_row(const float *t, const double *d2, double d2sum, int cols, int8_t *signs, float *scale) {
  double acc = 0;
  for (int c = 0; c < cols; ++c) {
    const double x = t[c];
    signs[c] = x >= 0 ? 1 : -1;
    acc += d2[c] * fabs(x);
  }
  *scale = (float)(acc / d2sum);
}

}  // namespace

void psp_b_step(const float *w, const float *dense, const double *dw, const double *d2, int rows, int cols, int8_t *signs,
                float *scales) {
  double d2sum = 0;
  for (int c = 0; c < cols; ++c) d2sum += d2[c];
  parallel_rows(rows, 4, [&](int r0, int r1) {
    std::vector<float> t((size_t)cols);
    for (int r = r0; r < r1; ++r) {
      const size_t o = (size_t)r * cols;
      for (int c = 0; c < cols; ++c) t[c] = (float)((double)w[o + c] - (double)dense[o + c] / dw[c]);
      binarize_row(t.data(), d2, d2sum, cols, signs + o, scales + r);
    }
  });
}

void psp_residual(const float *w, const int8_t *signs, const float *scales, const double *dw, const float *dense, int rows,
                  int cols, float *residual, double *row_half, double *row_plain) {
  parallel_rows(rows, 4, [&](int r0, int r1) {
    for (int r = r0; r < r1; ++r) {
      const size_t o = (size_t)r * cols;
      const double s = scales[r];
      double half = 0, plain = 0;
      for (int c = 0; c < cols; ++c) {
        const double e = (double)w[o + c] - s * signs[o + c];
        plain += e * e;
        const float v = (float)(e * dw[c]);
        residual[o + c] = v;
        const double m = (double)v - (double)dense[o + c];
        half += m * m;
      }
      row_half[r] = half;
      row_plain[r] = plain;
    }
  });
}

void row_sq_dist(const float *a, const float *b, int rows, int cols, double *row_sum) {
  parallel_rows(rows, 4, [&](int r0, int r1) {
    for (int r = r0; r < r1; ++r) {
      const size_t o = (size_t)r * cols;
      double s = 0;
      for (int c = 0; c < cols; ++c) {
        const double m = (double)a[o + c] - (double)b[o + c];
        s += m * m;
      }
      row_sum[r] = s;
    }
  });
}

void binary_lowrank_weight(const int8_t *signs, const float *scales, const float *lr_a, const float *lr_b, int rank,
                           int rows, int cols, float *out) {
  parallel_rows(rows, 4, [&](int r0, int r1) {
    std::vector<double> row((size_t)cols);
    for (int r = r0; r < r1; ++r) {
      const size_t o = (size_t)r * cols;
      const double s = scales[r];
      for (int c = 0; c < cols; ++c) row[c] = s * signs[o + c];
      for (int k = 0; k < rank; ++k) {
        const double a = lr_a[(size_t)r * rank + k];
        const float *b = lr_b + (size_t)k * cols;
        for (int c = 0; c < cols; ++c) row[c] += a * (double)b[c];
      }
      for (int c = 0; c < cols; ++c) out[o + c] = (float)row[c];
    }
  });
}

}  // namespace cpu
}  // namespace bwq
