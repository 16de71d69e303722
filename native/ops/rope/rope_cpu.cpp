// Rotary position embedding (rotate_half form, as transformers applies it), in place, per row r with
// position p = positions[r], on the first 2*half dims of every head:
//   angle_i = fl(p * inv_freq_i), c = fl(cos angle_i), s = fl(sin angle_i)
//   x'_i = fl(x_i c) - fl(x_{i+half} s),  x'_{i+half} = fl(x_{i+half} c) + fl(x_i s)
// inv_freq comes from the model config (src/onnx/rope.ts: default, linear, llama3, dynamic).
#include <math.h>

#include <vector>

#include "../ops_cpu.h"

namespace bwq {
namespace cpu {

void rope(float *x, int rows, int heads, int head_dim, const float *inv_freq, int half, const int32_t *positions) {
  parallel_rows(rows, 8, [&](int r0, int r1) {
    std::vector<float> cs(2 * (size_t)half);
    for (int r = r0; r < r1; ++r) {
      const float p = (float)positions[r];
      for (int i = 0; i < half; ++i) {
        const float angle = p * inv_freq[i];
        cs[i] = (float)cos((double)angle);
        cs[half + i] = (float)sin((double)angle);
      }
      for (int h = 0; h < heads; ++h) {
        float *v = x + ((size_t)r * heads + h) * head_dim;
        for (int i = 0; i < half; ++i) {
          const float a = v[i], b = v[i + half], c = cs[i], s = cs[half + i];
          const float ac = a * c, bs = b * s, bc = b * c, as = a * s;
          v[i] = ac - bs;
          v[i + half] = bc + as;
        }
      }
    }
  });
}

}  // namespace cpu
}  // namespace bwq
