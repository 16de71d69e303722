// Which packed GEMM kernel runs for which shape (device pointers, padded layout; common.cuh):
//
//  ternary x binary  : M <= 4   -> tb_gemv        (warp per weight row, LOP3 + popc, activations via L1)
//                      M <= 64  -> tb_mma_skinny  (mma.sync m16n8k256 .b1 AND+POPC, 16 columns per block, split K)
//                      M == 1   -> tb_gemv_pdl    on Hopper: the GEMV as a programmatic dependent launch
//                      M  > 64  -> tb_wgmma       on Hopper (sm_90a code on an sm_90 device): wgmma m64n128k256 .b1
//                                                 from 128-byte-swizzled shared memory, TMA loads by a producer
//                                                 warp, persistent 128x128 tiles, TMA-store epilogue (int16
//                                                 sums where they fit), row sums from row_popc launched as a
//                                                 programmatic dependency
//                                  tb_mma_b1      elsewhere (mma.sync, 128x128x1024-bit block tiles, 4 warps of
//                                                 64x64, 2-stage cp.async, 2 blocks per SM; nz from row_popc)
//  int8 x binary     : M <= 2   -> i8_gemv_dp4a   (warp per weight row, bits expanded to +-1 bytes, dp4a)
//                      M <= 64  -> i8_mma_skinny  (mma.sync m16n8k32 s8, +-1 bytes built in registers, split K)
//                      M  > 64  -> i8_wgmma       on Hopper: wgmma m64n128k32 s8 with the weights as the register
//                                                 operand (expanded in registers), activations by TMA
//                                  i8_mma_s8      elsewhere (same MMA as skinny, 128x128x64 tiles, weights expanded
//                                                 in shared memory)
//  ternary x ternary : the second operand's N rows as 2N binary rows (u = (s_pos + s_nonneg) / 2), one ternary x
//                      binary GEMM as above, pairs of sums halved (tt_host, host.cu)
//
// bwq_cuda_set_paths forces a kernel family instead (tests, benchmarks); see g_tb_path below.
#include "common.cuh"

namespace bwq_gemm {
namespace {

// Path selection (bwq_cuda_set_paths, for tests and benchmarks): -1 = automatic, 0 = GEMV, 1 = skinny MMA,
// 2 = tiled MMA (v4); for ternary x binary also 10 = tb_wgmma (Hopper; 16-bit sums where the caller allows it),
// its fallbacks forced on every shape: 11 = tb_wgmma2 (cp.async loads), 12 = tb_wgmma3 with direct stores,
// 14 = int32 output only, and 13 = the M = 1 GEMV as a programmatic dependent launch (Hopper; the default there
// for M = 1); for int8 x binary, 10 = i8_wgmma (Hopper; the default there for M > 64). The comparison variants
// 3 - 9 left the library (native/dev/tb_gemm_variants.cu): bwq_cuda_set_paths turns them into -1.
int g_tb_path = -1, g_i8_path = -1;

}  // namespace

const char *launch_tb(const uint32_t *dP, const uint32_t *dQ, const uint32_t *dW, int ldk, int *dNz, int m, int n,
                      int32_t *dOut, cudaStream_t st, bool *out16) {
  int path = g_tb_path;
  bool allow16 = out16 != nullptr;
  if (out16) *out16 = false;
  if (path < 0) path = m == 1 && g_has_wgmma ? 13 : m <= 4 ? 0 : m <= 64 ? 1 : g_has_wgmma ? 10 : 2;
  if (path == 14) path = 10, allow16 = false;  // tb_wgmma with int32 output
  if (path >= 10 && path <= 12) {
    if (const char *name = launch_tb_wgmma(path, dP, dQ, dW, ldk, dNz, m, n, dOut, st, allow16, out16)) return name;
    path = 2;
  }
  if (path == 13 && m == 1 && g_has_wgmma && ldk * 8 <= 48 * 1024) {
    // M = 1 on Hopper: the GEMV as a programmatic dependent launch.
    if (launch_tb_gemv_pdl(dP, dQ, dW, ldk, n, dOut, st) == cudaSuccess) return "tb_gemv_pdl";
    cudaGetLastError();  // e.g. no PDL support: the plain GEMV below
  }
  if (path == 13) path = 0;
  if (path == 0 && m > 16) path = 1;
  if (path == 1 && m > 64) path = 2;
  if (path == 0 && m <= 4) {
    launch_tb_gemv(dP, dQ, dW, ldk, m, n, dOut, st);
    return "tb_gemv";
  }
  if (path == 0) {
    if (launch_tb_gemv_smem(dP, dQ, dW, ldk, m, n, dOut, st)) return "tb_gemv_smem";
    path = 1;
  }
  if (path == 1) {
    launch_tb_mma_skinny(dP, dQ, dW, ldk, m, n, dOut, st);
    return "tb_mma_skinny";
  }
  launch_tb_mma_b1(dP, dQ, dW, ldk, dNz, m, n, dOut, st);
  return "tb_mma_b1";
}

const char *launch_i8(const int8_t *dA, int lda, const uint32_t *dW, int ldk, int m, int n, int32_t *dOut,
                      cudaStream_t st) {
  int path = g_i8_path;
  if (path < 0) path = m <= 2 ? 0 : m <= 64 ? 1 : g_has_wgmma ? 10 : 2;
  if (path == 10) {
    if (const char *name = launch_i8_wgmma(dA, lda, dW, ldk, m, n, dOut, st)) return name;
    path = 2;
  }
  if (path == 0 && m > 16) path = 1;
  if (path == 1 && m > 64) path = 2;
  if (path == 0) {
    launch_i8_gemv(dA, lda, dW, ldk, m, n, dOut, st);
    return "i8_gemv_dp4a";
  }
  if (path == 1) {
    launch_i8_mma_skinny(dA, lda, dW, ldk, m, n, dOut, st);
    return "i8_mma_skinny";
  }
  launch_i8_mma(dA, lda, dW, ldk, m, n, dOut, st);
  return "i8_mma_s8";
}

const char *launch_tb_scaled(const uint32_t *dP, const uint32_t *dQ, const uint32_t *dW, int ldk, int n,
                             const GemvEpilogue &epi, cudaStream_t st) {
  if ((g_tb_path >= 0 && g_tb_path != 13) || !g_has_wgmma || ldk * 8 > 48 * 1024) return nullptr;
  if (launch_tb_gemv_pdl(dP, dQ, dW, ldk, n, nullptr, st, epi) == cudaSuccess) return "tb_gemv_pdl+epilogue";
  cudaGetLastError();  // e.g. no PDL support: the caller's unfused path
  return nullptr;
}

const char *launch_i8_scaled(const int8_t *dA, int lda, const uint32_t *dW, int ldk, int n, const GemvEpilogue &epi,
                             cudaStream_t st) {
  if (g_i8_path > 0) return nullptr;
  launch_i8_gemv(dA, lda, dW, ldk, 1, n, nullptr, st, epi);
  return "i8_gemv_dp4a+epilogue";
}

}  // namespace bwq_gemm

extern "C" void bwq_cuda_set_paths(int tb_path, int i8_path) {
  using bwq_gemm::g_i8_path;
  using bwq_gemm::g_tb_path;
  g_tb_path = (tb_path >= 0 && tb_path <= 2) || (tb_path >= 10 && tb_path <= 14) ? tb_path : -1;
  g_i8_path = i8_path < 0 || (i8_path > 2 && i8_path != 10) ? -1 : i8_path;
}
