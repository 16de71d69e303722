// Packed binary GEMMs (native/ops/gemm/, in libbwq_cuda.so): what the family's files share. The launchers each
// file defines, the library state (host.cu), the error macro, and the device helpers that several files inline
// (cp.async, mma.sync and wgmma wrappers, PDL), so no device code crosses files.
//
//   gemv.cu        GEMVs: tb_gemv (direct and shared-memory), i8_gemv, tb_gemv_pdl (M = 1 on Hopper)
//   gemm_mma.cu    mma.sync kernels: the skinny (M <= 64) and tiled ternary and int8 GEMMs; row_popc
//   gemm_wgmma.cu  Hopper (sm_90a) TMA / wgmma kernels tb_wgmma3, tb_wgmma2, i8_wgmma and their launchers
//   dispatch.cu    which kernel runs for which shape (launch_tb, launch_i8) and the path overrides
//   host.cu        initialisation, workspaces, resident weights, the host-pointer entry points bwq_cuda_*
//   bench.cu       bwq_cuda_bench, bwq_cuda_mma_peak, cuBLAS through dlopen
// Kernel variants that lost a benchmark are in native/dev/ (their numbers: docs/PERFORMANCE.md).
//
// Device layout (internal): bit matrices are stored with row stride KWd = roundup(ceil(K/32), 32) words
// and row counts padded to multiples of 128, all padding zero; int8 activations with row stride KWd*32
// bytes. Ternary x binary uses  sum_k t*b = 2*popc((w&p)|(~w&q)) - (popc(p)+popc(q)),  which needs
// only zero padding in the activation planes (p = q = 0 there, whatever the weight bits are).
#ifndef BWQ_OPS_GEMM_COMMON_CUH
#define BWQ_OPS_GEMM_COMMON_CUH

#include <cuda.h>
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <mutex>
#include <utility>

#include "../../include/bwq.h"
#include "packed_gemm.cuh"

