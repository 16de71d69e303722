// Packed GEMMs on the Hopper warpgroup tensor cores (sm_90a code, run on an sm_90 device): operand tiles in
// 128-byte-swizzled shared memory, persistent tiles, a producer warp that fills a ring of slots by TMA.
//   tb_wgmma3  ternary x binary, the automatic choice for M > 64 there (TMA-store epilogue, int16 or int32;
//              tb_wgmma3<false> stores from the registers when n % 4 != 0)
//   tb_wgmma2  the same MMAs with cp.async loads: the fallback without cuTensorMapEncodeTiled or PDL
//   i8_wgmma   int8 x binary, the weights as the register operand
#include "common.cuh"

namespace bwq_gemm {
namespace {

// Ternary x binary GEMM for Hopper (sm_90a only): warpgroup MMA `wgmma.mma_async ... m64n128k256 .b1
// and.popc` with both operands read from shared memory by the tensor cores. Block tile 128 x 128 = 2
// consumer warpgroups of 64 x 128; each keeps two accumulators, Dp = popc(p & w) and Dq = popc(q & w)
// (64 registers each), so  sum = 2 (Dp - Dq) - (popc(p) - popc(q))  with the row sums from row_popc<true>.
// Operand tiles are 128 rows x 1024 bits (128 bytes) per K stage, K-major with the 128-byte swizzle.

#ifdef BWQ_HAS_WGMMA
// Output pair (row g + 8 hf, columns 8j + 2t, +1) of a lane's Dp / Dq fragments: 2 (Dp - Dq) - rowsum.
__device__ __forceinline__ int2 tb_pair(const int (&dp)[64], const int (&dq)[64], int j, int hf, int z) {
  return make_int2(2 * (dp[4 * j + 2 * hf] - dq[4 * j + 2 * hf]) - z,
                   2 * (dp[4 * j + 2 * hf + 1] - dq[4 * j + 2 * hf + 1]) - z);
}
// Dynamic shared memory from its first 1024-byte boundary (swizzle atoms are 1024-byte aligned; the launchers
// add 1024 bytes for this): returns its shared-window address and sets `aligned` to the same place.
__device__ __forceinline__ uint32_t smem_align1024(unsigned char *raw_ptr, unsigned char *&aligned) {
  const uint32_t raw = (uint32_t)__cvta_generic_to_shared(raw_ptr);
  const uint32_t base = (raw + 1023u) & ~1023u;
  aligned = raw_ptr + (base - raw);
  return base;
}
// Keeps a register's value live and in place up to this point: a wgmma reads its A registers asynchronously,
// until the wgmma_wait that covers it.
__device__ __forceinline__ void keep_reg(uint32_t &r) { asm volatile("" : "+r"(r)::"memory"); }
#endif

// Variant 2: 128-byte-swizzled K-major tiles (row r of a 128 x 1024-bit tile at byte 128 r, its 16-byte
// chunk c at position c ^ (r % 8): eight consecutive threads copy one whole 128-byte line, conflict-free),
// persistent blocks (grid = number of SMs, tiles taken round-robin) that issue the next tile's first
// STAGES - 2 stages before the epilogue, and an epilogue staged through shared memory so that each warp
// stores whole 512-byte output rows.
#define TBW2_STAGE (3 * 128 * 128)
#define TBW2_SMEM(STAGES) (TBW2_STAGE * (STAGES) + 1024)
#define TBW2_LDS 136  // staging row stride in words (136 = 128 + 8: conflict-free 8-byte fragment stores)

#ifdef BWQ_HAS_WGMMA
__device__ __forceinline__ uint64_t wgmma_desc_sw128(uint32_t smem_addr) {
  // 128-byte rows with the 128-byte swizzle (mode 1 in bits 62-63), 8-row groups 1024 bytes apart; the
  // leading offset is unused for swizzled K-major operands.
  return (uint64_t)((smem_addr & 0x3FFFF) >> 4) | ((uint64_t)1 << 16) | ((uint64_t)(1024 >> 4) << 32) |
         ((uint64_t)1 << 62);
}
// One 1024-bit K stage at shared address st (P, Q, W tiles of 128 rows x 128 bytes, 128-byte swizzle) for
// warpgroup wg (rows 64 wg .. 64 wg + 63): 4 steps of wgmma(Dp, P, W) and wgmma(Dq, Q, W), one commit group.
__device__ __forceinline__ void wgmma_stage(uint32_t st, int wg, int (&dp)[64], int (&dq)[64]) {
  const uint32_t aP = st + wg * 64 * 128, aQ = aP + 128 * 128, aW = st + 2 * 128 * 128;
  wgmma_fence();
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const uint64_t dB = wgmma_desc_sw128(aW + 32 * j);
    wgmma_b1_m64n128(dp, wgmma_desc_sw128(aP + 32 * j), dB);
    wgmma_b1_m64n128(dq, wgmma_desc_sw128(aQ + 32 * j), dB);
  }
  wgmma_commit();
}
#endif

template <int STAGES>
__global__ void __launch_bounds__(256, 1)
    tb_wgmma2(const uint32_t *__restrict__ P, const uint32_t *__restrict__ Q, const uint32_t *__restrict__ W, int ldk,
              const int *__restrict__ rowsum, int M, int N, int32_t *__restrict__ out, int ldo, int tiles_n,
              int tiles) {
#ifdef BWQ_HAS_WGMMA
  static_assert(STAGES >= 3 && (STAGES - 2) * TBW2_STAGE >= 128 * TBW2_LDS * 4, "staging fits in the free slots");
  extern __shared__ unsigned char smem_raw[];
  unsigned char *smem;
  const uint32_t sbase = smem_align1024(smem_raw, smem);
  const int tid = threadIdx.x, wg = tid >> 7;
  const int nk = ldk / 32;
  int tile = blockIdx.x;
  if (tile >= tiles) return;

  auto load_stage = [&](int s, int kt, int m0, int n0) {
    unsigned char *base = smem + s * TBW2_STAGE;
    const size_t kword = (size_t)kt * 32;
#pragma unroll
    for (int i = tid; i < 128 * 8; i += 256) {
      const int r = i >> 3, c = i & 7;
      const int dst = r * 128 + ((c ^ (r & 7)) << 4);
      const size_t off = (size_t)(m0 + r) * ldk + kword + c * 4;
      cp_async16(base + dst, P + off);
      cp_async16(base + 128 * 128 + dst, Q + off);
      cp_async16(base + 2 * 128 * 128 + dst, W + (size_t)(n0 + r) * ldk + kword + c * 4);
    }
  };
  auto prologue = [&](int t) {
    const int m0 = (t / tiles_n) * 128, n0 = (t % tiles_n) * 128;
#pragma unroll
    for (int s = 0; s < STAGES - 2; ++s) {
      if (t < tiles && s < nk) load_stage(s, s, m0, n0);
      cp_async_commit();
    }
  };

  prologue(tile);
  const int lane = tid & 31, w = (tid >> 5) & 3, g = lane >> 2, t4 = lane & 3;
  int *stg = reinterpret_cast<int *>(smem + (STAGES - 2) * TBW2_STAGE);
  const bool vec4 = (ldo & 3) == 0;
  for (; tile < tiles; tile += gridDim.x) {
    const int m0 = (tile / tiles_n) * 128, n0 = (tile % tiles_n) * 128;
    int dp[64], dq[64];
#pragma unroll
    for (int i = 0; i < 64; ++i) dp[i] = dq[i] = 0;
    for (int kt = 0; kt < nk; ++kt) {
      cp_async_wait<STAGES - 3>();
      fence_proxy_async();
      __syncthreads();
      {
        const int kn = kt + STAGES - 2;
        if (kn < nk) load_stage(kn % STAGES, kn, m0, n0);
        cp_async_commit();
      }
      wgmma_stage(sbase + (kt % STAGES) * TBW2_STAGE, wg, dp, dq);
      wgmma_wait<1>();
    }
    wgmma_wait<0>();
    __syncthreads();                // every warpgroup is done with every stage slot
    prologue(tile + gridDim.x);     // the next tile's first stages load during the epilogue
    // Fragment -> staging (rows of 128 words, stride TBW2_LDS): d[4j + e] is row g + 8 (e >> 1), column
    // 8j + 2t + (e & 1) of the warp's 16 rows.
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      const int rl = wg * 64 + w * 16 + g + hf * 8;
      const int z = m0 + rl < M ? rowsum[m0 + rl] : 0;
#pragma unroll
      for (int j = 0; j < 16; ++j) {
        *reinterpret_cast<int2 *>(stg + rl * TBW2_LDS + 8 * j + 2 * t4) = tb_pair(dp, dq, j, hf, z);
      }
    }
    __syncthreads();
#pragma unroll 4
    for (int i = tid; i < 128 * 32; i += 256) {
      const int r = i >> 5, q = i & 31, gr = m0 + r, c = n0 + 4 * q;
      if (gr >= M || c >= N) continue;
      const int4 v = *reinterpret_cast<const int4 *>(stg + r * TBW2_LDS + 4 * q);
      int32_t *o = out + (size_t)gr * ldo + c;
      if (vec4 && c + 3 < N) {
        *reinterpret_cast<int4 *>(o) = v;
      } else {
        o[0] = v.x;
        if (c + 1 < N) o[1] = v.y;
        if (c + 2 < N) o[2] = v.z;
        if (c + 3 < N) o[3] = v.w;
      }
    }
    // The next tile's first barrier (before any load into the staging slots) orders these reads.
  }
  cp_async_wait<0>();
#endif
}

