// The block-wise reconstruction's activation quantizers, forward and backward, per row on the CPU threads. The
// reference is src/quant/reconstruct/act-quant.ts (quantForward / quantBackward; the equations are there): the same
// float64 expressions in the same order per row, float32 stores where the reference stores a Float32Array, JS's
// Math.round (ties toward +inf, the sign of zero kept) and round-half-even where it uses them, no FMA contraction:
// equal bit for bit (test/quant/reconstruct/act-quant-native.test.ts). The parameter gradient comes back per row;
// the caller adds the rows in order.
#pragma GCC optimize("fp-contract=off")
#include <math.h>
#include <stdint.h>

#include <algorithm>

#include "../ops_cpu.h"

namespace bwq {
namespace cpu {

namespace {

// JS Math.round: the nearest integer, ties toward +inf; -0 for -0.5 <= x < 0 (and x = -0).
inline double js_round(double x) {
  double r = floor(x);
  if (x - r >= 0.5) r += 1;
  if (r == 0 && (x < 0 || (x == 0 && signbit(x)))) return -0.0;
  return r;
}

// src/quant/quantizers.ts roundHalfEven: Math.round, then a tie that went to an odd integer comes back by one.
inline double round_half_even(double x) {
  const double r = js_round(x);
  if (r - x == 0.5 && fmod(r, 2.0) != 0) return r - 1;
  return r;
}

struct RowExtent {
  int j0, n, count;
};

inline RowExtent extent(int r, int cols, const ActRows &c) {
  if (c.period <= 0) return {0, cols, cols};
  const int i = r % c.period;
  const int j0 = c.window > 0 ? std::max(0, i - c.window + 1) : 0;
  return {j0, i + 1, c.unmasked ? i + 1 - j0 : cols};
}

inline double abs_mean(const float *x, int j0, int n, int count) {
  double sum = 0;
  for (int j = j0; j < n; ++j) sum += fabs((double)x[j]);
  return sum / count;
}

const double kLevelsMinT = 0.05;  // act-quant.ts LEVELS_MIN_T

}  // namespace

void act_quant_forward(const ActQuant &q, double param, const float *x, int rows, int cols, const ActRows &causal,
                       float *out, double *stat, double *scale) {
  parallel_rows(rows, 8, [&](int r0, int r1) {
    for (int r = r0; r < r1; ++r) {
      const float *xr = x + (size_t)r * cols;
      float *o = out + (size_t)r * cols;
      const RowExtent e = extent(r, cols, causal);
      if (q.kind == ActQuant::INT) {
        const double qmax = pow(2.0, q.bits - 1) - 1;
        double amax = 0;
        for (int j = e.j0; j < e.n; ++j) amax = std::max(amax, fabs((double)xr[j]));
        const double s = amax == 0 ? 1 : (param * amax) / qmax;
        stat[r] = amax;
        scale[r] = s;
        for (int j = e.j0; j < e.n; ++j) {
          double v = round_half_even((double)xr[j] / s);
          if (v > qmax) v = qmax;
          else if (v < -qmax) v = -qmax;
          o[j] = (float)(v * s);
        }
      } else if (q.kind == ActQuant::LEVELS) {
        const double qmax = (q.levels - 1) / 2.0;
        const double t = std::max(param, kLevelsMinT);
        const double mu = abs_mean(xr, e.j0, e.n, e.count);
        const double u = (6 * t * mu) / q.levels;
        stat[r] = mu;
        scale[r] = u;
        if (u == 0) continue;
        for (int j = e.j0; j < e.n; ++j) {
          double v = js_round((double)xr[j] / u);
          if (v > qmax) v = qmax;
          else if (v < -qmax) v = -qmax;
          o[j] = (float)(v * u);
        }
      } else {  // TERNARY
        const double mu = abs_mean(xr, e.j0, e.n, e.count);
        const double delta = param * mu;
        int kept = 0;
        double kept_sum = 0;
        for (int j = e.j0; j < e.n; ++j) {
          const double a = fabs((double)xr[j]);
          if (a > delta) {
            kept++;
            kept_sum += a;
          }
        }
        const double s = kept == 0 ? 0 : kept_sum / kept;
        stat[r] = mu;
        scale[r] = s;
        for (int j = e.j0; j < e.n; ++j) {
          const double v = xr[j];
          o[j] = (float)(fabs(v) > delta ? (v > 0 ? s : -s) : 0.0);
        }
      }
    }
  });
}

void act_quant_backward(const ActQuant &q, double param, const float *x, const float *g, int rows, int cols,
                        const ActRows &causal, const double *stat, const double *scale, double weight, float *dx,
                        double *row_grad) {
  parallel_rows(rows, 8, [&](int r0, int r1) {
    for (int r = r0; r < r1; ++r) {
      const size_t o = (size_t)r * cols;
      const RowExtent e = extent(r, cols, causal);
      double row = 0;
      if (q.kind == ActQuant::INT || q.kind == ActQuant::LEVELS) {
        const bool is_int = q.kind == ActQuant::INT;
        const double qmax = is_int ? pow(2.0, q.bits - 1) - 1 : (q.levels - 1) / 2.0;
        const double s = scale[r];
        const double dsdp = is_int ? (stat[r] == 0 ? 0 : stat[r] / qmax) : (param > kLevelsMinT ? (6 * stat[r]) / q.levels : 0);
        if (s == 0) {
          row_grad[r] = 0;
          continue;
        }
        double acc = 0;
        for (int j = e.j0; j < e.n; ++j) {
          const double z = (double)x[o + j] / s;
          const double gj = g[o + j];
          if (z >= qmax) acc += gj * qmax;
          else if (z <= -qmax) acc -= gj * qmax;
          else {
            const double rz = is_int ? round_half_even(z) : js_round(z);
            acc += gj * (rz - z);
            dx[o + j] = (float)((double)dx[o + j] + weight * gj);
          }
        }
        row = acc * dsdp;
      } else {  // TERNARY
        const double mu = stat[r], s = scale[r];
        const double delta = param * mu;
        const double w = std::max(delta, 0.05 * mu);
        for (int j = e.j0; j < e.n; ++j) {
          const double gj = g[o + j];
          dx[o + j] = (float)((double)dx[o + j] + weight * gj);
          const double v = x[o + j];
          if (w > 0 && fabs(fabs(v) - delta) < w / 2) row -= gj * (v > 0 ? s : v < 0 ? -s : 0) * (mu / w);
        }
      }
      row_grad[r] = row;
    }
  });
}

void quantize_rows(int kind, int bits, double param, const float *x, int rows, int cols, float *out) {
  const double f_param = (float)param;
  parallel_rows(rows, 16, [&](int r0, int r1) {
    for (int r = r0; r < r1; ++r) {
      const float *xr = x + (size_t)r * cols;
      float *o = out + (size_t)r * cols;
      if (kind == 0) {
        if (o != xr) std::copy(xr, xr + cols, o);
      } else if (kind == 1) {
        const double qmax = ldexp(1.0, bits - 1) - 1;
        double amax = 0;
        for (int j = 0; j < cols; ++j) amax = std::max(amax, fabs((double)xr[j]));
        // quantizers.ts intStep: fl(fl(fl(clip)·max|x|) / qmax), 1 for an all-zero row
        const double s = amax == 0 ? 1.0 : (double)(float)((double)(float)(f_param * amax) / qmax);
        for (int j = 0; j < cols; ++j) {
          double v = round_half_even((double)(float)((double)xr[j] / s));
          if (v > qmax) v = qmax;
          else if (v < -qmax) v = -qmax;
          o[j] = (float)(v * s);
        }
      } else if (kind == 2) {
        double sum_abs = 0;
        for (int j = 0; j < cols; ++j) sum_abs += fabs((double)xr[j]);
        // ternaryThreshold: fl(fl(t) · fl(fl(Σ|x|) / cols)); meanMagnitude: fl(fl(Σ kept) / kept)
        const double delta = (float)(f_param * (double)(float)((double)(float)sum_abs / cols));
        int kept = 0;
        double kept_sum = 0;
        for (int j = 0; j < cols; ++j) {
          const double a = fabs((double)xr[j]);
          if (a > delta) {
            kept++;
            kept_sum += a;
          }
        }
        const float s = kept == 0 ? 0.0f : (float)((double)(float)kept_sum / kept);
        for (int j = 0; j < cols; ++j) {
          const float v = xr[j];
          o[j] = fabs((double)v) > delta ? (v > 0 ? s : -s) : 0.0f;
        }
      } else {
        double sum_abs = 0;
        for (int j = 0; j < cols; ++j) sum_abs += fabs((double)xr[j]);
        const float s = (float)((double)(float)sum_abs / cols);
        for (int j = 0; j < cols; ++j) o[j] = xr[j] >= 0 ? s : -s;
      }
    }
  });
}

}  // namespace cpu
}  // namespace bwq
