// AVX2 kernels (+POPCNT). Compiled with -mavx2 -mpopcnt; only called after a cpuid check (cpu.cpp).
// Popcount of 256-bit vectors: nibble lookup with vpshufb, bytes summed by vpsadbw into 4 x u64.
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include "kernels_internal.h"

namespace bwq {
namespace {

inline __m256i popcnt_u64x4(__m256i v) {
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2,
                                       3, 2, 3, 3, 4);
  const __m256i low = _mm256_set1_epi8(0x0f);
  const __m256i lo = _mm256_and_si256(v, low);
  const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
  const __m256i c = _mm256_add_epi8(_mm256_shuffle_epi8(lut, lo), _mm256_shuffle_epi8(lut, hi));
  return _mm256_sad_epu8(c, _mm256_setzero_si256());
}

inline int64_t hsum_u64x4(__m256i v) {
  const __m128i s = _mm_add_epi64(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  return _mm_cvtsi128_si64(s) + _mm_extract_epi64(s, 1);
}

template <int MR, int NR>
inline void tb_micro(const TbArgs &a, int m, int n) {
  __m256i acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_setzero_si256();
  const uint32_t *P[MR], *Q[MR], *W[NR];
  for (int i = 0; i < MR; ++i) { P[i] = a.P + (long)(m + i) * a.kwp; Q[i] = a.Mi + (long)(m + i) * a.kwp; }
  for (int j = 0; j < NR; ++j) W[j] = a.W + (long)(n + j) * a.kw;
  const int nfull = a.kw / 8;
  for (int v = 0; v < nfull; ++v) {
    __m256i w[NR];
    for (int j = 0; j < NR; ++j) w[j] = _mm256_loadu_si256((const __m256i *)(W[j] + 8 * v));
    for (int i = 0; i < MR; ++i) {
      const __m256i p = _mm256_loadu_si256((const __m256i *)(P[i] + 8 * v));
      const __m256i q = _mm256_loadu_si256((const __m256i *)(Q[i] + 8 * v));
      for (int j = 0; j < NR; ++j) {
        const __m256i x = _mm256_or_si256(_mm256_and_si256(w[j], p), _mm256_andnot_si256(w[j], q));
        acc[i][j] = _mm256_add_epi64(acc[i][j], popcnt_u64x4(x));
      }
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) {
      int64_t pos = hsum_u64x4(acc[i][j]);
      for (int t = 8 * nfull; t < a.kw; ++t) {
        const uint32_t w = W[j][t];
        pos += _mm_popcnt_u32((w & P[i][t]) | (~w & Q[i][t]));
      }
      a.out[(long)(m + i) * a.ldo + n + j] = 2 * (int32_t)pos - a.nz[m + i];
    }
}

template <int MR, int NR>
inline void tt_micro(const TtArgs &a, int m, int n) {
  __m256i acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_setzero_si256();
  const uint32_t *AP[MR], *AM[MR], *BP[NR], *BM[NR];
  for (int i = 0; i < MR; ++i) { AP[i] = a.AP + (long)(m + i) * a.kwp; AM[i] = a.AM + (long)(m + i) * a.kwp; }
  for (int j = 0; j < NR; ++j) { BP[j] = a.BP + (long)(n + j) * a.kw; BM[j] = a.BM + (long)(n + j) * a.kw; }
  const int nfull = a.kw / 8;
  // acc holds pos counts; neg counts accumulate in accn (kept separate: u64 lanes, no sign issues).
  __m256i accn[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) accn[i][j] = _mm256_setzero_si256();
  for (int v = 0; v < nfull; ++v) {
    __m256i bp[NR], bm[NR];
    for (int j = 0; j < NR; ++j) {
      bp[j] = _mm256_loadu_si256((const __m256i *)(BP[j] + 8 * v));
      bm[j] = _mm256_loadu_si256((const __m256i *)(BM[j] + 8 * v));
    }
    for (int i = 0; i < MR; ++i) {
      const __m256i ap = _mm256_loadu_si256((const __m256i *)(AP[i] + 8 * v));
      const __m256i am = _mm256_loadu_si256((const __m256i *)(AM[i] + 8 * v));
      for (int j = 0; j < NR; ++j) {
        const __m256i pos = _mm256_or_si256(_mm256_and_si256(ap, bp[j]), _mm256_and_si256(am, bm[j]));
        const __m256i neg = _mm256_or_si256(_mm256_and_si256(ap, bm[j]), _mm256_and_si256(am, bp[j]));
        acc[i][j] = _mm256_add_epi64(acc[i][j], popcnt_u64x4(pos));
        accn[i][j] = _mm256_add_epi64(accn[i][j], popcnt_u64x4(neg));
      }
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) {
      int64_t r = hsum_u64x4(acc[i][j]) - hsum_u64x4(accn[i][j]);
      for (int t = 8 * nfull; t < a.kw; ++t) {
        const uint32_t ap = AP[i][t], am = AM[i][t], bp = BP[j][t], bm = BM[j][t];
        r += _mm_popcnt_u32((ap & bp) | (am & bm)) - _mm_popcnt_u32((ap & bm) | (am & bp));
      }
      a.out[(long)(m + i) * a.ldo + n + j] = (int32_t)r;
    }
}

template <int MR, int NR>
inline void i8_micro(const I8Args &a, int m, int n) {
  __m256i acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_setzero_si256();
  const uint8_t *U[MR];
  const uint32_t *W[NR];
  for (int i = 0; i < MR; ++i) U[i] = a.au + (long)(m + i) * a.kp;
  for (int j = 0; j < NR; ++j) W[j] = a.W + (long)(n + j) * a.kw;
  const __m256i shuf = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3,
                                        3, 3, 3, 3, 3);
  const __m256i bitsel = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
  for (int c = 0; c < a.kw; ++c) {
    __m256i mk[NR];
    for (int j = 0; j < NR; ++j) {
      uint32_t bits = W[j][c];
      if (c == a.kw - 1) bits &= a.lastmask;
      const __m256i b = _mm256_shuffle_epi8(_mm256_set1_epi32((int)bits), shuf);
      mk[j] = _mm256_cmpeq_epi8(_mm256_and_si256(b, bitsel), bitsel);
    }
    for (int i = 0; i < MR; ++i) {
      const __m256i u = _mm256_loadu_si256((const __m256i *)(U[i] + 32 * c));
      for (int j = 0; j < NR; ++j)
        acc[i][j] = _mm256_add_epi64(acc[i][j], _mm256_sad_epu8(_mm256_and_si256(mk[j], u), _mm256_setzero_si256()));
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) {
      const int32_t s = (int32_t)hsum_u64x4(acc[i][j]);
      a.out[(long)(m + i) * a.ldo + n + j] = 2 * (s - 128 * a.pw[n + j]) - a.sa[m + i];
    }
}

template <template <int, int> class F, typename Args, int MR, int NR>
inline void tile_loop(const Args &a, int m0, int m1, int n0, int n1) {
  int m = m0;
  for (; m + MR <= m1; m += MR) {
    int n = n0;
    for (; n + NR <= n1; n += NR) F<MR, NR>::run(a, m, n);
    for (; n < n1; ++n) F<MR, 1>::run(a, m, n);
  }
  for (; m < m1; ++m) {
    int n = n0;
    for (; n + NR <= n1; n += NR) F<1, NR>::run(a, m, n);
    for (; n < n1; ++n) F<1, 1>::run(a, m, n);
  }
}

template <int MR, int NR> struct TbF { static void run(const TbArgs &a, int m, int n) { tb_micro<MR, NR>(a, m, n); } };
template <int MR, int NR> struct TtF { static void run(const TtArgs &a, int m, int n) { tt_micro<MR, NR>(a, m, n); } };
template <int MR, int NR> struct I8F { static void run(const I8Args &a, int m, int n) { i8_micro<MR, NR>(a, m, n); } };

}  // namespace

void tb_block_avx2(const TbArgs &a, int m0, int m1, int n0, int n1) { tile_loop<TbF, TbArgs, 2, 2>(a, m0, m1, n0, n1); }
void tt_block_avx2(const TtArgs &a, int m0, int m1, int n0, int n1) { tile_loop<TtF, TtArgs, 2, 1>(a, m0, m1, n0, n1); }
void i8_block_avx2(const I8Args &a, int m0, int m1, int n0, int n1) { tile_loop<I8F, I8Args, 4, 2>(a, m0, m1, n0, n1); }

}  // namespace bwq
#endif  // x86