// Variant 3 (the default): the same 128 x 1024-bit tiles, loaded by the Tensor Memory Accelerator. A
// producer warp issues one 2-D TMA copy per operand tile (hardware 128-byte swizzle = the layout above)
// into a ring of 3 slots; `full` mbarriers count the bytes in, `empty` mbarriers (one arrival per consumer
// warp, after its wgmmas on the slot are complete) hand slots back. The two consumer warpgroups only wait
// and issue wgmma, so loads run ahead across tiles and during the epilogue.
// Row sums popc(p) - popc(q) come from row_popc<true>, launched just before as a programmatic dependency:
// the GEMM starts while it runs and waits for it (griddepcontrol.wait) only in its first tile's last K stage.
// Epilogue (TMA_STORE): fragments -> 128-byte-swizzled staging -> asynchronous TMA stores (clipped at the
// matrix edges); otherwise (n % 4 != 0) 8-byte stores straight from the registers.
#define TBW3_SLOTS 3
#define TBW3_SLOT (3 * 128 * 128)  // P, Q, W tiles
#define TBW3_SMEM (TBW3_SLOTS * TBW3_SLOT + 128 * 128 * 4 + 128 + 1024)  // slots, staging, mbarriers, alignment

#ifdef BWQ_HAS_WGMMA
__device__ __forceinline__ void mbar_init(uint32_t bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
// Waits for the phase of `parity` to complete. A wait that has not finished after about 2^26 polls (seconds)
// is a protocol bug: trap, so the launch fails with an error instead of hanging the process.
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  for (uint32_t polls = 0;; ++polls) {
    uint32_t done;
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
    if (done) return;
    if (polls > (1u << 26)) __trap();
  }
}
__device__ __forceinline__ void tma_load_2d(uint32_t dst, const void *map, int c0, int c1, uint32_t bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::"r"(
          dst),
      "l"((uint64_t)map), "r"(c0), "r"(c1), "r"(bar)
      : "memory");
}
__device__ __forceinline__ void named_barrier(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ void tma_store_2d(const void *map, int c0, int c1, uint32_t src) {
  asm volatile("cp.async.bulk.tensor.2d.global.shared::cta.bulk_group [%0, {%1, %2}], [%3];\n" ::"l"((uint64_t)map),
               "r"(c0), "r"(c1), "r"(src)
               : "memory");
}
// The slot ring of the TMA kernels: S `full` mbarriers (one arrival: the producer's expect_tx) then S `empty`
// ones (one arrival per consumer warp) at `bars`; thread 0 initialises them, then the block synchronises.
__device__ __forceinline__ void ring_init(uint32_t bars, int S, int consumer_warps) {
  if (threadIdx.x == 0) {
    for (int i = 0; i < S; ++i) {
      mbar_init(bars + 8 * i, 1);
      mbar_init(bars + 8 * (S + i), consumer_warps);
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();
}
// Producer loop: for the block's tiles (b, b + grid, ...; 128 x 128 tiles, column tile fastest) and K stages,
// waits for a free slot, posts its byte count and lets load(dst, full, m0, n0, kt) issue the TMA copies.
template <class Load>
__device__ __forceinline__ void ring_produce(uint32_t bars, int S, uint32_t sbase, uint32_t slot_bytes, int tiles,
                                             int tiles_n, int nk, Load load) {
  int slot = 0;
  uint32_t phase = 0;
  for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const int m0 = (tile / tiles_n) * 128, n0 = (tile % tiles_n) * 128;
    for (int kt = 0; kt < nk; ++kt) {
      mbar_wait(bars + 8 * (S + slot), phase ^ 1);
      const uint32_t full = bars + 8 * slot;
      mbar_expect_tx(full, slot_bytes);
      load(sbase + slot * slot_bytes, full, m0, n0, kt);
      if (++slot == S) slot = 0, phase ^= 1;
    }
  }
}
// Consumer side of the ring: the slot of the next K stage (wait_full) and, once that stage's wgmmas have let
// the previous stage's complete, advance() hands the previous slot back (one arrival per warp: pass lane 0).
struct RingCursor {
  uint32_t bars;
  int S, slot = 0, prev = 0;
  uint32_t phase = 0;
  __device__ __forceinline__ RingCursor(uint32_t bars_, int S_) : bars(bars_), S(S_) {}
  __device__ __forceinline__ int wait_full() {
    mbar_wait(bars + 8 * slot, phase);
    return slot;
  }
  __device__ __forceinline__ void advance(bool release_prev) {
    if (release_prev) release();
    prev = slot;
    if (++slot == S) slot = 0, phase ^= 1;
  }
  __device__ __forceinline__ void release() { mbar_arrive(bars + 8 * (S + prev)); }  // the last stage's slot
};
// Epilogue protocol of a warpgroup (leader = its thread 0): wait until the previous stores have read the
// staging, write(), make the writes visible to the TMA unit, then the leader issues store() as one group.
template <class Write, class Store>
__device__ __forceinline__ void staged_store(int wg, bool leader, Write write, Store store) {
  if (leader) asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory");
  named_barrier(1 + wg, 128);
  write();
  fence_proxy_async();
  named_barrier(1 + wg, 128);
  if (leader) {
    store();
    asm volatile("cp.async.bulk.commit_group;\n" ::: "memory");
  }
}
#endif

template <bool TMA_STORE, bool OUT16 = false>
__global__ void __launch_bounds__(288, 1)
    tb_wgmma3(const __grid_constant__ CUtensorMap tmP, const __grid_constant__ CUtensorMap tmQ,
              const __grid_constant__ CUtensorMap tmW, const __grid_constant__ CUtensorMap tmO, int ldk,
              const int *__restrict__ rowsum, int M, int N, int32_t *__restrict__ out, int ldo, int tiles_n,
              int tiles) {
#ifdef BWQ_HAS_WGMMA
  constexpr int S = TBW3_SLOTS, SLOT = TBW3_SLOT;
  extern __shared__ unsigned char smem_raw[];
  unsigned char *smem;
  const uint32_t sbase = smem_align1024(smem_raw, smem);
  const uint32_t stage_out = sbase + S * SLOT;           // staging: 2 warpgroups x 4 boxes of 64 x 32 int32
  const uint32_t bars = stage_out + 128 * 128 * 4;       // full[S], then empty[S]
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int nk = ldk / 32;
  ring_init(bars, S, 8);

  if (warp == 8) {  // producer
    if (lane == 0)
      ring_produce(bars, S, sbase, SLOT, tiles, tiles_n, nk, [&](uint32_t dst, uint32_t full, int m0, int n0, int kt) {
        tma_load_2d(dst, &tmP, kt * 128, m0, full);
        tma_load_2d(dst + 128 * 128, &tmQ, kt * 128, m0, full);
        tma_load_2d(dst + 2 * 128 * 128, &tmW, kt * 128, n0, full);
      });
    return;
  }

  const int wg = tid >> 7, w = warp & 3, g = lane >> 2, t4 = lane & 3;
  RingCursor ring(bars, S);
  const int r_lo = wg * 64 + w * 16 + g;  // this lane's rows of a tile: r_lo and r_lo + 8
  auto load_z = [&](int m0, int (&z)[2]) {
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) z[hf] = m0 + r_lo + 8 * hf < M ? __ldcg(rowsum + m0 + r_lo + 8 * hf) : 0;
  };
  for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const int m0 = (tile / tiles_n) * 128, n0 = (tile % tiles_n) * 128;
    const bool first = tile == (int)blockIdx.x;
    int z[2];
    if (!first) load_z(m0, z);  // early, so the loads are back by the epilogue (first tile: in its last stage)
    int dp[64], dq[64];
#pragma unroll
    for (int i = 0; i < 64; ++i) dp[i] = dq[i] = 0;
    for (int kt = 0; kt < nk; ++kt) {
      wgmma_stage(sbase + ring.wait_full() * SLOT, wg, dp, dq);
      if (first && kt == nk - 1) {
        pdl_wait();  // row_popc has finished (no-op without PDL); the loads overlap this stage's wgmmas
        load_z(m0, z);
      }
      wgmma_wait<1>();
      ring.advance(kt > 0 && lane == 0);  // the previous slot's wgmmas are done
    }
    wgmma_wait<0>();
    if (lane == 0) ring.release();
    // Accumulator fragment: warp w of the warpgroup owns rows 16w..16w+15; lane (g, t): d[4j + e] is row
    // g + 8 (e >> 1), column 8j + 2t + (e & 1).
    if (OUT16) {
      // 16-bit output (the caller ensures |sum| <= K < 2^15): 2 boxes of 64 rows x 64 int16 (128 bytes) per
      // warpgroup, same swizzled staging and store protocol as below; a lane's two adjacent columns form one
      // 32-bit word (chunk j % 8 of box j / 8).
      unsigned char *wst = smem + (stage_out - sbase) + wg * 2 * 8192;
      const uint32_t src = stage_out + wg * 2 * 8192;
      staged_store(
          wg, (tid & 127) == 0,
          [&]() {
#pragma unroll
            for (int hf = 0; hf < 2; ++hf) {
              const int rw = w * 16 + g + hf * 8;
#pragma unroll
              for (int j = 0; j < 16; ++j) {
                const int2 v = tb_pair(dp, dq, j, hf, z[hf]);
                const int off = (j >> 3) * 8192 + rw * 128 + (((j & 7) ^ (rw & 7)) << 4) + 4 * t4;
                *reinterpret_cast<uint32_t *>(wst + off) = ((uint32_t)v.x & 0xFFFFu) | ((uint32_t)v.y << 16);
              }
            }
          },
          [&]() {
#pragma unroll
            for (int b = 0; b < 2; ++b) tma_store_2d(&tmO, n0 + 64 * b, m0 + wg * 64, src + b * 8192);
          });
    } else if (TMA_STORE) {
      // Staging = 4 boxes of 64 rows x 32 int32 (128 bytes) per warpgroup in the 128-byte-swizzled layout the
      // TMA store reads (row r of box b at byte 8192 b + 128 r, 16-byte chunk c at c ^ (r % 8)); the lanes of
      // a half-warp hit 32 different banks. One thread per warpgroup stores the boxes asynchronously; the
      // next epilogue first waits until those stores have read the staging.
      unsigned char *wst = smem + (stage_out - sbase) + wg * 4 * 8192;
      const uint32_t src = stage_out + wg * 4 * 8192;
      staged_store(
          wg, (tid & 127) == 0,
          [&]() {
#pragma unroll
            for (int hf = 0; hf < 2; ++hf) {
              const int rw = w * 16 + g + hf * 8;  // row within the warpgroup's 64
#pragma unroll
              for (int j = 0; j < 16; ++j) {
                const int2 v = tb_pair(dp, dq, j, hf, z[hf]);
                const int col = 8 * (j & 3) + 2 * t4;  // column within box j / 4
                const int off = (j >> 2) * 8192 + rw * 128 + (((col >> 2) ^ (rw & 7)) << 4) + (col & 3) * 4;
                *reinterpret_cast<int2 *>(wst + off) = v;
              }
            }
          },
          [&]() {
#pragma unroll
            for (int b = 0; b < 4; ++b) tma_store_2d(&tmO, n0 + 32 * b, m0 + wg * 64, src + b * 8192);
          });
    } else {
      const bool vec = (ldo & 1) == 0;
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        const int r = m0 + wg * 64 + w * 16 + g + hf * 8;
        if (r >= M) continue;
        int32_t *orow = out + (size_t)r * ldo;
#pragma unroll
        for (int j = 0; j < 16; ++j) {
          const int c = n0 + 8 * j + 2 * t4;
          const int2 v = tb_pair(dp, dq, j, hf, z[hf]);
          store_pair(orow, c, N, vec, v.x, v.y);
        }
      }
    }
  }
  if ((TMA_STORE || OUT16) && (tid & 127) == 0) asm volatile("cp.async.bulk.wait_group 0;\n" ::: "memory");
