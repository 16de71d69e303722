// Internal interface between the dispatcher (cpu.cpp) and the per-ISA kernel files.
// Each ISA file is compiled with its own -m flags (binding.gyp static libraries) and exposes
// block functions that compute a rectangle [m0,m1) x [n0,n1) of the output.
#ifndef BWQ_KERNELS_INTERNAL_H
#define BWQ_KERNELS_INTERNAL_H
#include <stdint.h>

namespace bwq {

// Ternary x binary. Activation planes are a scratch copy: stride kwp (multiple of 16 words),
// bits at k >= K cleared, zero padded. Weights are the caller's: stride kw = ceil(K/32).
// out[m*ldo+n] = 2*popc(sel(W,P,Mi)) - nz[m], sel = (W & P) | (~W & Mi).
struct TbArgs {
  const uint32_t *P, *Mi;
  int kwp;
  const uint32_t *W;
  int kw;
  const int32_t *nz;  // popc(P)+popc(Mi) per activation row
  int32_t *out;
  int ldo;
};

// Ternary x ternary. A planes: scratch (stride kwp, masked, padded). B planes: caller's (stride kw).
// out = popc((ap&bp)|(am&bm)) - popc((ap&bm)|(am&bp)).
struct TtArgs {
  const uint32_t *AP, *AM;
  int kwp;
  const uint32_t *BP, *BM;
  int kw;
  int32_t *out;
  int ldo;
};

// int8 x binary. au: scratch, au[m*kp + k] = (uint8)(a[m,k] ^ 0x80) for k < K, 0 beyond (kp multiple of 64)
// (scalar / AVX2); as: the same rows unshifted (AVX-512 VNNI). Only the one the level uses is filled.
// Weights: caller's (stride kw); bits at k >= K are masked by the kernel (lastmask = valid bits of word kw-1).
// out = 2*(S_u - 128*pw[n]) - sa[m], S_u = sum of au over set weight bits.
struct I8Args {
  const uint8_t *au;
  const int8_t *as;  // signed copy (a itself, zero padded to kp), used by the AVX-512 VNNI kernel
  int kp;
  int k;
  const uint32_t *W;
  int kw;
  uint32_t lastmask;
  const int32_t *sa;  // sum_k a[m,k]
  const int32_t *pw;  // popc of valid weight bits of row n
  int32_t *out;
  int ldo;
};

void tb_block_scalar(const TbArgs &a, int m0, int m1, int n0, int n1);
void tt_block_scalar(const TtArgs &a, int m0, int m1, int n0, int n1);
void i8_block_scalar(const I8Args &a, int m0, int m1, int n0, int n1);

void tb_block_avx2(const TbArgs &a, int m0, int m1, int n0, int n1);
void tt_block_avx2(const TtArgs &a, int m0, int m1, int n0, int n1);
void i8_block_avx2(const I8Args &a, int m0, int m1, int n0, int n1);

void tb_block_avx512(const TbArgs &a, int m0, int m1, int n0, int n1);
void tt_block_avx512(const TtArgs &a, int m0, int m1, int n0, int n1);
void i8_block_avx512(const I8Args &a, int m0, int m1, int n0, int n1);

}  // namespace bwq
#endif
