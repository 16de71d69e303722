// PSP's passes over a binarized weight W [rows, cols] (BWLA, docs/ALGORITHMS.md §PSP) and the column-block
// compensation's (src/quant/column-blocks.ts) on the CPU threads. The reference is src/quant/weight-passes.ts
// (jsWeightPasses): the same float64 expressions in the same order per row, float32 rounding where the reference
// stores a Float32Array, no FMA contraction, so the results are equal bit for bit (test/quant/weight-passes.test.ts).
#pragma GCC optimize("fp-contract=off")
#include <math.h>
#include <stdint.h>

#include <algorithm>
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

void subtract_f32(float *dst, const float *src, size_t n) {
  const int chunks = (int)std::min<size_t>(64, (n + 65535) / 65536);
  parallel_rows(chunks, 1, [&](int c0, int c1) {
    const size_t i0 = n * c0 / chunks, i1 = n * c1 / chunks;
    for (size_t i = i0; i < i1; ++i) dst[i] = (float)((double)dst[i] - (double)src[i]);
  });
}

void transpose_f32(const float *x, int rows, int cols, float *out) {
  const int tile = 32, tiles = (rows + tile - 1) / tile;
  parallel_rows(tiles, 1, [&](int t0, int t1) {
    for (int r0 = t0 * tile; r0 < std::min(rows, t1 * tile); r0 += tile)
      for (int c0 = 0; c0 < cols; c0 += tile)
        for (int r = r0; r < std::min(rows, r0 + tile); ++r)
          for (int c = c0; c < std::min(cols, c0 + tile); ++c) out[(size_t)c * rows + r] = x[(size_t)r * cols + c];
  });
}

void block_errors(const float *bt, const float *qb, const double *diag, int rows, int width, float *q, int ldq, float *et) {
  parallel_rows(rows, 64, [&](int r0, int r1) {
    for (int r = r0; r < r1; ++r) {
      const float *qr = qb + (size_t)r * width;
      for (int c = 0; c < width; ++c) {
        q[(size_t)r * ldq + c] = qr[c];
        const float e = (float)((double)bt[(size_t)c * rows + r] - (double)qr[c]);
        et[(size_t)c * rows + r] = (float)((double)e / diag[c]);
      }
    }
  });
}

void sign_block(const float *block, int rows, int width, const float *scales, int8_t *signs, int ld, int start, float *out) {
  parallel_rows(rows, 64, [&](int r0, int r1) {
    for (int r = r0; r < r1; ++r) {
      const float a = scales[r];
      for (int c = 0; c < width; ++c) {
        const bool positive = block[(size_t)r * width + c] >= 0;
        signs[(size_t)r * ld + start + c] = positive ? 1 : -1;
        out[(size_t)r * width + c] = positive ? a : -a;
      }
    }
  });
}

void scale_fit(const float *bh, const float *w, const float *low, const int8_t *signs, int rows, int cols, double *num,
               double *den) {
  parallel_rows(rows, 8, [&](int r0, int r1) {
    for (int r = r0; r < r1; ++r) {
      const size_t o = (size_t)r * cols;
      double nr = 0, dr = 0;
      for (int c = 0; c < cols; ++c) {
        const double v = bh[o + c];
        nr += v * (low ? (double)w[o + c] - (double)low[o + c] : (double)w[o + c]);
        dr += v * signs[o + c];
      }
      num[r] = nr;
      den[r] = dr;
    }
  });
}

void binarization_rows(const float *w, int rows, int cols, double *err, double *energy) {
  parallel_rows(rows, 8, [&](int r0, int r1) {
    for (int r = r0; r < r1; ++r) {
      const float *x = w + (size_t)r * cols;
      double sum_abs = 0, sum_sq = 0;
      for (int c = 0; c < cols; ++c) {
        const double v = x[c];
        sum_abs += fabs(v);
        sum_sq += v * v;
      }
      const double alpha = sum_abs / cols;
      err[r] = std::max(0.0, sum_sq - cols * alpha * alpha);
      energy[r] = sum_sq;
    }
  });
}

void pack_signs(const int8_t *signs, int rows, int cols, uint32_t *out) {
  const int words = (cols + 31) / 32;
  parallel_rows(rows, 64, [&](int r0, int r1) {
    for (int r = r0; r < r1; ++r) {
      const int8_t *s = signs + (size_t)r * cols;
      for (int u = 0; u < words; ++u) {
        uint32_t word = 0;
        const int end = std::min(32, cols - 32 * u);
        for (int j = 0; j < end; ++j) word |= (uint32_t)(s[32 * u + j] > 0) << j;
        out[(size_t)r * words + u] = word;
      }
    }
  });
}

}  // namespace cpu
}  // namespace bwq
