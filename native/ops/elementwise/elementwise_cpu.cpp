// Elementwise ops: bias rows, residual adds, and the gated activation gate = fl(act(gate)) * up with
//   SiLU x/(1+e^-x), GELU 0.5x(1+erf(x/sqrt2)), GELU-tanh 0.5x(1+tanh(sqrt(2/pi)(x+0.044715x^3))), ReLU,
// SiLU in float32 with exp_f32 (within a few ulp of the reference's double), the others in double rounded once.
#include <math.h>

#include "../ops_cpu.h"

namespace bwq {
namespace cpu {

namespace {
inline double act_of(double x, Act act) {
  switch (act) {
    case Act::SILU: return x / (1.0 + exp(-x));
    case Act::GELU: return 0.5 * x * (1.0 + erf(x / M_SQRT2));
    case Act::GELU_TANH: return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
    case Act::RELU: return x > 0 ? x : 0;
  }
  return x;
}
}  // namespace

void add_bias(float *y, int rows, int cols, const float *bias) {
  for (int r = 0; r < rows; ++r) {
    float *o = y + (size_t)r * cols;
    for (int j = 0; j < cols; ++j) o[j] += bias[j];
  }
}

void add(float *a, const float *b, size_t count) {
  for (size_t i = 0; i < count; ++i) a[i] += b[i];
}

void gated_act(float *gate, const float *up, size_t count, Act act) {
  const int chunks = (int)((count + 4095) / 4096);
  parallel_for(chunks, [&](int c) {
    const size_t i0 = (size_t)c * 4096, i1 = i0 + 4096 < count ? i0 + 4096 : count;
    if (act == Act::SILU) {  // x / (1 + exp(-x)) with exp_f32
      float e[4096];
      const int n = (int)(i1 - i0);
      for (int i = 0; i < n; ++i) e[i] = -gate[i0 + i];
      exp_f32(e, e, n);
      for (int i = 0; i < n; ++i) gate[i0 + i] = gate[i0 + i] / (1.0f + e[i]) * up[i0 + i];
      return;
    }
    for (size_t i = i0; i < i1; ++i) gate[i] = (float)act_of(gate[i], act) * up[i];
  });
}

void parallel_rows(int rows, int min_rows, const std::function<void(int, int)> &fn) {
  if (rows <= 0) return;
  const int nth = pool_threads();
  int chunks = rows / (min_rows > 0 ? min_rows : 1);
  if (chunks > 4 * nth) chunks = 4 * nth;
  if (chunks < 1 || nth <= 1) chunks = 1;
  const int step = (rows + chunks - 1) / chunks;
  parallel_for(chunks, [&](int c) {
    const int r0 = c * step, r1 = r0 + step < rows ? r0 + step : rows;
    if (r0 < r1) fn(r0, r1);
  });
}

}  // namespace cpu
}  // namespace bwq

namespace bwq {
namespace cpu {
// exp(x) = 2^n * exp(r), n = round(x log2 e), r = x - n ln2 (ln2 in two parts), exp(r) by a degree-6
// polynomial (Cephes expf); x clamped to [-87.3, 88.7]. No calls, so the loop vectorizes.
BWQ_CLONES void exp_f32(const float *x, float *y, int n) {
  for (int i = 0; i < n; ++i) {
    float v = x[i];
    v = v < -87.3f ? -87.3f : v > 88.7f ? 88.7f : v;
    const float t = v * 1.44269504088896341f + 12582912.0f;  // round to nearest via the 1.5 * 2^23 shift
    const float fn = t - 12582912.0f;
    const float r = (v - fn * 0.693359375f) + fn * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union {
      int32_t i;
      float f;
    } scale;
    scale.i = ((int32_t)fn + 127) << 23;
    y[i] = p * scale.f;
  }
}
}  // namespace cpu
}  // namespace bwq
