// AVX-512 kernels (F, BW, VL, VPOPCNTDQ, VNNI). Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512vpopcntdq -mavx512vnni;
// only called after a cpuid check (cpu.cpp).
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include <string.h>
#include "kernels_internal.h"

namespace bwq {
namespace {

// vpternlog immediates with A = first operand, B = second, C = third.
constexpr int kSelect = 0xCA;   // A ? B : C   -> (w & p) | (~w & q)
constexpr int kAndOr = 0xEA;    // (A & B) | C

template <int MR, int NR>
inline void tb_micro(const TbArgs &a, int m, int n) {
  __m512i acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_setzero_si512();
  const uint32_t *P[MR], *Q[MR], *W[NR];
  for (int i = 0; i < MR; ++i) { P[i] = a.P + (long)(m + i) * a.kwp; Q[i] = a.Mi + (long)(m + i) * a.kwp; }
  for (int j = 0; j < NR; ++j) W[j] = a.W + (long)(n + j) * a.kw;
  const int nfull = a.kw / 16, rem = a.kw % 16;
  for (int v = 0; v <= nfull; ++v) {
    if (v == nfull && rem == 0) break;
    const __mmask16 km = v < nfull ? (__mmask16)0xFFFF : (__mmask16)((1u << rem) - 1);
    __m512i w[NR];
    for (int j = 0; j < NR; ++j) w[j] = _mm512_maskz_loadu_epi32(km, W[j] + 16 * v);
    for (int i = 0; i < MR; ++i) {
      const __m512i p = _mm512_loadu_si512(P[i] + 16 * v), q = _mm512_loadu_si512(Q[i] + 16 * v);
      for (int j = 0; j < NR; ++j)
        acc[i][j] = _mm512_add_epi64(acc[i][j], _mm512_popcnt_epi64(_mm512_ternarylogic_epi64(w[j], p, q, kSelect)));
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j)
      a.out[(long)(m + i) * a.ldo + n + j] = 2 * (int32_t)_mm512_reduce_add_epi64(acc[i][j]) - a.nz[m + i];
}

template <int MR, int NR>
inline void tt_micro(const TtArgs &a, int m, int n) {
  __m512i acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_setzero_si512();
  const uint32_t *AP[MR], *AM[MR], *BP[NR], *BM[NR];
  for (int i = 0; i < MR; ++i) { AP[i] = a.AP + (long)(m + i) * a.kwp; AM[i] = a.AM + (long)(m + i) * a.kwp; }
  for (int j = 0; j < NR; ++j) { BP[j] = a.BP + (long)(n + j) * a.kw; BM[j] = a.BM + (long)(n + j) * a.kw; }
  const int nfull = a.kw / 16, rem = a.kw % 16;
  for (int v = 0; v <= nfull; ++v) {
    if (v == nfull && rem == 0) break;
    const __mmask16 km = v < nfull ? (__mmask16)0xFFFF : (__mmask16)((1u << rem) - 1);
    __m512i bp[NR], bm[NR];
    for (int j = 0; j < NR; ++j) {
      bp[j] = _mm512_maskz_loadu_epi32(km, BP[j] + 16 * v);
      bm[j] = _mm512_maskz_loadu_epi32(km, BM[j] + 16 * v);
    }
    for (int i = 0; i < MR; ++i) {
      const __m512i ap = _mm512_loadu_si512(AP[i] + 16 * v), am = _mm512_loadu_si512(AM[i] + 16 * v);
      for (int j = 0; j < NR; ++j) {
        const __m512i pos = _mm512_ternarylogic_epi64(ap, bp[j], _mm512_and_si512(am, bm[j]), kAndOr);
        const __m512i neg = _mm512_ternarylogic_epi64(ap, bm[j], _mm512_and_si512(am, bp[j]), kAndOr);
        acc[i][j] = _mm512_add_epi64(acc[i][j], _mm512_sub_epi64(_mm512_popcnt_epi64(pos), _mm512_popcnt_epi64(neg)));
      }
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) a.out[(long)(m + i) * a.ldo + n + j] = (int32_t)_mm512_reduce_add_epi64(acc[i][j]);
}

// int8 x binary with AVX-512 VNNI: weight bits -> 0/1 bytes (masked move of ones), then vpdpbusd
// (u8 0/1 x s8 activation, 4 products summed per int32 lane) accumulates S+ = sum of a over +1 weights;
// result = 2*S+ - sum(a). Activations come from the signed scratch `as` (zero padded to 64).
template <int MR, int NR>
inline void i8_micro(const I8Args &a, int m, int n) {
  __m512i acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_setzero_si512();
  const int8_t *A[MR];
  const uint32_t *W[NR];
  for (int i = 0; i < MR; ++i) A[i] = a.as + (long)(m + i) * a.kp;
  for (int j = 0; j < NR; ++j) W[j] = a.W + (long)(n + j) * a.kw;
  const __m512i ones = _mm512_set1_epi8(1);
  const int nchunks = (a.kw + 1) / 2;
  for (int c = 0; c < nchunks; ++c) {
    __m512i w01[NR];
    for (int j = 0; j < NR; ++j) {
      uint64_t bits;
      if (c < nchunks - 1) {
        memcpy(&bits, W[j] + 2 * c, 8);
      } else {
        uint32_t lo = W[j][2 * c], hi = 0;
        if (2 * c + 1 < a.kw) hi = W[j][2 * c + 1] & a.lastmask;
        else lo &= a.lastmask;
        bits = (uint64_t)lo | ((uint64_t)hi << 32);
      }
      w01[j] = _mm512_maskz_mov_epi8(_cvtu64_mask64(bits), ones);
    }
    for (int i = 0; i < MR; ++i) {
      const __m512i x = _mm512_loadu_si512(A[i] + 64 * c);
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], w01[j], x);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) {
      const int32_t s = _mm512_reduce_add_epi32(acc[i][j]);
      a.out[(long)(m + i) * a.ldo + n + j] = 2 * s - a.sa[m + i];
    }
}

// Runs micro-kernel F<MR,NR> over the rectangle, with edge tiles of smaller size.
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

void tb_block_avx512(const TbArgs &a, int m0, int m1, int n0, int n1) { tile_loop<TbF, TbArgs, 4, 4>(a, m0, m1, n0, n1); }
void tt_block_avx512(const TtArgs &a, int m0, int m1, int n0, int n1) { tile_loop<TtF, TtArgs, 4, 2>(a, m0, m1, n0, n1); }
void i8_block_avx512(const I8Args &a, int m0, int m1, int n0, int n1) { tile_loop<I8F, I8Args, 4, 4>(a, m0, m1, n0, n1); }

}  // namespace bwq
#endif  // x86
