// GPU benchmark entry points: bwq_cuda_bench (our kernel against cuBLAS FP16 on random device-resident operands,
// stream and CUDA-graph timing, sampled exact check) and bwq_cuda_mma_peak (raw tensor-core rates); cuBLAS is
// opened with dlopen, also for the runtime's float GEMMs (bwq_cuda::cublas_api).
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <chrono>
#include <random>
#include <vector>

#include "common.cuh"

namespace bwq_gemm {
namespace {

// Tensor-core peak of the b1 wgmma: a chain of m64n128k256 on two accumulators, operands in shared memory.
__global__ void __launch_bounds__(256, 1) wgmma_peak(int iters, int *sink) {
#ifdef BWQ_HAS_WGMMA
  __shared__ __align__(1024) unsigned char s[3 * 128 * 32];
  for (int i = threadIdx.x; i < 3 * 128 * 32; i += 256) s[i] = (unsigned char)(i * 37 + 11);
  fence_proxy_async();
  __syncthreads();
  const uint32_t b = (uint32_t)__cvta_generic_to_shared(s), wg = threadIdx.x >> 7;
  const uint64_t da = wgmma_desc(b + wg * 64 * 32, 128, 256), db = wgmma_desc(b + 2 * 64 * 32, 128, 256);
  int d0[64], d1[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) d0[i] = d1[i] = 0;
  for (int it = 0; it < iters; ++it) {
    wgmma_fence();
    wgmma_b1_m64n128(d0, da, db);
    wgmma_b1_m64n128(d1, da, db);
    wgmma_commit();
    wgmma_wait<1>();
  }
  wgmma_wait<0>();
  int acc = 0;
#pragma unroll
  for (int i = 0; i < 64; ++i) acc += d0[i] + d1[i];
  if (acc == 0x12345678) sink[0] = acc;
#endif
}

// ---------------------------------------------------------------------------------------------
// Tensor-core peak probe: independent mma.sync chains, no memory traffic.
template <int KIND>
__global__ void __launch_bounds__(256) mma_peak(int iters, int *sink) {
  uint32_t a[4] = {0x9e3779b9u ^ threadIdx.x, 0x7f4a7c15u, 0x85ebca6bu, 0xc2b2ae35u};
  int d[8][4];
#pragma unroll
  for (int j = 0; j < 8; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) d[j][e] = 0;
  for (int i = 0; i < iters; ++i) {
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      if (KIND == 0) mma_b1(d[j], a, 0x0f0f0f0fu + j, 0xf0f0f0f0u);
      else mma_s8(d[j], a, 0x01010101u + j, 0xff01ff01u);
    }
  }
  int s = 0;
#pragma unroll
  for (int j = 0; j < 8; ++j) s += d[j][0] + d[j][1] + d[j][2] + d[j][3];
  if (s == 0x12345678) sink[0] = s;
}

// Mean time per call of `reps` calls of `launch` captured into one CUDA graph (one graph launch between two
// events, after one untimed replay): the per-launch CPU and driver overhead of stream launches is gone, so
// the time is closer to what the kernels themselves take. 0 when capture is not possible.
template <class F>
double graph_time(cudaStream_t st, int reps, F &&launch, cudaEvent_t e0, cudaEvent_t e1) {
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  float ms = 0;
  double result = 0;
  if (cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  for (int i = 0; i < reps; ++i) launch();
  if (cudaStreamEndCapture(st, &graph) == cudaSuccess && graph &&
      cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess && cudaGraphLaunch(exec, st) == cudaSuccess &&
      cudaEventRecord(e0, st) == cudaSuccess && cudaGraphLaunch(exec, st) == cudaSuccess &&
      cudaEventRecord(e1, st) == cudaSuccess && cudaEventSynchronize(e1) == cudaSuccess &&
      cudaEventElapsedTime(&ms, e0, e1) == cudaSuccess)
    result = ms / reps;
  if (exec) cudaGraphExecDestroy(exec);
  if (graph) cudaGraphDestroy(graph);
  cudaGetLastError();
  return result;
}

// ---------------------------------------------------------------------------------------------
// cuBLAS through dlopen (no link-time dependency; the toolkit headers are not needed either).
typedef int (*cublasCreate_t)(void **);
typedef int (*cublasDestroy_t)(void *);
typedef int (*cublasSetStream_t)(void *, cudaStream_t);
typedef int (*cublasGemmEx_t)(void *, int, int, int, int, int, const void *, const void *, int, int, const void *, int,
                              int, const void *, void *, int, int, int, int);
typedef int (*cublasGemmStridedBatchedEx_t)(void *, int, int, int, int, int, const void *, const void *, int, int,
                                            long long, const void *, int, int, long long, const void *, void *, int,
                                            int, long long, int, int, int);
struct Cublas {
  bool tried = false, ok = false;
  cublasCreate_t create = nullptr;
  cublasDestroy_t destroy = nullptr;
  cublasSetStream_t set_stream = nullptr;
  cublasGemmEx_t gemm_ex = nullptr;
  cublasGemmStridedBatchedEx_t gemm_strided_batched_ex = nullptr;
  void *handle = nullptr;
};
Cublas g_cublas;

bool load_cublas() {
  if (g_cublas.tried) return g_cublas.ok;
  g_cublas.tried = true;
  const char *names[] = {getenv("BWQ_CUBLAS"), "libcublas.so.13", "libcublas.so.12", "libcublas.so",
                         "/usr/local/cuda/lib64/libcublas.so"};
  void *h = nullptr;
  for (const char *nm : names)  // (an empty BWQ_CUBLAS is skipped: dlopen("") would return the program itself)
    if (nm && *nm && (h = dlopen(nm, RTLD_NOW | RTLD_LOCAL))) break;
  if (!h) return false;
  g_cublas.create = (cublasCreate_t)dlsym(h, "cublasCreate_v2");
  g_cublas.destroy = (cublasDestroy_t)dlsym(h, "cublasDestroy_v2");
  g_cublas.set_stream = (cublasSetStream_t)dlsym(h, "cublasSetStream_v2");
  g_cublas.gemm_ex = (cublasGemmEx_t)dlsym(h, "cublasGemmEx");
  g_cublas.gemm_strided_batched_ex = (cublasGemmStridedBatchedEx_t)dlsym(h, "cublasGemmStridedBatchedEx");
  if (!g_cublas.create || !g_cublas.gemm_ex || !g_cublas.set_stream) return false;
  if (g_cublas.create(&g_cublas.handle) != 0) return false;
  g_cublas.ok = true;
  return true;
}

__global__ void fill_half_random(unsigned short *x, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    uint32_t h = (uint32_t)i * 2654435761u ^ seed;
    h ^= h >> 15;
    h *= 0x2c1b3c6du;
    h ^= h >> 12;
    // fp16 in [-1, 1): sign | exponent 14 (0.5..1) scaled by mantissa
    x[i] = (unsigned short)(((h & 1u) << 15) | (14u << 10) | ((h >> 1) & 0x3FFu));
  }
}

}  // namespace
}  // namespace bwq_gemm