#endif
}

// ---------------------------------------------------------------------------------------------
// int8 x binary GEMM for Hopper (`i8_wgmma`): warpgroup MMA `wgmma ... m64n128k32.s32.s8.s8` with the
// weights as the register operand A and the activations as B from shared memory, so the tensor cores
// compute the transposed tile D[weight row][token]. The ±1 weight bytes never exist in memory: per 32-value K
// step each lane expands four 4-bit groups of its packed weight words (rows g and g + 8 of its warp, bits
// 4t..4t+3 and 16+4t..16+4t+3) into four registers of ±1 bytes (a 16-entry table in shared memory), which is
// the wgmma A fragment.
// Block = 2 consumer warpgroups (64 weight rows each) + 1 producer warp; persistent 128-token x 128-weight-row
// tiles (weight tile fastest). Per K stage of 128 values the producer's TMA brings the activation tile (128
// tokens x 128 bytes, 128-byte swizzle, the B layout of tb_wgmma's weights) and the packed weight tile (128
// rows x 16 bytes) into a ring of 6 slots. Epilogue: the transposed fragments go to 128-byte-swizzled
// staging boxes of 128 tokens x 32 int32 and out with TMA stores (n % 4 == 0; else i8_mma runs).
#define I8W_SLOTS 6
#define I8W_SLOT (128 * 128 + 128 * 16)                                  // activation tile, packed weight tile
#define I8W_SMEM (I8W_SLOTS * I8W_SLOT + 2 * 2 * 16384 + 128 + 1024)  // + staging, mbarriers, alignment

