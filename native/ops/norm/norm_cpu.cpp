// RMSNorm per row, in transformers' LlamaRMSNorm order:
//   inv = 1 / sqrt(fl(sum_j x_j^2 / cols) + eps)   (sum in double)
//   y_j = w_j * fl(x_j * inv)                        (w absent: y_j = x_j * inv)
#include <math.h>

#include "../ops_cpu.h"

namespace bwq {
namespace cpu {

namespace {
BWQ_CLONES void norm_rows(const float *x, int r0, int r1, int cols, const float *w, float eps, float *y) {
  for (int r = r0; r < r1; ++r) {
    const float *xr = x + (size_t)r * cols;
    float *yr = y + (size_t)r * cols;
    double ss = 0;
    for (int j = 0; j < cols; ++j) ss += (double)xr[j] * xr[j];
    const double inv = 1.0 / sqrt((double)(float)(ss / cols) + (double)eps);
    if (w == nullptr) {
      for (int j = 0; j < cols; ++j) yr[j] = (float)(xr[j] * inv);
    } else {
      for (int j = 0; j < cols; ++j) yr[j] = w[j] * (float)(xr[j] * inv);
    }
  }
}
}  // namespace

void rms_norm(const float *x, int rows, int cols, const float *w, float eps, float *y) {
  parallel_rows(rows, 16, [&](int r0, int r1) { norm_rows(x, r0, r1, cols, w, eps, y); });
}

}  // namespace cpu
}  // namespace bwq
