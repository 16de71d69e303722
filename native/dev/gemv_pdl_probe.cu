// Probe: where the time of a chain of programmatic-dependent M = 1 GEMVs goes (K = N = 4096, 64 calls replayed
// from a CUDA graph). Each block stamps %globaltimer at its start, after griddepcontrol.wait, after staging the
// activations and after its stores; printed are medians over the calls of the gaps to the previous call's last
// store. The modes are the variants in docs/PERFORMANCE.md ("M = 1 on Hopper"); several are timing probes with
// wrong results. Build and run on an sm_90 GPU:
//   nvcc -O3 -std=c++17 -gencode arch=compute_90,code=sm_90 -o gemv_pdl_probe native/dev/gemv_pdl_probe.cu
// (cuobjdump -sass shows where ptxas put ACQBULK, the wait, relative to the weight loads.)
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdint.h>
#include <vector>
#include <algorithm>

__device__ __forceinline__ uint64_t gtime() { uint64_t t; asm volatile("mov.u64 %0, %globaltimer;" : "=l"(t)); return t; }
__device__ __forceinline__ void pdl_wait() { asm volatile("griddepcontrol.wait;\n" ::: "memory"); }
__device__ __forceinline__ void pdl_go() { asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory"); }
__device__ __forceinline__ int popsel(uint32_t w, uint32_t p, uint32_t q) { return __popc((w & p) | (~w & q)); }

// MODE 0: as tb_gemv_pdl<4,3> (trigger after stores); 1: trigger after the wait; 2: activations read before
// the wait (probe only); 3: no compute (stores zeros after the wait); 4: trigger at start
template <int MODE>
__global__ void __launch_bounds__(256) gemv(const uint32_t *__restrict__ P, const uint32_t *__restrict__ Q,
                                            const uint32_t *__restrict__ W, int ldk, int N, int32_t *__restrict__ out,
                                            uint64_t *stamps) {
  extern __shared__ uint4 act[];
  if (MODE == 4) pdl_go();
  uint64_t t0 = gtime();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int n0 = (blockIdx.x * 8 + warp) * 4;
  const int ld4 = ldk / 4;
  const uint4 *W4 = reinterpret_cast<const uint4 *>(W + (size_t)n0 * ldk);
  uint4 w[4];
  if (MODE == 8) {
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const uint4 *a = W4 + (size_t)r * ld4 + lane;
      asm volatile("ld.volatile.global.v4.u32 {%0, %1, %2, %3}, [%4];\n"
                   : "=r"(w[r].x), "=r"(w[r].y), "=r"(w[r].z), "=r"(w[r].w) : "l"(a) : "memory");
    }
  } else {
#pragma unroll
  for (int r = 0; r < 4; ++r) w[r] = lane < ld4 ? __ldg(W4 + (size_t)r * ld4 + lane) : make_uint4(0, 0, 0, 0);
  }
  if (MODE == 9) {  // consume the weights (a shared store) before the wait
    __shared__ uint32_t sink[8];
    uint32_t x = 0;
#pragma unroll
    for (int r = 0; r < 4; ++r) x ^= w[r].x ^ w[r].y ^ w[r].z ^ w[r].w;
    if (lane == 0) *(volatile uint32_t *)&sink[warp] = x;
  }
  const uint4 *P4 = reinterpret_cast<const uint4 *>(P), *Q4 = reinterpret_cast<const uint4 *>(Q);
  if (MODE == 2)
    for (int i = threadIdx.x; i < ld4; i += blockDim.x) act[i] = __ldcg(P4 + i), act[ld4 + i] = __ldcg(Q4 + i);
  if (MODE == 5 || MODE == 7) {  // the weights in registers before the wait
#pragma unroll
    for (int r = 0; r < 4; ++r) asm volatile("" : "+r"(w[r].x), "+r"(w[r].y), "+r"(w[r].z), "+r"(w[r].w));
  }
  if (MODE == 6) {
#pragma unroll
    for (int r = 0; r < 4; ++r) w[r] = make_uint4(n0 * 3 + r, lane * 7, r, n0);
  }
  pdl_wait();
  uint64_t t1 = gtime();
  if (MODE == 1 || MODE == 5 || MODE == 6 || MODE == 8 || MODE == 9) pdl_go();
  if (MODE != 2 && MODE != 3)
    for (int i = threadIdx.x; i < ld4; i += blockDim.x) act[i] = __ldcg(P4 + i), act[ld4 + i] = __ldcg(Q4 + i);
  __syncthreads();
  uint64_t t2 = gtime();
  int v[4] = {0, 0, 0, 0};
  if (MODE != 3 && lane < ld4) {
    const uint4 p = act[lane], q = act[ld4 + lane];
    const int nz = __popc(p.x | q.x) + __popc(p.y | q.y) + __popc(p.z | q.z) + __popc(p.w | q.w);
#pragma unroll
    for (int r = 0; r < 4; ++r)
      v[r] = 2 * (popsel(w[r].x, p.x, q.x) + popsel(w[r].y, p.y, q.y) + popsel(w[r].z, p.z, q.z) + popsel(w[r].w, p.w, q.w)) - nz;
  }
#pragma unroll
  for (int r = 0; r < 4; ++r)
    for (int o = 16; o; o >>= 1) v[r] += __shfl_xor_sync(0xffffffffu, v[r], o);
  if (lane < 4 && n0 + lane < N) out[n0 + lane] = v[lane == 0 ? 0 : lane == 1 ? 1 : lane == 2 ? 2 : 3];
  __syncthreads();
  uint64_t t3 = gtime();
  if (MODE == 0 || MODE == 2 || MODE == 3 || MODE == 7) pdl_go();
  if (threadIdx.x == 0) {
    uint64_t *s = stamps + (size_t)blockIdx.x * 4;
    s[0] = t0; s[1] = t1; s[2] = t2; s[3] = t3;
  }
}