__global__ void __launch_bounds__(288, 1)
    i8_wgmma(const __grid_constant__ CUtensorMap tmX, const __grid_constant__ CUtensorMap tmW,
             const __grid_constant__ CUtensorMap tmO, int nk, int tiles_n, int tiles) {
#ifdef BWQ_HAS_WGMMA
  constexpr int S = I8W_SLOTS, SLOT = I8W_SLOT;
  extern __shared__ unsigned char smem_raw[];
  unsigned char *smem;
  const uint32_t sbase = smem_align1024(smem_raw, smem);
  const uint32_t stage_out = sbase + S * SLOT;      // staging: 2 warpgroups x 2 boxes of 128 x 32 int32
  const uint32_t bars = stage_out + 2 * 2 * 16384;  // full[S], then empty[S]
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  __shared__ uint32_t lut[16];  // 4 weight bits -> 4 bytes of +-1 (a table lookup beat the multiply form)
  if (tid < 16) lut[tid] = nibble_pm1(tid);
  ring_init(bars, S, 8);

  if (warp == 8) {  // producer
    if (lane == 0)
      ring_produce(bars, S, sbase, SLOT, tiles, tiles_n, nk, [&](uint32_t dst, uint32_t full, int m0, int n0, int kt) {
        tma_load_2d(dst, &tmX, kt * 128, m0, full);
        tma_load_2d(dst + 128 * 128, &tmW, kt * 16, n0, full);
      });
    return;
  }

  const int wg = tid >> 7, w = warp & 3, g = lane >> 2, t4 = lane & 3;
  const int rw = wg * 64 + w * 16 + g;  // this lane's weight rows of a tile: rw and rw + 8
  RingCursor ring(bars, S);
  // One K stage: the lane's two 16-byte weight rows from the slot, expanded to the A fragments of the 4
  // steps, then 4 wgmmas against the activation tile (step j starts 32 j bytes into its rows), one group.
  auto stage = [&](uint32_t st, int (&d)[64], uint32_t (&a)[16]) {
    uint32_t lo[4], hi[4];
    asm volatile("ld.shared.v4.b32 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(lo[0]), "=r"(lo[1]), "=r"(lo[2]), "=r"(lo[3])
                 : "r"(st + 128 * 128 + rw * 16));
    asm volatile("ld.shared.v4.b32 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(hi[0]), "=r"(hi[1]), "=r"(hi[2]), "=r"(hi[3])
                 : "r"(st + 128 * 128 + (rw + 8) * 16));
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const uint32_t xl = lo[j] >> (4 * t4), xh = hi[j] >> (4 * t4);
      a[4 * j] = lut[xl & 0xFu];
      a[4 * j + 1] = lut[xh & 0xFu];
      a[4 * j + 2] = lut[(xl >> 16) & 0xFu];
      a[4 * j + 3] = lut[(xh >> 16) & 0xFu];
    }
    wgmma_fence();
#pragma unroll
    for (int j = 0; j < 4; ++j)
      wgmma_s8_m64n128_ra(d, a[4 * j], a[4 * j + 1], a[4 * j + 2], a[4 * j + 3], wgmma_desc_sw128(st + 32 * j));
    wgmma_commit();
  };
  uint32_t aE[16], aO[16];
  for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const int m0 = (tile / tiles_n) * 128, n0 = (tile % tiles_n) * 128;
    int d[64];
