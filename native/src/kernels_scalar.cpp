// Portable fallback kernels (no SIMD). Exact integer arithmetic.
#include "kernels_internal.h"

namespace bwq {

static inline int popc32(uint32_t x) { return __builtin_popcount(x); }

void tb_block_scalar(const TbArgs &a, int m0, int m1, int n0, int n1) {
  for (int m = m0; m < m1; ++m) {
    const uint32_t *p = a.P + (long)m * a.kwp, *q = a.Mi + (long)m * a.kwp;
    for (int n = n0; n < n1; ++n) {
      const uint32_t *w = a.W + (long)n * a.kw;
      int pos = 0;
      for (int i = 0; i < a.kw; ++i) pos += popc32((w[i] & p[i]) | (~w[i] & q[i]));
      a.out[(long)m * a.ldo + n] = 2 * pos - a.nz[m];
    }
  }
}

void tt_block_scalar(const TtArgs &a, int m0, int m1, int n0, int n1) {
  for (int m = m0; m < m1; ++m) {
    const uint32_t *ap = a.AP + (long)m * a.kwp, *am = a.AM + (long)m * a.kwp;
    for (int n = n0; n < n1; ++n) {
      const uint32_t *bp = a.BP + (long)n * a.kw, *bm = a.BM + (long)n * a.kw;
      int acc = 0;
      for (int i = 0; i < a.kw; ++i)
        acc += popc32((ap[i] & bp[i]) | (am[i] & bm[i])) - popc32((ap[i] & bm[i]) | (am[i] & bp[i]));
      a.out[(long)m * a.ldo + n] = acc;
    }
  }
}

void i8_block_scalar(const I8Args &a, int m0, int m1, int n0, int n1) {
  for (int m = m0; m < m1; ++m) {
    const uint8_t *u = a.au + (long)m * a.kp;
    for (int n = n0; n < n1; ++n) {
      const uint32_t *w = a.W + (long)n * a.kw;
      int s = 0;
      for (int i = 0; i < a.kw; ++i) {
        uint32_t bits = w[i];
        if (i == a.kw - 1) bits &= a.lastmask;
        const uint8_t *ui = u + 32 * i;
        while (bits) {
          int j = __builtin_ctz(bits);
          s += ui[j];
          bits &= bits - 1;
        }
      }
      a.out[(long)m * a.ldo + n] = 2 * (s - 128 * a.pw[n]) - a.sa[m];
    }
  }
}

}  // namespace bwq
