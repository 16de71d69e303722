// Online Kronecker rotation of each row, x' = x diag(R1 (x) R2, R3), row width K = a*b + rem:
//   X = x[0, a*b) as [a, b] (row-major);  T = X R2  ([a, b]);  X' = R1^T T  ([a, b]) = x'[0, a*b) row-major;
//   x'[a*b + j] = sum_q x[a*b + q] R3[q, j]  (rem = 0: no remainder block).
// Float32 products and sums (the simulated graph's two MatMuls). When b is a multiple of 16 the rows of T and
// X' are built 16 columns at a time in vector registers, four rows of the left factor at once.
#pragma GCC optimize("fp-contract=fast")
#include "../ops_cpu.h"

namespace bwq {
namespace cpu {

namespace {
typedef float v16 __attribute__((vector_size(64), aligned(4)));

// out[r, jb] = sum_s left(r, s) * right[s, jb] for r < rows, 16-column block jb of right (row stride b);
// left(r, s) = L[r * ls + s * lt] (ls, lt: strides, so R1^T is read in place).
__attribute__((always_inline)) inline void small_gemm(const float *L, int ls, int lt, int rows, int inner,
                                                      const float *right, int b, float *out) {
  for (int jb = 0; jb < b; jb += 16) {
    int r = 0;
    for (; r + 4 <= rows; r += 4) {
      v16 a0 = {}, a1 = {}, a2 = {}, a3 = {};
      for (int s = 0; s < inner; ++s) {
        const v16 w = *(const v16 *)(right + (size_t)s * b + jb);
        a0 += L[(size_t)r * ls + (size_t)s * lt] * w;
        a1 += L[(size_t)(r + 1) * ls + (size_t)s * lt] * w;
        a2 += L[(size_t)(r + 2) * ls + (size_t)s * lt] * w;
        a3 += L[(size_t)(r + 3) * ls + (size_t)s * lt] * w;
      }
      *(v16 *)(out + (size_t)r * b + jb) = a0;
      *(v16 *)(out + (size_t)(r + 1) * b + jb) = a1;
      *(v16 *)(out + (size_t)(r + 2) * b + jb) = a2;
      *(v16 *)(out + (size_t)(r + 3) * b + jb) = a3;
    }
    for (; r < rows; ++r) {
      v16 a0 = {};
      for (int s = 0; s < inner; ++s) a0 += L[(size_t)r * ls + (size_t)s * lt] * *(const v16 *)(right + (size_t)s * b + jb);
      *(v16 *)(out + (size_t)r * b + jb) = a0;
    }
  }
}

BWQ_CLONES void rotate_rows(const float *x, int r0, int r1, int a, int b, int rem, const float *r1m, const float *r2m,
                            const float *r3m, float *tmp, float *y) {
  const size_t m = (size_t)a * b, k = m + (size_t)rem;
  for (int r = r0; r < r1; ++r) {
    const float *X = x + r * k;
    float *T = tmp + r * k, *Y = y + r * k;
    if (rem > 0) {  // remainder block: Y[m + j] = sum_q X[m + q] R3[q, j], ascending q
      for (int j = 0; j < rem; ++j) Y[m + j] = 0;
      for (int q = 0; q < rem; ++q)
        for (int j = 0; j < rem; ++j) Y[m + j] += X[m + q] * r3m[(size_t)q * rem + j];
    }
    if (b % 16 == 0) {
      small_gemm(X, b, 1, a, b, r2m, b, T);   // T[p, :] = sum_q X[p, q] R2[q, :]
      small_gemm(r1m, 1, a, a, a, T, b, Y);   // Y[i, :] = sum_p R1[p, i] T[p, :]
      continue;
    }
    for (int p = 0; p < a; ++p) {
      float *t = T + (size_t)p * b;
      for (int j = 0; j < b; ++j) t[j] = 0;
      for (int q = 0; q < b; ++q)
        for (int j = 0; j < b; ++j) t[j] += X[(size_t)p * b + q] * r2m[(size_t)q * b + j];
    }
    for (int i = 0; i < a; ++i) {
      float *yv = Y + (size_t)i * b;
      for (int j = 0; j < b; ++j) yv[j] = 0;
      for (int p = 0; p < a; ++p)
        for (int j = 0; j < b; ++j) yv[j] += r1m[(size_t)p * a + i] * T[(size_t)p * b + j];
    }
  }
}
}  // namespace

void kron_rotate(const float *x, int rows, int a, int b, int rem, const float *r1, const float *r2, const float *r3,
                 float *tmp, float *y) {
  parallel_rows(rows, 4, [&](int r0, int r1_) { rotate_rows(x, r0, r1_, a, b, rem, r1, r2, r3, tmp, y); });
}

}  // namespace cpu
}  // namespace bwq