#pragma unroll
    for (int i = 0; i < 64; ++i) d[i] = 0;
    for (int kt = 0; kt < nk; ++kt) {
      const uint32_t st = sbase + ring.wait_full() * SLOT;
      if (kt & 1) stage(st, d, aO);
      else stage(st, d, aE);
      wgmma_wait<1>();
      // The previous stage's wgmmas are done: its A registers may be rewritten, its slot handed back.
      if (kt & 1) {
#pragma unroll
        for (int i = 0; i < 16; ++i) keep_reg(aE[i]);
      } else {
#pragma unroll
        for (int i = 0; i < 16; ++i) keep_reg(aO[i]);
      }
      ring.advance(kt > 0 && lane == 0);
    }
    wgmma_wait<0>();
#pragma unroll
    for (int i = 0; i < 16; ++i) keep_reg(aE[i]), keep_reg(aO[i]);
    if (lane == 0) ring.release();
    // d[4j + e] = D[weight row rw + 8 (e >> 1)][token 8j + 2t + (e & 1)] -> staging box (wcol / 32) of the
    // warpgroup's 64 output columns, row = token, 16-byte chunk (wcol % 32) / 4 at chunk ^ (token % 8).
    unsigned char *wst = smem + (stage_out - sbase) + wg * 2 * 16384;
    const uint32_t src = stage_out + wg * 2 * 16384;
    staged_store(
        wg, (tid & 127) == 0,
        [&]() {
#pragma unroll
          for (int j = 0; j < 16; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const int tok = 8 * j + 2 * t4 + (e & 1), wcol = w * 16 + g + 8 * (e >> 1), c = wcol & 31;
              const int off = (wcol >> 5) * 16384 + tok * 128 + (((c >> 2) ^ (tok & 7)) << 4) + (c & 3) * 4;
              *reinterpret_cast<int *>(wst + off) = d[4 * j + e];
            }
        },
        [&]() {
#pragma unroll
          for (int b = 0; b < 2; ++b) tma_store_2d(&tmO, n0 + wg * 64 + 32 * b, m0, src + b * 16384);
        });
  }
  if ((tid & 127) == 0) asm volatile("cp.async.bulk.wait_group 0;\n" ::: "memory");
