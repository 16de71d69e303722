// Packed GEMMs on the mma.sync tensor cores (sm_80 and newer): m16n8k256 .b1 AND+POPC for ternary x binary,
// m16n8k32 s8 for int8 x binary with the weights expanded to +-1 bytes.
//   tb_mma_skinny, i8_mma_skinny  M <= 64: 16 output columns per block, K split over 8 warps
//   tb_mma4 ("tb_mma_b1", v4)     ternary x binary, larger M (the large-M kernel where wgmma is unavailable)
//   i8_mma ("i8_mma_s8")          int8 x binary, larger M
//   row_popc                      row popcounts of the activation planes (nz; the wgmma kernels' row sums)
#include "common.cuh"

namespace bwq_gemm {
namespace {

// nz[r] = popc(P[r]) + popc(Q[r]), or with DIFF the row sum popc(P[r]) - popc(Q[r])  (one warp per row)
template <bool DIFF = false>
__global__ void row_popc(const uint32_t *__restrict__ P, const uint32_t *__restrict__ Q, int ldk, int rows,
                         int *__restrict__ nz) {
  if (DIFF) pdl_launch_dependents();  // a PDL-launched GEMM may start now
  const int r = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x & 31;
  if (r >= rows) return;
  int c = 0;
  for (int i = lane; i < ldk; i += 32)
    c += DIFF ? __popc(P[(size_t)r * ldk + i]) - __popc(Q[(size_t)r * ldk + i])
              : __popc(P[(size_t)r * ldk + i]) + __popc(Q[(size_t)r * ldk + i]);
  for (int o = 16; o; o >>= 1) c += __shfl_xor_sync(0xffffffffu, c, o);
  if (lane == 0) nz[r] = c;
}

// ---------------------------------------------------------------------------------------------
// int8 x binary GEMM with int8 tensor cores. Block 128x128, 8 warps (2 x 4), warp tile 64x32, K stage 64.
// Weights: 64 bits per row per stage expanded to 64 bytes of +-1 in shared memory.
constexpr int I8_BM = 128, I8_BN = 128, I8_BK = 64, I8_SROW = 20;  // words per smem row (64 bytes + 16 pad)

__global__ void __launch_bounds__(256) i8_mma(const int8_t *__restrict__ A, int lda, const uint32_t *__restrict__ W,
                                              int ldk, int M, int N, int32_t *__restrict__ out, int ldo) {
  __shared__ __align__(16) uint32_t sA[2][I8_BM * I8_SROW];
  __shared__ __align__(16) uint32_t sB[2][I8_BN * I8_SROW];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int wm = warp >> 2, wn = warp & 3, g = lane >> 2, t = lane & 3;
  const int m0 = blockIdx.y * I8_BM, n0 = blockIdx.x * I8_BN;
  const int nk = lda / I8_BK;
  const int br = tid >> 1, bh = tid & 1;  // this thread expands weight word (row br, half bh) of each stage
  const uint32_t *wrow = W + (size_t)(n0 + br) * ldk + bh;

  auto load_a = [&](int s, int kt) {
#pragma unroll
    for (int c = tid; c < I8_BM * 4; c += 256) {
      const int r = c >> 2, q = c & 3;
      cp_async16(&sA[s][r * I8_SROW + q * 4], A + (size_t)(m0 + r) * lda + (size_t)kt * I8_BK + q * 16);
    }
    cp_async_commit();
  };
  auto store_b = [&](int s, uint32_t bits) {
    uint32_t v[8];
#pragma unroll
    for (int h = 0; h < 8; ++h) v[h] = nibble_pm1((bits >> (4 * h)) & 0xFu);
    uint4 *dst = reinterpret_cast<uint4 *>(&sB[s][br * I8_SROW + bh * 8]);
    dst[0] = make_uint4(v[0], v[1], v[2], v[3]);
    dst[1] = make_uint4(v[4], v[5], v[6], v[7]);
  };

  int acc[4][4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0;

  load_a(0, 0);
  store_b(0, __ldg(wrow));
  cp_async_wait<0>();
  __syncthreads();
  for (int kt = 0; kt < nk; ++kt) {
    const int s = kt & 1;
    uint32_t next_bits = 0;
    if (kt + 1 < nk) {
      load_a(s ^ 1, kt + 1);
      next_bits = __ldg(wrow + (size_t)(kt + 1) * 2);
    }
#pragma unroll
    for (int ks = 0; ks < 2; ++ks) {
      const int ko = ks * 8 + t;
      uint32_t a[4][4], b[4][2];
#pragma unroll
      for (int mt = 0; mt < 4; ++mt) {
        const int r = wm * 64 + mt * 16 + g;
        a[mt][0] = sA[s][r * I8_SROW + ko];
        a[mt][1] = sA[s][(r + 8) * I8_SROW + ko];
        a[mt][2] = sA[s][r * I8_SROW + ko + 4];
        a[mt][3] = sA[s][(r + 8) * I8_SROW + ko + 4];
      }
#pragma unroll
      for (int nt = 0; nt < 4; ++nt) {
        const int c = wn * 32 + nt * 8 + g;
        b[nt][0] = sB[s][c * I8_SROW + ko];
        b[nt][1] = sB[s][c * I8_SROW + ko + 4];
      }
#pragma unroll
      for (int mt = 0; mt < 4; ++mt)
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) mma_s8(acc[mt][nt], a[mt], b[nt][0], b[nt][1]);
    }
    if (kt + 1 < nk) store_b(s ^ 1, next_bits);
    cp_async_wait<0>();
    __syncthreads();
  }
#pragma unroll
  for (int mt = 0; mt < 4; ++mt)
#pragma unroll
    for (int nt = 0; nt < 4; ++nt) {
      const int r0 = m0 + wm * 64 + mt * 16 + g, c0 = n0 + wn * 32 + nt * 8 + 2 * t;
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = r0 + (e >> 1) * 8, c = c0 + (e & 1);
        if (r < M && c < N) out[(size_t)r * ldo + c] = acc[mt][nt][e];
      }
    }
}

// ---------------------------------------------------------------------------------------------
// Skinny GEMMs (M <= 16*MT16 <= 64): block = 8 warps on 16 output columns (two n8 tiles), K split
// across the warps, partial sums reduced in shared memory. Fragments are read straight from global
// memory (activations are small and stay in L1/L2).
constexpr int SK_COLS = 16;

template <int MT16>
__global__ void __launch_bounds__(256) tb_mma_skinny(const uint32_t *__restrict__ P, const uint32_t *__restrict__ Q,
                                                     const uint32_t *__restrict__ W, int ldk, int M, int N,
                                                     int32_t *__restrict__ out, int ldo) {
  __shared__ int red[MT16 * 16][SK_COLS];
  __shared__ int nzs[MT16 * 16];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int n0 = blockIdx.x * SK_COLS;
  for (int i = tid; i < MT16 * 16 * SK_COLS; i += 256) (&red[0][0])[i] = 0;
  for (int i = tid; i < MT16 * 16; i += 256) nzs[i] = 0;
  __syncthreads();
  int acc[MT16][2][4], nza[MT16][4];
#pragma unroll
  for (int i = 0; i < MT16; ++i) {
#pragma unroll
    for (int e = 0; e < 4; ++e) nza[i][e] = acc[i][0][e] = acc[i][1][e] = 0;
  }
  const int nkc = ldk / 8;  // 256-bit chunks
  const uint32_t *w0 = W + (size_t)(n0 + g) * ldk + t, *w1 = W + (size_t)(n0 + 8 + g) * ldk + t;
#pragma unroll 2
  for (int kc = warp; kc < nkc; kc += 8) {
    const int ko = kc * 8;
    const uint32_t b00 = __ldg(w0 + ko), b01 = __ldg(w0 + ko + 4), b10 = __ldg(w1 + ko), b11 = __ldg(w1 + ko + 4);
#pragma unroll
    for (int mt = 0; mt < MT16; ++mt) {
      const size_t r0 = (size_t)(mt * 16 + g) * ldk + ko + t, r1 = r0 + (size_t)8 * ldk;
      const uint32_t ap[4] = {__ldg(P + r0), __ldg(P + r1), __ldg(P + r0 + 4), __ldg(P + r1 + 4)};
      const uint32_t aq[4] = {__ldg(Q + r0), __ldg(Q + r1), __ldg(Q + r0 + 4), __ldg(Q + r1 + 4)};
      const uint32_t apq[4] = {ap[0] | aq[0], ap[1] | aq[1], ap[2] | aq[2], ap[3] | aq[3]};
      mma_b1(acc[mt][0], ap, b00, b01);
      mma_b1(acc[mt][0], aq, ~b00, ~b01);
      mma_b1(acc[mt][1], ap, b10, b11);
      mma_b1(acc[mt][1], aq, ~b10, ~b11);
      mma_b1(nza[mt], apq, 0xFFFFFFFFu, 0xFFFFFFFFu);
    }
  }
#pragma unroll
  for (int mt = 0; mt < MT16; ++mt) {
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) atomicAdd(&red[mt * 16 + g + (e >> 1) * 8][nt * 8 + 2 * t + (e & 1)], acc[mt][nt][e]);
    }
    if (t == 0) {
      atomicAdd(&nzs[mt * 16 + g], nza[mt][0]);
      atomicAdd(&nzs[mt * 16 + g + 8], nza[mt][2]);
    }
  }
  __syncthreads();
  for (int i = tid; i < MT16 * 16 * SK_COLS; i += 256) {
    const int r = i / SK_COLS, c = i % SK_COLS;
    if (r < M && n0 + c < N) out[(size_t)r * ldo + n0 + c] = 2 * red[r][c] - nzs[r];
  }
}