template <int MODE>
void run(const char *name, uint32_t *P, uint32_t *Q, uint32_t *W, int32_t *out, uint64_t *stamps, cudaStream_t st) {
  const int N = 4096, ldk = 128, blocks = N / 32, calls = 64;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(blocks); cfg.blockDim = dim3(256); cfg.dynamicSmemBytes = ldk * 8; cfg.stream = st;
  cfg.attrs = attr; cfg.numAttrs = 1;
  cudaGraph_t graph; cudaGraphExec_t exec;
  cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal);
  for (int c = 0; c < calls; ++c)
    cudaLaunchKernelEx(&cfg, gemv<MODE>, (const uint32_t *)P, (const uint32_t *)Q, (const uint32_t *)W, ldk, N, out,
                       stamps + (size_t)c * blocks * 4);
  cudaStreamEndCapture(st, &graph);
  cudaGraphInstantiate(&exec, graph, 0);
  cudaEvent_t e0, e1; cudaEventCreate(&e0); cudaEventCreate(&e1);
  for (int i = 0; i < 3; ++i) cudaGraphLaunch(exec, st);
  cudaEventRecord(e0, st); cudaGraphLaunch(exec, st); cudaEventRecord(e1, st); cudaEventSynchronize(e1);
  float ms; cudaEventElapsedTime(&ms, e0, e1);
  std::vector<uint64_t> h((size_t)calls * blocks * 4);
  cudaMemcpy(h.data(), stamps, h.size() * 8, cudaMemcpyDeviceToHost);
  // per call: min start, min/max wait release, median staged, max end
  std::vector<double> gap_start, gap_release, act, work, spread, period;
  for (int c = 1; c < calls; ++c) {
    uint64_t pend = 0, st0 = ~0ull, rel = ~0ull, relmax = 0, end = 0, endmin = ~0ull;
    std::vector<double> a, wk;
    for (int b = 0; b < blocks; ++b) {
      const uint64_t *p = &h[((size_t)(c - 1) * blocks + b) * 4];
      pend = std::max(pend, p[3]);
      const uint64_t *s = &h[((size_t)c * blocks + b) * 4];
      st0 = std::min(st0, s[0]); rel = std::min(rel, s[1]); relmax = std::max(relmax, s[1]);
      end = std::max(end, s[3]); endmin = std::min(endmin, s[3]);
      a.push_back((double)(s[2] - s[1])); wk.push_back((double)(s[3] - s[2]));
    }
    std::sort(a.begin(), a.end()); std::sort(wk.begin(), wk.end());
    gap_start.push_back((double)st0 - (double)pend); gap_release.push_back((double)rel - (double)pend);
    act.push_back(a[a.size() / 2]); work.push_back(wk[wk.size() / 2]); spread.push_back((double)relmax - rel);
    period.push_back((double)end - (double)pend);
  }
  auto med = [](std::vector<double> v) { std::sort(v.begin(), v.end()); return v[v.size() / 2]; };
  printf("%-28s graph %.2f us/call | stamps (ns, median over calls): prev end -> first start %.0f, -> first release %.0f, release spread %.0f, act staged %.0f, compute+store %.0f, prev end -> end %.0f\n",
         name, ms * 1000 / calls, med(gap_start), med(gap_release), med(spread), med(act), med(work), med(period));
  cudaGraphExecDestroy(exec); cudaGraphDestroy(graph);
}

int main() {
  cudaStream_t st; cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking);
  uint32_t *P, *Q, *W; int32_t *out; uint64_t *stamps;
  cudaMalloc(&P, 128 * 4 * 128); cudaMalloc(&Q, 128 * 4 * 128); cudaMalloc(&W, 4096 * 128 * 4);
  cudaMemset(P, 0x55, 128 * 4 * 128); cudaMemset(Q, 0x22, 128 * 4 * 128); cudaMemset(W, 0x33, 4096 * 128 * 4);
  cudaMalloc(&out, 4096 * 4); cudaMalloc(&stamps, (size_t)64 * 128 * 4 * 8);
  for (int r = 0; r < 2; ++r) {
    run<0>("trigger after stores", P, Q, W, out, stamps, st);
    run<1>("trigger after wait", P, Q, W, out, stamps, st);
    run<4>("trigger at start", P, Q, W, out, stamps, st);
    run<2>("act before wait (probe)", P, Q, W, out, stamps, st);
    run<3>("no act, no compute (probe)", P, Q, W, out, stamps, st);
    run<5>("weights held, trigger after wait", P, Q, W, out, stamps, st);
    run<7>("weights held, trigger after stores", P, Q, W, out, stamps, st);
    run<6>("no weight loads (probe)", P, Q, W, out, stamps, st);
    run<8>("volatile weight loads", P, Q, W, out, stamps, st);
    run<9>("weights consumed by a STS", P, Q, W, out, stamps, st);
  }
  printf("err: %s\n", cudaGetErrorString(cudaDeviceSynchronize()));
  return 0;
}