#endif
}

}  // namespace

// cuTensorMapEncodeTiled for a 2-D row-major tensor, with a small cache of recent maps: a map is a pure
// function of its arguments (address, sizes, stride, box, swizzle), so a cached one is valid whenever all
// of them match, and back-to-back calls on the same buffers skip the host-side encoding.
bool encode_2d(CUtensorMap *map, CUtensorMapDataType type, const void *ptr, uint64_t cols, uint64_t rows,
               uint64_t row_bytes, uint32_t box_cols, uint32_t box_rows, CUtensorMapL2promotion promotion,
               CUtensorMapSwizzle swizzle = CU_TENSOR_MAP_SWIZZLE_128B) {
  struct Entry {
    const void *ptr;
    uint64_t cols, rows, row_bytes;
    uint32_t box_cols, box_rows;
    int type, promotion, swizzle;
    CUtensorMap map;
  };
  static Entry cache[16];
  static int used = 0, next = 0;
  static std::mutex mu;
  std::lock_guard<std::mutex> lk(mu);
  for (int i = 0; i < used; ++i) {
    const Entry &e = cache[i];
    if (e.ptr == ptr && e.cols == cols && e.rows == rows && e.row_bytes == row_bytes && e.box_cols == box_cols &&
        e.box_rows == box_rows && e.type == (int)type && e.promotion == (int)promotion && e.swizzle == (int)swizzle) {
      *map = e.map;
      return true;
    }
  }
  const cuuint64_t dims[2] = {cols, rows}, strides[1] = {row_bytes};
  const cuuint32_t box[2] = {box_cols, box_rows}, estr[2] = {1, 1};
  if (g_encode_tiled(map, type, 2, const_cast<void *>(ptr), dims, strides, box, estr, CU_TENSOR_MAP_INTERLEAVE_NONE,
                     swizzle, promotion, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) != CUDA_SUCCESS)
    return false;
  cache[next] = Entry{ptr, cols, rows, row_bytes, box_cols, box_rows, (int)type, (int)promotion, (int)swizzle, *map};
  next = (next + 1) % 16;
  if (used < 16) ++used;
  return true;
}

