// Ternary x binary kernel variants that lost their benchmarks and left libbwq_cuda.so (they were paths 6 - 9 of
// bwq_cuda_set_paths, which now mean the automatic choice), kept here to be rerun against the library's kernels:
//   6  tb_mma4<2, 32, 2, false, 2>  the tiled mma.sync kernel v4 with 64x128 blocks (4 warps of 32x64, 3 blocks/SM)
//   7  tb_mma4<2, 32, 2, true, 4>   v4 with nz accumulated in the kernel from the A fragments (K < 2^18)
//   8  tb_mma4<2, 16, 4, true, 4>   path 7 with 4 x 512-bit K stages (K < 2^18)
//   9  tb_gemv_m1<4, 3>             M = 1 GEMV, 4 columns per warp, warp sums by a transposing shuffle butterfly
// Their numbers: docs/PERFORMANCE.md, "Earlier: the mma.sync tiled kernel (v3 → v4)" (paths 6 - 8, raw outputs
// native/test/results/h100-gpu-bench-variants-run{1,2,3,4}.txt) and "M = 1 on Hopper" (path 9: at the launch floor
// like tb_gemv; its butterfly against redux.sync). tb_mma4 is the library's template (native/ops/gemm/gemm_mma.cu;
// its instance <2, 32, 2, false, 4> is path 2): this file includes the library's sources into one translation unit.
// Build and run on a GPU (sm_90a code; -arch=sm_80 etc. elsewhere):
//   nvcc -O3 -std=c++17 -arch=sm_90a -o tb_gemm_variants native/dev/tb_gemm_variants.cu && ./tb_gemm_variants
// Each variant is checked exactly against the library's automatic choice (itself against sampled host sums) and
// timed next to path 2 (mean of 50 back-to-back calls after 5 warm-up calls, cudaEvent timing).
// With BWQ_DEV_NO_MAIN defined it only adds its kernels (native/dev/gemv_m1_probe.cu uses gemv_reduce_store).
#include "../ops/gemm/bench.cu"
#include "../ops/gemm/dispatch.cu"
#include "../ops/gemm/gemm_mma.cu"
#include "../ops/gemm/gemm_wgmma.cu"
#include "../ops/gemm/gemv.cu"
#include "../ops/gemm/host.cu"

namespace bwq_gemm {
namespace {

// Sums each of the R per-lane partials over the warp and stores column n0 + r (< N): a transposing
// butterfly (after the step with offset o, lanes with bit o set keep the upper half), R/2 + R/4 + ... +
// log2(32/R) shuffles instead of 5R.
template <int R>
__device__ __forceinline__ void gemv_reduce_store(int (&v)[R], int lane, int n0, int N, int32_t *__restrict__ out) {
  int o = 16;
#pragma unroll
  for (int s = R / 2; s >= 1; s >>= 1) {
    const bool hi = lane & o;
#pragma unroll
    for (int j = 0; j < s; ++j) {
      const int send = hi ? v[j] : v[j + s], keep = hi ? v[j + s] : v[j];
      v[j] = keep + __shfl_xor_sync(0xffffffffu, send, o);
    }
    o >>= 1;
  }
  for (; o >= 1; o >>= 1) v[0] += __shfl_xor_sync(0xffffffffu, v[0], o);
  constexpr int LOGR = R == 1 ? 0 : R == 2 ? 1 : R == 4 ? 2 : 3;
  if ((lane & ((32 >> LOGR) - 1)) == 0) {
    const int n = n0 + (lane >> (5 - LOGR));
    if (n < N) out[n] = v[0];
  }
}

// ---------------------------------------------------------------------------------------------
// Ternary x binary GEMV for M = 1: a warp computes R consecutive output columns, K split over the
// lanes; each lane loads its activation words (plus, minus) once and reuses them for the R weight
// rows, all loads of a CH x 32-chunk batch are issued before the arithmetic, and the R partial sums
// are reduced with a transposing butterfly (R/2 + R/4 + ... + log2(32/R) shuffles instead of 5R).
// Per lane and 128 weight bits: 4 LOP3 + 4 POPC for each row, plus 4 (OR + POPC) for nz, shared.
template <int R, int CH>
__global__ void __launch_bounds__(256) tb_gemv_m1(const uint32_t *__restrict__ P, const uint32_t *__restrict__ Q,
                                                  const uint32_t *__restrict__ W, int ldk, int N,
                                                  int32_t *__restrict__ out) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int n0 = (blockIdx.x * 8 + warp) * R;
  if (n0 >= N) return;
  const int ld4 = ldk / 4;
  const uint4 *P4 = reinterpret_cast<const uint4 *>(P), *Q4 = reinterpret_cast<const uint4 *>(Q);
  const uint4 *W4 = reinterpret_cast<const uint4 *>(W + (size_t)n0 * ldk);  // rows n0.. (padded rows are zero)
  const uint4 z4 = make_uint4(0, 0, 0, 0);
  int v[R];
#pragma unroll
  for (int r = 0; r < R; ++r) v[r] = 0;
  for (int base = 0; base < ld4; base += 32 * CH) {
    uint4 p[CH], q[CH], w[CH][R];
#pragma unroll
    for (int c = 0; c < CH; ++c) {
      const int i = base + c * 32 + lane;
      const bool ok = i < ld4;
      p[c] = ok ? __ldg(P4 + i) : z4;
      q[c] = ok ? __ldg(Q4 + i) : z4;
#pragma unroll
      for (int r = 0; r < R; ++r) w[c][r] = ok ? __ldg(W4 + (size_t)r * ld4 + i) : z4;
    }
#pragma unroll
    for (int c = 0; c < CH; ++c) gemv_chunk<R>(p[c], q[c], w[c], v);
  }
  gemv_reduce_store<R>(v, lane, n0, N, out);
}

}  // namespace

