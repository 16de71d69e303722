// Activation quantizers per row (backend.h, src/quant/recipe.ts), fused with the packing the kernels take:
// int8 codes, int8 high/low pairs (9-15 bits), or ternary plus/minus bit-planes; optionally x_hat = s*code.
//   INT:     s = fl(fl(clip*max|x|)/qmax) (1 if max = 0), code = clamp(rint_even(fl(x/s)), -qmax, qmax)
//   TERNARY: delta = fl(ratio*fl(fl(sum|x|)/cols)), t = sign(x)[|x| > delta], s = fl(fl(sum kept|x|)/count)
//   BINARY:  s = fl(fl(sum|x|)/cols), code = +1 if x >= 0 or NaN, else -1
// Sums of |x| run in double in index order (the reference's order), so the codes equal the reference's.
#include <math.h>
#include <string.h>

#include <vector>

#include "../ops_cpu.h"

namespace bwq {
namespace rt {
CodeForm code_form(const Quantizer &q) {
  switch (q.kind) {
    case QKind::INT: return q.bits <= 8 ? CodeForm::INT8 : q.bits <= 15 ? CodeForm::INT8PAIR : CodeForm::FLOAT;
    case QKind::TERNARY: return CodeForm::TERNARY;
    case QKind::BINARY: return CodeForm::INT8;
    default: return CodeForm::FLOAT;
  }
}
}  // namespace rt

namespace cpu {

namespace {
BWQ_CLONES float int_row(const float *x, int cols, int bits, float clip, int32_t *codes) {
  const int qmax = (1 << (bits - 1)) - 1;
  float m = 0;
  for (int j = 0; j < cols; ++j) m = fabsf(x[j]) > m ? fabsf(x[j]) : m;
  const float s = m == 0 ? 1.0f : (clip * m) / (float)qmax;
  const float fq = (float)qmax;
  for (int j = 0; j < cols; ++j) {
    float c = nearbyintf(x[j] / s);  // ties to even (the default rounding mode)
    c = c == c ? c : 0.0f;           // NaN input: code 0, as an Int8Array stores NaN
    c = c > fq ? fq : c < -fq ? -fq : c;
    codes[j] = (int32_t)c;
  }
  return s;
}
}  // namespace

float quantize_row(const float *x, int cols, const Quantizer &q, int32_t *codes) {
  switch (q.kind) {
    case QKind::INT:
      return int_row(x, cols, q.bits, q.param, codes);
    case QKind::TERNARY: {
      double sum = 0;
      for (int j = 0; j < cols; ++j) sum += fabsf(x[j]);
      const float delta = q.param * ((float)sum / (float)cols);
      double kept = 0;
      int count = 0;
      for (int j = 0; j < cols; ++j) {
        const float a = fabsf(x[j]);
        if (a > delta) {
          kept += a;
          ++count;
          codes[j] = x[j] > 0 ? 1 : -1;
        } else {
          codes[j] = 0;
        }
      }
      return count == 0 ? 0.0f : (float)kept / (float)count;
    }
    case QKind::BINARY: {
      double sum = 0;
      for (int j = 0; j < cols; ++j) {
        sum += fabsf(x[j]);
        codes[j] = x[j] >= 0 || isnan(x[j]) ? 1 : -1;
      }
      return (float)sum / (float)cols;
    }
    default:
      for (int j = 0; j < cols; ++j) codes[j] = 0;
      return 1.0f;
  }
}

void quantize(const float *x, int rows, int cols, const Quantizer &q, Codes &codes, float *x_hat) {
  const CodeForm form = code_form(q);
  if (q.kind == QKind::NONE) {
    if (x_hat && x_hat != x) memcpy(x_hat, x, sizeof(float) * (size_t)rows * cols);
    return;
  }
  parallel_rows(rows, 8, [&](int r0, int r1) {
    std::vector<int32_t> c(cols);
    for (int r = r0; r < r1; ++r) {
      const float *xr = x + (size_t)r * cols;
      const float s = quantize_row(xr, cols, q, c.data());
      if (form != CodeForm::FLOAT) codes.scales[r] = s;
      if (form == CodeForm::INT8) {
        int8_t *o = codes.i8 + (size_t)r * codes.ld_bytes;
        for (int j = 0; j < cols; ++j) o[j] = (int8_t)c[j];
      } else if (form == CodeForm::INT8PAIR) {
        int8_t *hi = codes.i8 + (size_t)r * codes.ld_bytes, *lo = codes.i8_low + (size_t)r * codes.ld_bytes;
        for (int j = 0; j < cols; ++j) {
          const int l = ((c[j] + 128) & 255) - 128;
          lo[j] = (int8_t)l;
          hi[j] = (int8_t)((c[j] - l) / 256);
        }
      } else if (form == CodeForm::TERNARY) {
        uint32_t *p = codes.plus + (size_t)r * codes.ld_words, *m = codes.minus + (size_t)r * codes.ld_words;
        memset(p, 0, sizeof(uint32_t) * codes.ld_words);
        memset(m, 0, sizeof(uint32_t) * codes.ld_words);
        for (int j = 0; j < cols; ++j) {
          if (c[j] > 0) p[j >> 5] |= 1u << (j & 31);
          else if (c[j] < 0) m[j >> 5] |= 1u << (j & 31);
        }
      }
      if (x_hat) {
        float *o = x_hat + (size_t)r * cols;
        for (int j = 0; j < cols; ++j) o[j] = (float)c[j] * s;
      }
    }
  });
}

}  // namespace cpu
}  // namespace bwq