// Hopper wgmma kernels: path 10 = tb_wgmma3 (TMA loads; TMA-store epilogue when n % 4 == 0, else direct
// stores), 11 = tb_wgmma2 (cp.async loads; also the fallback when the driver has no cuTensorMapEncodeTiled),
// 12 = tb_wgmma3 with direct stores. nullptr when no wgmma kernel can run here (caller falls back to path 2).
const char *launch_tb_wgmma(int path, const uint32_t *dP, const uint32_t *dQ, const uint32_t *dW, int ldk, int *dNz,
                            int m, int n, int32_t *dOut, cudaStream_t st, bool allow16, bool *out16) {
  if (!g_has_wgmma) return nullptr;
  static bool attr = false;
  if (!attr) {
    cudaFuncSetAttribute(tb_wgmma2<4>, cudaFuncAttributeMaxDynamicSharedMemorySize, TBW2_SMEM(4));
    cudaFuncSetAttribute(tb_wgmma3<true>, cudaFuncAttributeMaxDynamicSharedMemorySize, TBW3_SMEM);
    cudaFuncSetAttribute(tb_wgmma3<false>, cudaFuncAttributeMaxDynamicSharedMemorySize, TBW3_SMEM);
    cudaFuncSetAttribute(tb_wgmma3<true, true>, cudaFuncAttributeMaxDynamicSharedMemorySize, TBW3_SMEM);
    attr = true;
  }
  const int tiles_n = (n + 127) / 128, tiles = tiles_n * ((m + 127) / 128);
  const int blocks = tiles < g_num_sms ? tiles : g_num_sms;
  if (path != 11 && g_encode_tiled) {
    // Operand maps: uint8 [rows, ldk * 4 bytes] (rows padded to 128), boxes of 128 rows x 128 bytes with the
    // 128-byte swizzle the wgmma descriptors expect.
    CUtensorMap maps[3];
    const void *ptrs[3] = {dP, dQ, dW};
    const int rows[3] = {round_up(m, 128), round_up(m, 128), round_up(n, 128)};
    bool ok = true;
    for (int i = 0; i < 3 && ok; ++i)
      ok = encode_2d(&maps[i], CU_TENSOR_MAP_DATA_TYPE_UINT8, ptrs[i], (uint64_t)ldk * 4, rows[i], (uint64_t)ldk * 4, 128,
                     128, CU_TENSOR_MAP_L2_PROMOTION_L2_256B);
    // Output map: int32 [m, n] (rows n * 4 bytes apart, which TMA needs to be a multiple of 16), boxes of
    // 64 rows x 32 columns, clipped at the matrix edges by the TMA unit.
    // 16-bit output where the caller takes it and every sum fits (|sum| <= K <= 32 ldk < 2^15): int16 [m, n]
    // (rows n * 2 bytes apart, a multiple of 16 when n % 8 == 0), boxes of 64 rows x 64 columns.
    CUtensorMap omap;
    const bool o16 = ok && allow16 && path == 10 && n % 8 == 0 && ldk * 32 < 32768 &&
                     encode_2d(&omap, CU_TENSOR_MAP_DATA_TYPE_UINT16, dOut, n, m, (uint64_t)n * 2, 64, 64,
                               CU_TENSOR_MAP_L2_PROMOTION_NONE);
    bool tma_store = ok && !o16 && path != 12 && n % 4 == 0;
    if (tma_store)
      tma_store = encode_2d(&omap, CU_TENSOR_MAP_DATA_TYPE_INT32, dOut, n, m, (uint64_t)n * 4, 32, 64,
                            CU_TENSOR_MAP_L2_PROMOTION_NONE);
    if (ok) {
      launch_row_popc(true, dP, dQ, ldk, m, dNz, st);
      const int *rs = dNz;
      if (o16 && launch_pdl(tb_wgmma3<true, true>, dim3(blocks), dim3(288), TBW3_SMEM, st, maps[0], maps[1], maps[2],
                            omap, ldk, rs, m, n, dOut, n, tiles_n, tiles) == cudaSuccess) {
        *out16 = true;
        return "tb_wgmma_o16";
      }
      if (tma_store && launch_pdl(tb_wgmma3<true>, dim3(blocks), dim3(288), TBW3_SMEM, st, maps[0], maps[1], maps[2],
                                  omap, ldk, rs, m, n, dOut, n, tiles_n, tiles) == cudaSuccess)
        return "tb_wgmma";
      if (launch_pdl(tb_wgmma3<false>, dim3(blocks), dim3(288), TBW3_SMEM, st, maps[0], maps[1], maps[2], maps[0], ldk,
                     rs, m, n, dOut, n, tiles_n, tiles) == cudaSuccess)
        return "tb_wgmma_st";
      cudaGetLastError();  // e.g. no PDL support: the cp.async kernel below
    }
  }
  launch_row_popc(true, dP, dQ, ldk, m, dNz, st);
  tb_wgmma2<4><<<blocks, 256, TBW2_SMEM(4), st>>>(dP, dQ, dW, ldk, dNz, m, n, dOut, n, tiles_n, tiles);
  return "tb_wgmma_cpasync";
}