template <int MT16>
__global__ void __launch_bounds__(256) i8_mma_skinny(const int8_t *__restrict__ A, int lda,
                                                     const uint32_t *__restrict__ W, int ldk, int M, int N,
                                                     int32_t *__restrict__ out, int ldo) {
  __shared__ int red[MT16 * 16][SK_COLS];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int n0 = blockIdx.x * SK_COLS;
  for (int i = tid; i < MT16 * 16 * SK_COLS; i += 256) (&red[0][0])[i] = 0;
  __syncthreads();
  int acc[MT16][2][4];
#pragma unroll
  for (int i = 0; i < MT16; ++i) {
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[i][0][e] = acc[i][1][e] = 0;
  }
  const uint32_t *w0 = W + (size_t)(n0 + g) * ldk, *w1 = W + (size_t)(n0 + 8 + g) * ldk;
  // Each warp takes 4 consecutive words (128 k) at a time: one uint4 per weight row.
  const int ngroups = ldk / 4;
  for (int grp = warp; grp < ngroups; grp += 8) {
    const uint4 x0 = __ldg(reinterpret_cast<const uint4 *>(w0) + grp);
    const uint4 x1 = __ldg(reinterpret_cast<const uint4 *>(w1) + grp);
    const uint32_t ws0[4] = {x0.x, x0.y, x0.z, x0.w}, ws1[4] = {x1.x, x1.y, x1.z, x1.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int kc = grp * 4 + j;  // k32 chunk
      const uint32_t b00 = nibble_pm1((ws0[j] >> (4 * t)) & 0xFu), b01 = nibble_pm1((ws0[j] >> (16 + 4 * t)) & 0xFu);
      const uint32_t b10 = nibble_pm1((ws1[j] >> (4 * t)) & 0xFu), b11 = nibble_pm1((ws1[j] >> (16 + 4 * t)) & 0xFu);
#pragma unroll
      for (int mt = 0; mt < MT16; ++mt) {
        const int8_t *r0 = A + (size_t)(mt * 16 + g) * lda + kc * 32 + 4 * t;
        const int8_t *r1 = r0 + (size_t)8 * lda;
        const uint32_t a[4] = {__ldg(reinterpret_cast<const uint32_t *>(r0)), __ldg(reinterpret_cast<const uint32_t *>(r1)),
                               __ldg(reinterpret_cast<const uint32_t *>(r0 + 16)),
                               __ldg(reinterpret_cast<const uint32_t *>(r1 + 16))};
        mma_s8(acc[mt][0], a, b00, b01);
        mma_s8(acc[mt][1], a, b10, b11);
      }
    }
  }
#pragma unroll
  for (int mt = 0; mt < MT16; ++mt)
#pragma unroll
    for (int nt = 0; nt < 2; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) atomicAdd(&red[mt * 16 + g + (e >> 1) * 8][nt * 8 + 2 * t + (e & 1)], acc[mt][nt][e]);
  __syncthreads();
  for (int i = tid; i < MT16 * 16 * SK_COLS; i += 256) {
    const int r = i / SK_COLS, c = i % SK_COLS;
    if (r < M && n0 + c < N) out[(size_t)r * ldo + n0 + c] = red[r][c];
  }
}

