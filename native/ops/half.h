// 16-bit float storage types to float32 (exact: every bf16 and fp16 value is a float32 value).
#ifndef BWQ_OPS_HALF_H
#define BWQ_OPS_HALF_H
#include <stdint.h>
#include <string.h>

namespace bwq {
inline float bf16_to_f32(uint16_t h) {
  const uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}
inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1Fu, man = h & 0x3FFu, u;
  if (exp == 0x1F) u = sign | 0x7F800000u | (man << 13);  // inf / nan
  else if (exp != 0) u = sign | ((exp + 112) << 23) | (man << 13);
  else if (man == 0) u = sign;
  else {  // subnormal: normalise
    int e = -1;
    do { ++e; man <<= 1; } while (!(man & 0x400u));
    u = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3FFu) << 13);
  }
  float f;
  memcpy(&f, &u, 4);
  return f;
}
}  // namespace bwq
#endif