// i8_wgmma (Hopper): nullptr when it cannot run here (no wgmma or tensor-map encoder, n % 4 != 0, or the
// launch failed), and the caller runs i8_mma.
const char *launch_i8_wgmma(const int8_t *dA, int lda, const uint32_t *dW, int ldk, int m, int n, int32_t *dOut,
                            cudaStream_t st) {
  if (!g_has_wgmma || !g_encode_tiled || n % 4 != 0 || I8W_SMEM > g_max_smem_optin) return nullptr;
  static bool attr = false;
  if (!attr) {
    cudaFuncSetAttribute(i8_wgmma, cudaFuncAttributeMaxDynamicSharedMemorySize, I8W_SMEM);
    attr = true;
  }
  // Activations: uint8 [rows padded to 128, lda bytes], boxes of 128 bytes x 128 rows, 128-byte swizzle.
  // Weights: uint8 [rows padded to 128, ldk * 4 bytes], boxes of 16 bytes (128 bits) x 128 rows, no swizzle.
  // Output: int32 [m, n], boxes of 32 columns x 128 rows, clipped at the edges.
  CUtensorMap mX, mW, mO;
  if (!encode_2d(&mX, CU_TENSOR_MAP_DATA_TYPE_UINT8, dA, lda, round_up(m, 128), lda, 128, 128,
                 CU_TENSOR_MAP_L2_PROMOTION_L2_256B) ||
      !encode_2d(&mW, CU_TENSOR_MAP_DATA_TYPE_UINT8, dW, (uint64_t)ldk * 4, round_up(n, 128), (uint64_t)ldk * 4, 16,
                 128, CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_SWIZZLE_NONE) ||
      !encode_2d(&mO, CU_TENSOR_MAP_DATA_TYPE_INT32, dOut, n, m, (uint64_t)n * 4, 32, 128,
                 CU_TENSOR_MAP_L2_PROMOTION_NONE))
    return nullptr;
  const int tiles_n = (n + 127) / 128, tiles = tiles_n * ((m + 127) / 128);
  const int blocks = tiles < g_num_sms ? tiles : g_num_sms;
  i8_wgmma<<<blocks, 288, I8W_SMEM, st>>>(mX, mW, mO, lda / 128, tiles_n, tiles);
  if (cudaGetLastError() != cudaSuccess) return nullptr;
  return "i8_wgmma";
}

}  // namespace bwq_gemm