// ---------------------------------------------------------------------------------------------
// Ternary x binary GEMM with binary tensor cores (mma.sync m16n8k256 .b1 AND+POPC), variant 4 (v1 - v3,
// with 8 warps of 64x32 tiles, are in the git history and docs/PERFORMANCE.md): block 128x128 with 4 warps
// (2 x 2) of 64x64 warp tiles (half the shared-memory fragment traffic per MMA of the 64x32 tiles: 96
// instead of 160 bytes), STAGES-deep cp.async pipeline of KWS-word K stages with one barrier per stage,
// 2 blocks per SM, 8-byte output stores. Fragments: each lane loads its 4 consecutive words of a row with one
// LDS.128 and uses them as (k-chunk 0: words t, t+4; k-chunk 1: words t, t+4); the same relabelling of k
// positions is applied to A and B, and an AND+POPC sum does not depend on the order of k, so the result is
// unchanged while the shared-memory instructions drop 4x. KWS = 32: rows of 32 words whose 16-byte chunk c
// of row r lives at c ^ 4*(r&1), which keeps those loads free of bank conflicts; KWS = 16 rows (64 bytes)
// are conflict-free as they are.
// WN = number of 64-column warp tiles along N: block 128 x (64*WN), 2*WN warps.
#define TB4_SMEM(WN, KWS, STAGES, MT) ((2 * 32 * (MT) + 64 * (WN)) * (KWS) * 4 * (STAGES))
// FUSE_NZ: nz[r] = popc(p | q) is accumulated from the A fragments the warp loads anyway (8 LOP/POPC
// per 128 MMAs) and reduced over the 4 lanes of a row at the end, so no separate row_popc launch is needed.
// MT = 16-row m tiles per warp: block (32*MT) x (64*WN), 2 x WN warps of (16*MT) x 64.
template <int WN, int KWS, int STAGES, bool FUSE_NZ, int MT>
__global__ void __launch_bounds__(64 * WN, WN == 2 ? (MT == 4 ? 2 : 3) : 1)
    tb_mma4(const uint32_t *__restrict__ P, const uint32_t *__restrict__ Q, const uint32_t *__restrict__ W, int ldk,
            const int *__restrict__ nz, int M, int N, int32_t *__restrict__ out, int ldo) {
  constexpr int BN = 64 * WN, NT = 64 * WN;       // block columns, threads
  constexpr int CPR = KWS / 4;                    // 16-byte chunks per smem row
  constexpr int BM = 32 * MT;
  constexpr int STAGE_WORDS = (2 * BM + BN) * KWS;  // P tile, Q tile, W tile
  extern __shared__ uint4 smem4[];
  uint32_t *smem = reinterpret_cast<uint32_t *>(smem4);
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int wm = warp / WN, wn = warp % WN, g = lane >> 2, t = lane & 3;
  const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
  const int nk = ldk / KWS;

  auto load_stage = [&](int s, int kt) {
    uint32_t *base = smem + s * STAGE_WORDS;
#pragma unroll
    for (int c = tid; c < BM * CPR; c += NT) {
      const int r = c / CPR, ch = c % CPR;
      const int dst = r * KWS + ((KWS == 32 ? (ch ^ ((r & 1) << 2)) : ch) << 2);
      const size_t ka = (size_t)kt * KWS + ch * 4;
      cp_async16(base + dst, P + (size_t)(m0 + r) * ldk + ka);
      cp_async16(base + BM * KWS + dst, Q + (size_t)(m0 + r) * ldk + ka);
    }
#pragma unroll
    for (int c = tid; c < BN * CPR; c += NT) {
      const int r = c / CPR, ch = c % CPR;
      const int dst = r * KWS + ((KWS == 32 ? (ch ^ ((r & 1) << 2)) : ch) << 2);
      const size_t ka = (size_t)kt * KWS + ch * 4;
      cp_async16(base + 2 * BM * KWS + dst, W + (size_t)(n0 + r) * ldk + ka);
    }
  };

  // nzp[mt]: this lane's popc(p | q) for rows r (low 16 bits) and r + 8 (high 16 bits); a lane sees a
  // quarter of the K words, so each half stays below 2^16 for K < 2^18 (the launcher checks).
  int acc[MT][8][4], nzp[MT];
#pragma unroll
  for (int i = 0; i < MT; ++i) {
    nzp[i] = 0;
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0;
  }

#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (s < nk) load_stage(s, s);
    cp_async_commit();
  }
  for (int kt = 0; kt < nk; ++kt) {
    cp_async_wait<STAGES - 2>();
    __syncthreads();  // stage kt visible to all; everyone is done with stage kt-1 (its slot is refilled next)
    {
      const int kn = kt + STAGES - 1;
      if (kn < nk) load_stage(kn % STAGES, kn);
      cp_async_commit();
    }
    const uint4 *sP = reinterpret_cast<const uint4 *>(smem + (kt % STAGES) * STAGE_WORDS);
    const uint4 *sQ = sP + BM * CPR;
    const uint4 *sW = sQ + BM * CPR;
#pragma unroll
    for (int h = 0; h < KWS / 16; ++h) {
      const int ch = 4 * h + t;
      uint4 wv[8];
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) {
        const int c = wn * 64 + nt * 8 + g;
        wv[nt] = sW[c * CPR + (KWS == 32 ? (ch ^ ((c & 1) << 2)) : ch)];
      }
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        const int r = wm * 16 * MT + mt * 16 + g;  // r and r + 8 have the same parity
        const int sw = KWS == 32 ? (ch ^ ((r & 1) << 2)) : ch;
        const uint4 p0 = sP[r * CPR + sw], p1 = sP[(r + 8) * CPR + sw];
        const uint4 q0 = sQ[r * CPR + sw], q1 = sQ[(r + 8) * CPR + sw];
        const uint32_t ap0[4] = {p0.x, p1.x, p0.y, p1.y}, ap1[4] = {p0.z, p1.z, p0.w, p1.w};
        const uint32_t aq0[4] = {q0.x, q1.x, q0.y, q1.y}, aq1[4] = {q0.z, q1.z, q0.w, q1.w};
        if (FUSE_NZ) {
          nzp[mt] += __popc(p0.x | q0.x) + __popc(p0.y | q0.y) + __popc(p0.z | q0.z) + __popc(p0.w | q0.w) +
                     ((__popc(p1.x | q1.x) + __popc(p1.y | q1.y) + __popc(p1.z | q1.z) + __popc(p1.w | q1.w)) << 16);
        }
        // Issue order: 8 independent accumulators between two MMAs on the same one.
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) mma_b1_nv(acc[mt][nt], ap0, wv[nt].x, wv[nt].y);
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) mma_b1_nv(acc[mt][nt], aq0, ~wv[nt].x, ~wv[nt].y);
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) mma_b1_nv(acc[mt][nt], ap1, wv[nt].z, wv[nt].w);
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) mma_b1_nv(acc[mt][nt], aq1, ~wv[nt].z, ~wv[nt].w);
      }
    }
  }
  cp_async_wait<0>();
  const bool vec = (ldo & 1) == 0;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      const int r = m0 + wm * 16 * MT + mt * 16 + g + hf * 8;
      int z = 0;
      if (FUSE_NZ) {
        z = hf ? (int)((unsigned)nzp[mt] >> 16) : (nzp[mt] & 0xFFFF);
        z += __shfl_xor_sync(0xffffffffu, z, 1);
        z += __shfl_xor_sync(0xffffffffu, z, 2);
      }
      if (r >= M) continue;
      if (!FUSE_NZ) z = nz[r];
      int32_t *orow = out + (size_t)r * ldo;
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) {
        const int c = n0 + wn * 64 + nt * 8 + 2 * t;
        store_pair(orow, c, N, vec, 2 * acc[mt][nt][2 * hf] - z, 2 * acc[mt][nt][2 * hf + 1] - z);
      }
    }
}

}  // namespace

