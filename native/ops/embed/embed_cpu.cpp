// Embedding gather: out[r, :] = table[ids[r], :] converted to float32 (the table stays in its dtype).
#include "../half.h"
#include "../ops_cpu.h"

namespace bwq {
namespace cpu {

void embed(const int32_t *ids, int rows, const void *table, DType dtype, int hidden, float *out) {
  for (int r = 0; r < rows; ++r) {
    float *o = out + (size_t)r * hidden;
    const size_t base = (size_t)ids[r] * hidden;
    if (dtype == DType::F32) {
      memcpy(o, (const float *)table + base, sizeof(float) * hidden);
    } else {
      const uint16_t *t = (const uint16_t *)table + base;
      for (int j = 0; j < hidden; ++j) o[j] = dtype == DType::BF16 ? bf16_to_f32(t[j]) : f16_to_f32(t[j]);
    }
  }
}

}  // namespace cpu
}  // namespace bwq