namespace bwq_gemm {

// Last error text (bwq_cuda_last_error; defined in host.cu).
extern thread_local char g_err[512];

#define CK(call)                                                                                   \
  do {                                                                                             \
    cudaError_t e_ = (call);                                                                       \
    if (e_ != cudaSuccess) {                                                                       \
      snprintf(g_err, sizeof g_err, "%s failed: %s (%s:%d)", #call, cudaGetErrorString(e_), __FILE__, __LINE__); \
      return BWQ_ECUDA;                                                                            \
    }                                                                                              \
  } while (0)

inline int kw_of(int k) { return (k + 31) / 32; }
// The bits of a row's last word that lie below K (all 32 when K is a multiple of 32).
inline uint32_t last_word_mask(int k) { return (k % 32) ? ((1u << (k % 32)) - 1u) : 0xFFFFFFFFu; }
inline int round_up(int x, int a) { return (x + a - 1) / a * a; }

// Library state, set once by bwq_cuda_init (host.cu).
extern int g_max_smem_optin;  // bytes of dynamic shared memory a block may opt in to
// True when the device is sm_90 and this library carries sm_90a code (wgmma), checked once by bwq_cuda_init.
extern bool g_has_wgmma;
extern int g_num_sms;
extern int g_l2_bytes;
// cuTensorMapEncodeTiled from the driver (through the runtime's entry-point query; no link-time libcuda).
typedef CUresult (*EncodeTiled_t)(CUtensorMap *, CUtensorMapDataType, cuuint32_t, void *, const cuuint64_t *,
                                  const cuuint64_t *, const cuuint32_t *, const cuuint32_t *, CUtensorMapInterleave,
                                  CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);
extern EncodeTiled_t g_encode_tiled;

// Grow-only device workspace for the host-pointer entry points.
struct Workspace {
  std::mutex mu;
  void *buf[7] = {nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr};
  size_t cap[7] = {0, 0, 0, 0, 0, 0, 0};
  cudaStream_t stream = nullptr;
  int get(int i, size_t bytes, void **out) {
    if (cap[i] < bytes) {
      if (buf[i]) cudaFree(buf[i]);
      buf[i] = nullptr;
      cap[i] = 0;
      CK(cudaMalloc(&buf[i], bytes));
      cap[i] = bytes;
    }
    *out = buf[i];
    return BWQ_OK;
  }
};
extern Workspace g_ws;
// Initialises the library on first use (bwq_cuda_init).
int ensure_init();

// ---------------------------------------------------------------------------------------------
// Launchers (device pointers, padded layout: packed_gemm.cuh).
// dispatch.cu: the kernel for the shape (or for the path set by bwq_cuda_set_paths); they return its name. With
// out16 (a caller that takes 16-bit output) launch_tb may store the sums as int16 [m, n] instead, when every sum
// fits; it then sets *out16.
const char *launch_tb(const uint32_t *dP, const uint32_t *dQ, const uint32_t *dW, int ldk, int *dNz, int m, int n,
                      int32_t *dOut, cudaStream_t st, bool *out16 = nullptr);
const char *launch_i8(const int8_t *dA, int lda, const uint32_t *dW, int ldk, int m, int n, int32_t *dOut,
                      cudaStream_t st);
// gemv.cu. A GemvEpilogue with y set makes an M = 1 GEMV store y[n] = fl(s[0] * wscale[n] * acc[n]) (product in
// double) instead of the int32 sums (out is then not written).
struct GemvEpilogue {
  const float *s = nullptr, *wscale = nullptr;
  float *y = nullptr;
};
#ifdef __CUDACC__
__device__ __forceinline__ float epilogue_value(const GemvEpilogue &e, int m, int n, int acc) {
  return __double2float_rn(__dmul_rn(__dmul_rn((double)__ldcg(e.s + m), (double)e.wscale[n]), (double)acc));
}
#endif
void launch_tb_gemv(const uint32_t *dP, const uint32_t *dQ, const uint32_t *dW, int ldk, int m, int n, int32_t *dOut,
                    cudaStream_t st);  // m <= 4
bool launch_tb_gemv_smem(const uint32_t *dP, const uint32_t *dQ, const uint32_t *dW, int ldk, int m, int n,
                         int32_t *dOut, cudaStream_t st);  // m <= 16; false when the planes do not fit in smem
cudaError_t launch_tb_gemv_pdl(const uint32_t *dP, const uint32_t *dQ, const uint32_t *dW, int ldk, int n,
                               int32_t *dOut, cudaStream_t st,
                               GemvEpilogue epi = GemvEpilogue{});  // m = 1, sm_90, 8 * ldk <= 48 KiB
void launch_i8_gemv(const int8_t *dA, int lda, const uint32_t *dW, int ldk, int m, int n, int32_t *dOut,
                    cudaStream_t st, GemvEpilogue epi = GemvEpilogue{});
// M = 1 with the epilogue fused (dispatch.cu): the kernel's name, or nullptr when no fused kernel takes the shape
// or a path is forced (the caller then runs launch_tb / launch_i8 and the epilogue kernel).
const char *launch_tb_scaled(const uint32_t *dP, const uint32_t *dQ, const uint32_t *dW, int ldk, int n,
                             const GemvEpilogue &epi, cudaStream_t st);
const char *launch_i8_scaled(const int8_t *dA, int lda, const uint32_t *dW, int ldk, int n, const GemvEpilogue &epi,
                             cudaStream_t st);
// gemm_mma.cu
void launch_row_popc(bool diff, const uint32_t *dP, const uint32_t *dQ, int ldk, int m, int *dNz, cudaStream_t st);
void launch_tb_mma_skinny(const uint32_t *dP, const uint32_t *dQ, const uint32_t *dW, int ldk, int m, int n,
                          int32_t *dOut, cudaStream_t st);  // m <= 64
void launch_tb_mma_b1(const uint32_t *dP, const uint32_t *dQ, const uint32_t *dW, int ldk, int *dNz, int m, int n,
                      int32_t *dOut, cudaStream_t st);
void launch_i8_mma_skinny(const int8_t *dA, int lda, const uint32_t *dW, int ldk, int m, int n, int32_t *dOut,
                          cudaStream_t st);  // m <= 64
void launch_i8_mma(const int8_t *dA, int lda, const uint32_t *dW, int ldk, int m, int n, int32_t *dOut,
                   cudaStream_t st);
// gemm_wgmma.cu: nullptr when no wgmma kernel can run here (the caller falls back to the mma.sync kernels).
const char *launch_tb_wgmma(int path, const uint32_t *dP, const uint32_t *dQ, const uint32_t *dW, int ldk, int *dNz,
                            int m, int n, int32_t *dOut, cudaStream_t st, bool allow16, bool *out16);
const char *launch_i8_wgmma(const int8_t *dA, int lda, const uint32_t *dW, int ldk, int m, int n, int32_t *dOut,
                            cudaStream_t st);

// Launches `kernel` with programmatic stream serialisation (PDL): it may start before the previous kernel in
// `st` has finished, and orders itself after that kernel with griddepcontrol (pdl_wait / pdl_launch_dependents).
template <class... Params, class... Args>
cudaError_t launch_pdl(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t st, Args &&...args) {
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = st;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  return cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
}

// ---------------------------------------------------------------------------------------------
// Device helpers
__device__ __forceinline__ void cp_async16(void *smem, const void *gmem) {
  const unsigned s = (unsigned)__cvta_generic_to_shared(smem);
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void mma_b1(int (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k256.row.col.s32.b1.b1.s32.and.popc {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Same MMA without `volatile`, so that the compiler may schedule it (it has no side effects).
__device__ __forceinline__ void mma_b1_nv(int (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k256.row.col.s32.b1.b1.s32.and.popc {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void mma_s8(int (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// 4 weight bits -> 4 bytes of +1 (bit set) / -1 (bit clear), byte i <- bit i.
__device__ __forceinline__ uint32_t nibble_pm1(uint32_t nib) {
  const uint32_t m = (nib * 0x00204081u) & 0x01010101u;
  return ((m ^ 0x01010101u) * 0xFFu) | m;
}

__device__ __forceinline__ int popsel(uint32_t w, uint32_t p, uint32_t q) { return __popc((w & p) | (~w & q)); }

// Output columns c, c + 1 of a row: one 8-byte store when both exist and the row is 8-byte aligned (vec),
// else the columns below N one by one.
__device__ __forceinline__ void store_pair(int32_t *orow, int c, int N, bool vec, int v0, int v1) {
  if (vec && c + 1 < N) {
    *reinterpret_cast<int2 *>(orow + c) = make_int2(v0, v1);
  } else {
    if (c < N) orow[c] = v0;
    if (c + 1 < N) orow[c + 1] = v1;
  }
}

// Programmatic dependent launch (PDL, sm_90). A kernel launched with programmatic stream serialization may
// start before the previous kernel in the stream has finished: pdl_wait() blocks until that kernel has
// completed and its writes are visible; pdl_launch_dependents() lets the next such kernel launch. Both are
// no-ops for a normal launch. Data a previous kernel may have written is read after pdl_wait() with
// L2-coherent loads (__ldcg), never from a possibly stale L1 line.
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

// ---------------------------------------------------------------------------------------------
// Hopper warpgroup MMA wrappers (sm_90a code only: gemm_wgmma.cu, and the bench's wgmma_peak).
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define BWQ_HAS_WGMMA 1
#endif

#ifdef BWQ_HAS_WGMMA
__device__ __forceinline__ uint64_t wgmma_desc(uint32_t smem_addr, uint32_t lbo, uint32_t sbo) {
  // bits 0-13: address >> 4, 16-29: leading-dimension byte offset >> 4, 32-45: stride byte offset >> 4,
  // 62-63: swizzle mode (0 = none).
  return (uint64_t)((smem_addr & 0x3FFFF) >> 4) | ((uint64_t)((lbo >> 4) & 0x3FFF) << 16) |
         ((uint64_t)((sbo >> 4) & 0x3FFF) << 32);
}

// The 64 accumulator registers of an m64n128 s32 wgmma: the PTX operand list %0 .. %63 and the asm
// operands bound to d[0..63] (read and written).
#define WGMMA_D64_REGS                                                                \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15,"            \
  " %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31,"  \
  " %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47,"  \
  " %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63},"
#define WGMMA_D64_OPS(d)                                                                                          \
  "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3]), "+r"(d[4]), "+r"(d[5]), "+r"(d[6]), "+r"(d[7]), "+r"(d[8]),     \
      "+r"(d[9]), "+r"(d[10]), "+r"(d[11]), "+r"(d[12]), "+r"(d[13]), "+r"(d[14]), "+r"(d[15]), "+r"(d[16]),      \
      "+r"(d[17]), "+r"(d[18]), "+r"(d[19]), "+r"(d[20]), "+r"(d[21]), "+r"(d[22]), "+r"(d[23]), "+r"(d[24]),     \
      "+r"(d[25]), "+r"(d[26]), "+r"(d[27]), "+r"(d[28]), "+r"(d[29]), "+r"(d[30]), "+r"(d[31]), "+r"(d[32]),     \
      "+r"(d[33]), "+r"(d[34]), "+r"(d[35]), "+r"(d[36]), "+r"(d[37]), "+r"(d[38]), "+r"(d[39]), "+r"(d[40]),     \
      "+r"(d[41]), "+r"(d[42]), "+r"(d[43]), "+r"(d[44]), "+r"(d[45]), "+r"(d[46]), "+r"(d[47]), "+r"(d[48]),     \
      "+r"(d[49]), "+r"(d[50]), "+r"(d[51]), "+r"(d[52]), "+r"(d[53]), "+r"(d[54]), "+r"(d[55]), "+r"(d[56]),     \
      "+r"(d[57]), "+r"(d[58]), "+r"(d[59]), "+r"(d[60]), "+r"(d[61]), "+r"(d[62]), "+r"(d[63])

__device__ __forceinline__ void wgmma_b1_m64n128(int (&d)[64], uint64_t da, uint64_t db) {
  asm volatile(
      "{\n"
      "wgmma.mma_async.sync.aligned.m64n128k256.s32.b1.b1.and.popc "
      WGMMA_D64_REGS
      " %64, %65, 1;\n"
      "}\n"
      : WGMMA_D64_OPS(d)
      : "l"(da), "l"(db));
}

// m64n128k32 s8 x s8 -> s32, A from registers (a0..a3: rows g / g + 8 of the warp's 16, bytes 4t..4t+3 and
// 16+4t..16+4t+3 of the 32-byte K step), B from shared memory (descriptor).
__device__ __forceinline__ void wgmma_s8_m64n128_ra(int (&d)[64], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                                    uint64_t db) {
  asm volatile(
      "{\n"
      "wgmma.mma_async.sync.aligned.m64n128k32.s32.s8.s8 "
      WGMMA_D64_REGS
      " {%64, %65, %66, %67}, %68, 1;\n"
      "}\n"
      : WGMMA_D64_OPS(d)
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "l"(db));
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
#endif

}  // namespace bwq_gemm

#endif