using namespace bwq_gemm;

extern "C" {

int bwq_cuda_mma_peak(int kind, double *tops) {
  if (!tops || kind < 0 || kind > 2) return BWQ_EINVAL;
  int rc = ensure_init();
  if (rc) return rc;
  if (kind == 2 && !g_has_wgmma) {
    snprintf(g_err, sizeof g_err, "wgmma needs an sm_90 device and sm_90a code in libbwq_cuda.so");
    return BWQ_ENODEV;
  }
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  int *sink;
  CK(cudaMalloc(&sink, 4));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  const int blocks = prop.multiProcessorCount * (kind == 2 ? 1 : 4), iters = 4096;
  auto launch = [&]() {
    if (kind == 0) mma_peak<0><<<blocks, 256>>>(iters, sink);
    else if (kind == 1) mma_peak<1><<<blocks, 256>>>(iters, sink);
    else wgmma_peak<<<blocks, 256>>>(iters, sink);
  };
  launch();
  CK(cudaEventRecord(e0));
  launch();
  CK(cudaEventRecord(e1));
  CK(cudaEventSynchronize(e1));
  CK(cudaGetLastError());
  float ms = 0;
  CK(cudaEventElapsedTime(&ms, e0, e1));
  // ops = 2 x multiply-adds; mma.sync: 8 warps x 8 chains per block; wgmma: 2 warpgroups x 2 per iteration.
  const double ops = kind == 2 ? (double)blocks * 2 * 2 * iters * (2.0 * 64 * 128 * 256)
                               : (double)blocks * 8 * iters * 8 * (kind == 0 ? 2.0 * 16 * 8 * 256 : 2.0 * 16 * 8 * 32);
  *tops = ops / (ms * 1e-3) / 1e12;
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cudaFree(sink);
  return BWQ_OK;
}

int bwq_cuda_bench(int kind, int m, int n, int k, int warmup, int reps, bwq_bench_result *res) {
  if (!res || m <= 0 || n <= 0 || k <= 0 || reps <= 0 || warmup < 0) return BWQ_EINVAL;
  const bool cold = kind & BWQ_BENCH_COLD_WEIGHTS;
  kind &= ~BWQ_BENCH_COLD_WEIGHTS;
  if (kind != BWQ_BENCH_TERNARY_BINARY && kind != BWQ_BENCH_INT8_BINARY) return BWQ_EINVAL;
  memset(res, 0, sizeof *res);
  int rc = ensure_init();
  if (rc) return rc;
  std::lock_guard<std::mutex> lk(g_ws.mu);
  cudaStream_t st = g_ws.stream;
  const int kw = kw_of(k), ldk = round_up(kw, 32), lda = ldk * 32, mp = round_up(m, 128), np = round_up(n, 128);

  // Host operands (random), kept for the sampled reference check.
  std::mt19937_64 rng(1234567u + (uint64_t)m * 31 + n * 7 + k + kind);
  std::vector<uint32_t> hP((size_t)m * kw, 0), hQ((size_t)m * kw, 0), hW((size_t)n * kw);
  std::vector<int8_t> hA;
  for (auto &w : hW) w = (uint32_t)rng();
  for (int r = 0; r < n; ++r) hW[(size_t)r * kw + kw - 1] &= last_word_mask(k);
  if (kind == BWQ_BENCH_TERNARY_BINARY) {
    for (size_t i = 0; i < hP.size(); ++i) {
      const uint32_t nzmask = (uint32_t)rng() | (uint32_t)rng();  // ~75% non-zero
      const uint32_t sign = (uint32_t)rng();
      hP[i] = nzmask & sign;
      hQ[i] = nzmask & ~sign;
    }
    for (int r = 0; r < m; ++r) {
      hP[(size_t)r * kw + kw - 1] &= last_word_mask(k);
      hQ[(size_t)r * kw + kw - 1] &= last_word_mask(k);
    }
  } else {
    hA.resize((size_t)m * k);
    for (auto &v : hA) v = (int8_t)((int)(rng() % 64) - 32);
  }

  void *dP = nullptr, *dQ = nullptr, *dW = nullptr, *dO = nullptr, *dO2 = nullptr, *dNz = nullptr, *dA = nullptr;
  void *hX = nullptr, *hB = nullptr, *hC = nullptr;
  cudaEvent_t e0 = nullptr, e1 = nullptr;
  const char *kname = "";
  bool out16 = false;  // the ternary kernel stored 16-bit sums
  // Cold weights: the calls rotate over copies of the weights (ours: identical copies) that together take
  // twice the L2, so every call streams its weights from memory, as a model's layers do in decoding.
  const size_t wsize = (size_t)np * ldk * 4, l2 = (size_t)std::max(g_l2_bytes, 1);
  auto copies_of = [&](size_t bytes) { return cold ? (int)std::min<size_t>(256, (2 * l2 + bytes - 1) / bytes) : 1; };
  const int copies = copies_of(wsize), copies_fp16 = copies_of((size_t)n * k * 2);
  int call = 0;
  int result = BWQ_OK;
  float ms = 0;
  auto fail = [&](cudaError_t e, const char *what) {
    snprintf(g_err, sizeof g_err, "%s: %s", what, cudaGetErrorString(e));
    result = BWQ_ECUDA;
  };
#define BCK(call)                  \
  do {                             \
    cudaError_t e_ = (call);       \
    if (e_ != cudaSuccess) {       \
      fail(e_, #call);             \
      goto cleanup;                \
    }                              \
  } while (0)
  BCK(cudaEventCreate(&e0));
  BCK(cudaEventCreate(&e1));
  BCK(cudaMalloc(&dW, wsize * copies));
  BCK(cudaMemsetAsync(dW, 0, wsize, st));
  BCK(cudaMemcpy2DAsync(dW, ldk * 4, hW.data(), kw * 4, kw * 4, n, cudaMemcpyHostToDevice, st));
  for (int c = 1; c < copies; ++c)
    BCK(cudaMemcpyAsync((char *)dW + c * wsize, dW, wsize, cudaMemcpyDeviceToDevice, st));
  BCK(cudaMalloc(&dO, (size_t)m * n * 4));
  if (kind == BWQ_BENCH_TERNARY_BINARY) {
    BCK(cudaMalloc(&dP, (size_t)mp * ldk * 4));
    BCK(cudaMalloc(&dQ, (size_t)mp * ldk * 4));
    BCK(cudaMalloc(&dNz, (size_t)mp * 4));
    BCK(cudaMemsetAsync(dP, 0, (size_t)mp * ldk * 4, st));
    BCK(cudaMemsetAsync(dQ, 0, (size_t)mp * ldk * 4, st));
    BCK(cudaMemcpy2DAsync(dP, ldk * 4, hP.data(), kw * 4, kw * 4, m, cudaMemcpyHostToDevice, st));
    BCK(cudaMemcpy2DAsync(dQ, ldk * 4, hQ.data(), kw * 4, kw * 4, m, cudaMemcpyHostToDevice, st));
  } else {
    BCK(cudaMalloc(&dA, (size_t)mp * lda));
    BCK(cudaMemsetAsync(dA, 0, (size_t)mp * lda, st));
    BCK(cudaMemcpy2DAsync(dA, lda, hA.data(), k, k, m, cudaMemcpyHostToDevice, st));
  }
  {
    auto launch = [&]() {
      const uint32_t *w = (const uint32_t *)((const char *)dW + (size_t)(call++ % copies) * wsize);
      if (kind == BWQ_BENCH_TERNARY_BINARY)
        kname = launch_tb((const uint32_t *)dP, (const uint32_t *)dQ, w, ldk, (int *)dNz, m, n, (int32_t *)dO, st,
                          &out16);
      else
        kname = launch_i8((const int8_t *)dA, lda, w, ldk, m, n, (int32_t *)dO, st);
    };
    for (int i = 0; i < warmup; ++i) launch();
    BCK(cudaGetLastError());
    BCK(cudaEventRecord(e0, st));
    const auto host0 = std::chrono::steady_clock::now();
    for (int i = 0; i < reps; ++i) launch();
    const double host_us =
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - host0).count() / reps;
    BCK(cudaEventRecord(e1, st));
    BCK(cudaEventSynchronize(e1));
    BCK(cudaGetLastError());
    if (getenv("BWQ_CUDA_VERBOSE")) fprintf(stderr, "bwq bench: host issue time %.2f us per call\n", host_us);
    BCK(cudaEventElapsedTime(&ms, e0, e1));
    res->ms_ours = ms / reps;
    snprintf(res->kernel, sizeof res->kernel, "%s", kname);
    res->ms_ours_graph = graph_time(st, reps, launch, e0, e1);
    if (kind == BWQ_BENCH_TERNARY_BINARY) {
      // Chained calls on different data sharing the row-sum buffer, as a model's layers do: (P, Q) -> O and
      // (Q, P) -> O2 (= -O) back to back, so a programmatic dependent launch that read or wrote too early
      // shows up as mismatches below.
      BCK(cudaMalloc(&dO2, (size_t)m * n * 4));
      for (int i = 0; i < 8; ++i) {
        launch_tb((const uint32_t *)dP, (const uint32_t *)dQ, (const uint32_t *)dW, ldk, (int *)dNz, m, n,
                  (int32_t *)dO, st, &out16);
        launch_tb((const uint32_t *)dQ, (const uint32_t *)dP, (const uint32_t *)dW, ldk, (int *)dNz, m, n,
                  (int32_t *)dO2, st, &out16);
      }
      BCK(cudaGetLastError());
    }
  }
  {
    // Sampled exact check against a host reference (and of the chained swapped-operand call); 16-bit
    // output is widened here.
    const size_t esz = out16 ? 2 : 4;
    std::vector<int32_t> hO((size_t)m * n), hO2;
    std::vector<int16_t> h16(out16 ? (size_t)m * n : 0), h16b(out16 && dO2 ? (size_t)m * n : 0);
    BCK(cudaMemcpyAsync(out16 ? (void *)h16.data() : (void *)hO.data(), dO, (size_t)m * n * esz,
                        cudaMemcpyDeviceToHost, st));
    if (dO2) {
      hO2.resize((size_t)m * n);
      BCK(cudaMemcpyAsync(out16 ? (void *)h16b.data() : (void *)hO2.data(), dO2, (size_t)m * n * esz,
                          cudaMemcpyDeviceToHost, st));
    }
    BCK(cudaStreamSynchronize(st));
    if (out16) {
      std::copy(h16.begin(), h16.end(), hO.begin());
      std::copy(h16b.begin(), h16b.end(), hO2.begin());
    }
    int bad = 0;
    for (int s = 0; s < 256; ++s) {
      const int i = (int)(rng() % m), j = (int)(rng() % n);
      long ref = 0;
      for (int t = 0; t < k; ++t) {
        const int b = (hW[(size_t)j * kw + t / 32] >> (t % 32)) & 1 ? 1 : -1;
        int a;
        if (kind == BWQ_BENCH_TERNARY_BINARY)
          a = ((hP[(size_t)i * kw + t / 32] >> (t % 32)) & 1) - (int)((hQ[(size_t)i * kw + t / 32] >> (t % 32)) & 1);
        else
          a = hA[(size_t)i * k + t];
        ref += (long)a * b;
      }
      if (ref != hO[(size_t)i * n + j]) ++bad;
      if (dO2 && -ref != hO2[(size_t)i * n + j]) ++bad;
    }
    res->checked = 1;
    res->mismatches = bad;
  }
  res->tops_ours = 2.0 * m * n * k / (res->ms_ours * 1e-3) / 1e12;
  if (!load_cublas()) {
    snprintf(g_err, sizeof g_err, "cuBLAS not found (set BWQ_CUBLAS to libcublas.so path)");
    result = BWQ_ECUBLAS;
    goto cleanup;
  }
  {
    BCK(cudaMalloc(&hX, (size_t)m * k * 2));  // X [M,K] fp16
    BCK(cudaMalloc(&hB, (size_t)n * k * 2 * copies_fp16));  // W [N,K] fp16 (copies of it for cold weights)
    BCK(cudaMalloc(&hC, (size_t)m * n * 2));                 // Y [M,N] fp16
    fill_half_random<<<1024, 256, 0, st>>>((unsigned short *)hX, (size_t)m * k, 17u);
    fill_half_random<<<1024, 256, 0, st>>>((unsigned short *)hB, (size_t)n * k * copies_fp16, 91u);
    BCK(cudaGetLastError());
    g_cublas.set_stream(g_cublas.handle, st);
    const float alpha = 1.0f, beta = 0.0f;
    // Row-major Y[M,N] = X[M,K] * W[N,K]^T  ==  column-major Y^T[N,M] = W (op T) * X^T (op N).
    // CUBLAS_OP_T = 1, CUBLAS_OP_N = 0, CUDA_R_16F = 2, CUBLAS_COMPUTE_32F = 68, CUBLAS_GEMM_DEFAULT = -1.
    call = 0;
    auto gemm = [&]() {
      const void *w = (const char *)hB + (size_t)(call++ % copies_fp16) * n * k * 2;
      return g_cublas.gemm_ex(g_cublas.handle, 1, 0, n, m, k, &alpha, w, 2, k, hX, 2, k, &beta, hC, 2, n, 68, -1);
    };
    for (int i = 0; i < warmup; ++i)
      if (gemm() != 0) {
        snprintf(g_err, sizeof g_err, "cublasGemmEx failed");
        result = BWQ_ECUBLAS;
        goto cleanup;
      }
    BCK(cudaEventRecord(e0, st));
    for (int i = 0; i < reps; ++i) gemm();
    BCK(cudaEventRecord(e1, st));
    BCK(cudaEventSynchronize(e1));
    BCK(cudaEventElapsedTime(&ms, e0, e1));
    res->ms_cublas = ms / reps;
    res->tops_cublas = 2.0 * m * n * k / (res->ms_cublas * 1e-3) / 1e12;
    res->ms_cublas_graph = graph_time(st, reps, gemm, e0, e1);
  }
cleanup:
#undef BCK
  if (e0) cudaEventDestroy(e0);
  if (e1) cudaEventDestroy(e1);
  void *bufs[] = {dP, dQ, dW, dO, dO2, dNz, dA, hX, hB, hC};
  for (void *b : bufs)
    if (b) cudaFree(b);
  return result;
}

}  // extern "C"

namespace bwq_cuda {

bool cublas_api(CublasApi *api) {
  static std::mutex mu;
  std::lock_guard<std::mutex> lk(mu);
  if (!load_cublas()) return false;
  api->create = g_cublas.create;
  api->destroy = g_cublas.destroy;
  api->set_stream = g_cublas.set_stream;
  api->gemm_ex = g_cublas.gemm_ex;
  api->gemm_strided_batched_ex = g_cublas.gemm_strided_batched_ex;
  return api->destroy != nullptr;
}

}  // namespace bwq_cuda