// Former paths 6 - 9 of launch_tb; nullptr when the variant cannot take the shape (path 9: M > 1; paths 7 and 8:
// K >= 2^18, where the 16-bit nz halves of the fused variants could overflow).
const char *launch_tb_variant(int path, const uint32_t *dP, const uint32_t *dQ, const uint32_t *dW, int ldk, int *dNz,
                              int m, int n, int32_t *dOut, cudaStream_t st) {
  if (path == 9) {
    if (m != 1) return nullptr;
    tb_gemv_m1<4, 3><<<(n + 31) / 32, 256, 0, st>>>(dP, dQ, dW, ldk, n, dOut);
    return "tb_gemv_r4";
  }
  static bool attr = false;
  if (!attr) {
    cudaFuncSetAttribute(tb_mma4<2, 32, 2, true, 4>, cudaFuncAttributeMaxDynamicSharedMemorySize, TB4_SMEM(2, 32, 2, 4));
    cudaFuncSetAttribute(tb_mma4<2, 16, 4, true, 4>, cudaFuncAttributeMaxDynamicSharedMemorySize, TB4_SMEM(2, 16, 4, 4));
    cudaFuncSetAttribute(tb_mma4<2, 32, 2, false, 2>, cudaFuncAttributeMaxDynamicSharedMemorySize, TB4_SMEM(2, 32, 2, 2));
    attr = true;
  }
  const dim3 grid((n + 127) / 128, (m + 127) / 128);
  if ((path == 7 || path == 8) && ldk >= 8192) return nullptr;
  if (path == 7) {
    tb_mma4<2, 32, 2, true, 4><<<grid, 128, TB4_SMEM(2, 32, 2, 4), st>>>(dP, dQ, dW, ldk, dNz, m, n, dOut, n);
    return "tb_mma_b1_v4_fusednz";
  }
  if (path == 8) {
    tb_mma4<2, 16, 4, true, 4><<<grid, 128, TB4_SMEM(2, 16, 4, 4), st>>>(dP, dQ, dW, ldk, dNz, m, n, dOut, n);
    return "tb_mma_b1_v4_k16s4";
  }
  if (path == 6) {  // 64x128 blocks of 4 warps of 32x64, 3 blocks per SM
    launch_row_popc(false, dP, dQ, ldk, m, dNz, st);
    const dim3 grid64((n + 127) / 128, (m + 63) / 64);
    tb_mma4<2, 32, 2, false, 2><<<grid64, 128, TB4_SMEM(2, 32, 2, 2), st>>>(dP, dQ, dW, ldk, dNz, m, n, dOut, n);
    return "tb_mma_b1_v4_64x128";
  }
  return nullptr;
}

}  // namespace bwq_gemm

#ifndef BWQ_DEV_NO_MAIN
#include <random>
#include <vector>