void launch_row_popc(bool diff, const uint32_t *dP, const uint32_t *dQ, int ldk, int m, int *dNz, cudaStream_t st) {
  if (diff) row_popc<true><<<(m + 7) / 8, 256, 0, st>>>(dP, dQ, ldk, m, dNz);
  else row_popc<<<(m + 7) / 8, 256, 0, st>>>(dP, dQ, ldk, m, dNz);
}

void launch_tb_mma_skinny(const uint32_t *dP, const uint32_t *dQ, const uint32_t *dW, int ldk, int m, int n,
                          int32_t *dOut, cudaStream_t st) {
  const int blocks = (n + SK_COLS - 1) / SK_COLS;
  if (m <= 16) tb_mma_skinny<1><<<blocks, 256, 0, st>>>(dP, dQ, dW, ldk, m, n, dOut, n);
  else if (m <= 32) tb_mma_skinny<2><<<blocks, 256, 0, st>>>(dP, dQ, dW, ldk, m, n, dOut, n);
  else tb_mma_skinny<4><<<blocks, 256, 0, st>>>(dP, dQ, dW, ldk, m, n, dOut, n);
}

// v4: 128x128 blocks of 4 warps of 64x64, 2-stage cp.async pipeline of 1024-bit K stages, nz from row_popc (its
// variants are in native/dev/tb_gemm_variants.cu).
void launch_tb_mma_b1(const uint32_t *dP, const uint32_t *dQ, const uint32_t *dW, int ldk, int *dNz, int m, int n,
                      int32_t *dOut, cudaStream_t st) {
  static bool attr = false;
  if (!attr) {
    cudaFuncSetAttribute(tb_mma4<2, 32, 2, false, 4>, cudaFuncAttributeMaxDynamicSharedMemorySize, TB4_SMEM(2, 32, 2, 4));
    attr = true;
  }
  const dim3 grid((n + 127) / 128, (m + 127) / 128);
  row_popc<<<(m + 7) / 8, 256, 0, st>>>(dP, dQ, ldk, m, dNz);
  tb_mma4<2, 32, 2, false, 4><<<grid, 128, TB4_SMEM(2, 32, 2, 4), st>>>(dP, dQ, dW, ldk, dNz, m, n, dOut, n);
}

void launch_i8_mma_skinny(const int8_t *dA, int lda, const uint32_t *dW, int ldk, int m, int n, int32_t *dOut,
                          cudaStream_t st) {
  const int blocks = (n + SK_COLS - 1) / SK_COLS;
  if (m <= 16) i8_mma_skinny<1><<<blocks, 256, 0, st>>>(dA, lda, dW, ldk, m, n, dOut, n);
  else if (m <= 32) i8_mma_skinny<2><<<blocks, 256, 0, st>>>(dA, lda, dW, ldk, m, n, dOut, n);
  else i8_mma_skinny<4><<<blocks, 256, 0, st>>>(dA, lda, dW, ldk, m, n, dOut, n);
}

void launch_i8_mma(const int8_t *dA, int lda, const uint32_t *dW, int ldk, int m, int n, int32_t *dOut,
                   cudaStream_t st) {
  dim3 grid((n + I8_BN - 1) / I8_BN, (m + I8_BM - 1) / I8_BM);
  i8_mma<<<grid, 256, 0, st>>>(dA, lda, dW, ldk, m, n, dOut, n);
}

}  // namespace bwq_gemm