int main() {
  using namespace bwq_gemm;
  char msg[256];
  if (bwq_cuda_init(msg, sizeof msg) != BWQ_OK) {
    printf("no GPU: %s\n", msg);
    return 1;
  }
  printf("%s\n", msg);
  struct Shape {
    int m, n, k;
  };
  const Shape shapes[] = {{1, 4096, 4096}, {1, 300, 1000}, {130, 257, 4136},
                          {2048, 4096, 4096}, {2048, 11008, 4096}, {2048, 4096, 11008}};
  cudaStream_t st;
  cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking);
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  std::mt19937 rng(12345);
  int failures = 0;
  for (const Shape &s : shapes) {
    const int kw = kw_of(s.k), ldk = round_up(kw, 32), mp = round_up(s.m, 128), np = round_up(s.n, 128);
    std::vector<uint32_t> hP((size_t)mp * ldk, 0), hQ((size_t)mp * ldk, 0), hW((size_t)np * ldk, 0);
    for (int r = 0; r < s.m; ++r)
      for (int i = 0; i < kw; ++i) {
        const uint32_t mask = i == kw - 1 ? last_word_mask(s.k) : 0xFFFFFFFFu;
        const uint32_t nz = (rng() | rng()) & mask, sign = rng();  // about 3/4 non-zero
        hP[(size_t)r * ldk + i] = nz & sign;
        hQ[(size_t)r * ldk + i] = nz & ~sign;
      }
    for (int r = 0; r < s.n; ++r)
      for (int i = 0; i < kw; ++i) hW[(size_t)r * ldk + i] = rng() & (i == kw - 1 ? last_word_mask(s.k) : 0xFFFFFFFFu);
    uint32_t *dP, *dQ, *dW;
    int *dNz;
    int32_t *dRef, *dOut;
    const size_t out_bytes = (size_t)s.m * s.n * 4;
    cudaMalloc(&dP, hP.size() * 4);
    cudaMalloc(&dQ, hQ.size() * 4);
    cudaMalloc(&dW, hW.size() * 4);
    cudaMalloc(&dNz, (size_t)mp * 4);
    cudaMalloc(&dRef, out_bytes);
    cudaMalloc(&dOut, out_bytes);
    cudaMemcpy(dP, hP.data(), hP.size() * 4, cudaMemcpyHostToDevice);
    cudaMemcpy(dQ, hQ.data(), hQ.size() * 4, cudaMemcpyHostToDevice);
    cudaMemcpy(dW, hW.data(), hW.size() * 4, cudaMemcpyHostToDevice);
    bwq_cuda_set_paths(-1, -1);
    const char *auto_name = launch_tb(dP, dQ, dW, ldk, dNz, s.m, s.n, dRef, st);  // int32 output
    std::vector<int32_t> ref((size_t)s.m * s.n), out((size_t)s.m * s.n);
    cudaMemcpyAsync(ref.data(), dRef, out_bytes, cudaMemcpyDeviceToHost, st);
    cudaStreamSynchronize(st);
    int bad_ref = 0;
    for (int t = 0; t < 64; ++t) {
      const int i = (int)(rng() % s.m), j = (int)(rng() % s.n);
      int sum = 0;
      for (int w = 0; w < kw; ++w) {
        const uint32_t p = hP[(size_t)i * ldk + w], q = hQ[(size_t)i * ldk + w], x = hW[(size_t)j * ldk + w];
        sum += 2 * __builtin_popcount((x & p) | (~x & q)) - __builtin_popcount(p | q);
      }
      bad_ref += sum != ref[(size_t)i * s.n + j];
    }
    printf("-- M=%d N=%d K=%d: automatic %s, %d of 64 sampled sums wrong\n", s.m, s.n, s.k, auto_name, bad_ref);
    failures += bad_ref;
    for (int path : {2, 6, 7, 8, 9}) {
      auto launch = [&]() -> const char * {
        if (path != 2) return launch_tb_variant(path, dP, dQ, dW, ldk, dNz, s.m, s.n, dOut, st);
        bwq_cuda_set_paths(2, -1);
        const char *name = launch_tb(dP, dQ, dW, ldk, dNz, s.m, s.n, dOut, st);
        bwq_cuda_set_paths(-1, -1);
        return name;
      };
      cudaMemsetAsync(dOut, 0xFF, out_bytes, st);
      const char *name = launch();
      if (!name) continue;
      cudaMemcpyAsync(out.data(), dOut, out_bytes, cudaMemcpyDeviceToHost, st);
      const cudaError_t err = cudaStreamSynchronize(st);
      size_t bad = 0;
      for (size_t i = 0; i < out.size(); ++i) bad += out[i] != ref[i];
      for (int i = 0; i < 5; ++i) launch();
      cudaEventRecord(e0, st);
      for (int i = 0; i < 50; ++i) launch();
      cudaEventRecord(e1, st);
      cudaEventSynchronize(e1);
      float ms = 0;
      cudaEventElapsedTime(&ms, e0, e1);
      ms /= 50;
      printf("path %d %-22s %9.4f ms %7.2f TOPS  %s\n", path, name, ms, 2.0 * s.m * s.n * s.k / (ms * 1e-3) / 1e12,
             err != cudaSuccess ? cudaGetErrorString(err) : bad ? "MISMATCH" : "exact");
      failures += err != cudaSuccess || bad != 0;
    }
    cudaFree(dP);
    cudaFree(dQ);
    cudaFree(dW);
    cudaFree(dNz);
    cudaFree(dRef);
    cudaFree(dOut);
  }
  printf("%s\n", failures ? "FAILED" : "all exact");
  return failures != 0;
}
#endif
