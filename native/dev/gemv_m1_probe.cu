// Probe: where the time of a chained M = 1 ternary x binary GEMV goes on an sm_90 GPU, and which variants of
// tb_gemv_pdl help. Every configuration is timed as 64 chained programmatic-dependent calls replayed from one
// CUDA graph (as the bench's graph timing) and checked exactly against a CPU reference; the "ladder" kernels
// add one part of the GEMV at a time (timing only). Also: dependent-chain latencies in SM cycles and the SM
// clock. It includes the library's sources (through tb_gemm_variants.cu), so tb_gemv_pdl is the library's
// kernel. Results and discussion: native/test/results/h100-gemv-m1-probe*.txt, docs/PERFORMANCE.md ("M = 1 on
// Hopper"). Build and run:
//   nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a -o gemv_m1_probe native/dev/gemv_m1_probe.cu
#define BWQ_DEV_NO_MAIN
#include "tb_gemm_variants.cu"

using namespace bwq_gemm;

__device__ __forceinline__ uint64_t gtime() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// A 16-byte weight load that ptxas keeps ahead of griddepcontrol.wait: LK 0 ld.volatile (as tb_gemv_pdl),
// 1 ld.relaxed.gpu, 2 ld.global.cg (all asm volatile).
template <int LK>
__device__ __forceinline__ uint4 load_weights(const uint4 *a) {
  if (LK == 0) return ld_volatile_v4(a);
  uint4 w;
  if (LK == 1)
    asm volatile("ld.relaxed.gpu.global.v4.u32 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(w.x), "=r"(w.y), "=r"(w.z), "=r"(w.w) : "l"(a) : "memory");
  else
    asm volatile("ld.global.cg.v4.u32 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(w.x), "=r"(w.y), "=r"(w.z), "=r"(w.w) : "l"(a) : "memory");
  return w;
}

// ---------------------------------------------------------------------------------------------
// The GEMV on the binary tensor cores (tried, slower than tb_gemv_pdl on every shape): the popcounts of
// tb_gemv_pdl run at 16 lanes per clock and SM; here one mma.sync m16n8k256 .b1 AND+POPC takes 16 weight
// rows (A, registers) against the two activation planes as the two B columns: D[r][0] = popc(w_r & p),
// D[r][1] = popc(w_r & q), so
//   sum_r = 2 (D[r][0] - D[r][1]) - (popc(p) - popc(q))
// (binary weights +1 / -1 for bit 1 / 0, ternary a = p - q). A block has ROWT 16-row tiles and KSPLIT warps
// per tile, each over a contiguous range of 512-bit chunks (16 words); the partial sums of a tile's warps
// meet in shared memory. Fragments: lane (g = lane / 4, t = lane % 4) loads words 4t..4t+3 of a chunk of
// rows g and g + 8 (one 16-byte load each) and uses (x, y) as its words (t, t + 4) of the chunk's first
// 256-bit k tile and (z, w) as those of the second; the B fragment (lanes g = 0: plus plane, g = 1: minus
// plane, others zero) takes the same words, and a sum over k does not depend on the order of k. Weights of
// the first CH chunks are loaded before pdl_wait() (volatile loads stay ahead of it, see tb_gemv_pdl);
// activations after it, straight from L2. Rows are padded to 128 and ldk to 32 words, with zeros.
template <int ROWT, int KSPLIT, int CH>
__global__ void __launch_bounds__(32 * ROWT * KSPLIT)
    tb_gemv_tc(const uint32_t *__restrict__ P, const uint32_t *__restrict__ Q, const uint32_t *__restrict__ W, int ldk,
               int N, int32_t *__restrict__ out) {
  __shared__ int partial[KSPLIT][ROWT * 16];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int tile = warp / KSPLIT, ks = warp % KSPLIT;
  const int row0 = (blockIdx.x * ROWT + tile) * 16;
  const int ld4 = ldk / 4, chunks = ldk / 16, per_warp = (chunks + KSPLIT - 1) / KSPLIT;
  const int c_begin = ks * per_warp, c_end = min(chunks, c_begin + per_warp);
  const bool live = row0 < N;  // rows below the padded count exist; whole tiles above N are skipped
  const uint4 *Wa = reinterpret_cast<const uint4 *>(W) + (size_t)(live ? row0 + g : 0) * ld4 + 4 * c_begin + t;
  const uint4 *Wb = Wa + (size_t)8 * ld4;
  const uint4 z4 = make_uint4(0, 0, 0, 0);
  uint4 wa[CH], wb[CH];
#pragma unroll
  for (int c = 0; c < CH; ++c) {
    wa[c] = wb[c] = z4;
    if (live && c_begin + c < c_end) wa[c] = load_weights<0>(Wa + 4 * c), wb[c] = load_weights<0>(Wb + 4 * c);
  }
  pdl_wait();
  pdl_launch_dependents();
  const uint4 *A4 = reinterpret_cast<const uint4 *>(g == 0 ? P : Q) + 4 * c_begin + t;
  const bool plane_lane = g < 2;
  int acc[4] = {0, 0, 0, 0}, ones = 0;  // ones: popc(p) (g = 0) or popc(q) (g = 1) over this lane's words
  auto step = [&](const uint4 &a_lo, const uint4 &a_hi, const uint4 &b) {
    const uint32_t f0[4] = {a_lo.x, a_hi.x, a_lo.y, a_hi.y}, f1[4] = {a_lo.z, a_hi.z, a_lo.w, a_hi.w};
    mma_b1_nv(acc, f0, b.x, b.y);
    mma_b1_nv(acc, f1, b.z, b.w);
    ones += __popc(b.x) + __popc(b.y) + __popc(b.z) + __popc(b.w);
  };
  uint4 b[CH];
#pragma unroll
  for (int c = 0; c < CH; ++c) b[c] = live && plane_lane && c_begin + c < c_end ? __ldcg(A4 + 4 * c) : z4;
#pragma unroll
  for (int c = 0; c < CH; ++c) step(wa[c], wb[c], b[c]);
  for (int c = CH; live && c_begin + c < c_end; ++c)  // chunks beyond the preloaded ones
    step(__ldg(Wa + 4 * c), __ldg(Wb + 4 * c), plane_lane ? __ldcg(A4 + 4 * c) : z4);
  // popc(p) - popc(q) over the warp's chunks: lanes 0-3 hold the plus plane, 4-7 the minus plane
  int diff = g == 0 ? ones : -ones;
  diff += __shfl_xor_sync(0xffffffffu, diff, 1);
  diff += __shfl_xor_sync(0xffffffffu, diff, 2);
  diff += __shfl_xor_sync(0xffffffffu, diff, 4);
  diff = __shfl_sync(0xffffffffu, diff, 0);
  const int lo = 2 * (acc[0] - acc[1]) - diff, hi = 2 * (acc[2] - acc[3]) - diff;  // rows g, g + 8 (t = 0)
  if (KSPLIT == 1) {
    if (live && t == 0) {
      if (row0 + g < N) out[row0 + g] = lo;
      if (row0 + g + 8 < N) out[row0 + g + 8] = hi;
    }
    return;
  }
  if (t == 0) partial[ks][tile * 16 + g] = lo, partial[ks][tile * 16 + g + 8] = hi;
  __syncthreads();
  if (threadIdx.x < ROWT * 16) {
    int s = 0;
#pragma unroll
    for (int k = 0; k < KSPLIT; ++k) s += partial[k][threadIdx.x];
    const int n = blockIdx.x * ROWT * 16 + threadIdx.x;
    if (n < N) out[n] = s;
  }
}

// Variants of tb_gemv_pdl. STAGE: activations through shared memory (as tb_gemv_pdl) or each lane's own L2
// loads; REDUX: warp sums by redux.sync (one instruction per row) instead of the shuffle butterfly; TRIG: the
// next call may launch 0 after the wait (as tb_gemv_pdl), 1 at the start, 2 once this block's weights have
// arrived; LK: weight loads before the wait as 0 ld.volatile, 1 ld.relaxed.gpu, 2 ld.global.cg.
template <int R, int CH, bool STAGE, bool REDUX, int TRIG = 0, int LK = 0>
__global__ void __launch_bounds__(256) gemv_x(const uint32_t *__restrict__ P, const uint32_t *__restrict__ Q,
                                              const uint32_t *__restrict__ W, int ldk, int N,
                                              int32_t *__restrict__ out) {
  extern __shared__ uint4 act[];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int n0 = (blockIdx.x * (256 / 32) + warp) * R;
  const bool active = n0 < N;
  const int ld4 = ldk / 4;
  const uint4 *W4 = reinterpret_cast<const uint4 *>(W + (size_t)(active ? n0 : 0) * ldk);
  const uint4 z4 = make_uint4(0, 0, 0, 0);
  uint4 w[CH][R];
  gemv_preload<R, CH>(w, W4, ld4, lane, active, load_weights<LK>);
  if (TRIG == 2) {  // trigger once this block's weights have arrived
    uint32_t x = 0;
#pragma unroll
    for (int c = 0; c < CH; ++c)
#pragma unroll
      for (int r = 0; r < R; ++r) x |= w[c][r].x;
    if (__syncthreads_or(x == 0x12345678u) == 7) out[0] = 0;  // never true; makes the trigger wait for the loads
    pdl_launch_dependents();
  }
  if (TRIG == 1) pdl_launch_dependents();
  pdl_wait();
  if (TRIG == 0) pdl_launch_dependents();
  const uint4 *P4 = reinterpret_cast<const uint4 *>(P), *Q4 = reinterpret_cast<const uint4 *>(Q);
  uint4 p[CH], q[CH];
  if (STAGE) {
    for (int i = threadIdx.x; i < ld4; i += blockDim.x) act[i] = __ldcg(P4 + i), act[ld4 + i] = __ldcg(Q4 + i);
    __syncthreads();
    if (!active) return;
#pragma unroll
    for (int c = 0; c < CH; ++c) {
      const int i = c * 32 + lane;
      p[c] = i < ld4 ? act[i] : z4;
      q[c] = i < ld4 ? act[ld4 + i] : z4;
    }
  } else {
    if (!active) return;
#pragma unroll
    for (int c = 0; c < CH; ++c) {
      const int i = c * 32 + lane;
      p[c] = i < ld4 ? __ldcg(P4 + i) : z4;
      q[c] = i < ld4 ? __ldcg(Q4 + i) : z4;
    }
  }
  int v[R];
#pragma unroll
  for (int r = 0; r < R; ++r) v[r] = 0;
#pragma unroll
  for (int c = 0; c < CH; ++c)
    if (c * 32 + lane < ld4) gemv_chunk<R>(p[c], q[c], w[c], v);
  for (int i = CH * 32 + lane; i < ld4; i += 32) {
    uint4 wr[R];
#pragma unroll
    for (int r = 0; r < R; ++r) wr[r] = __ldg(W4 + (size_t)r * ld4 + i);
    gemv_chunk<R>(STAGE ? act[i] : __ldcg(P4 + i), STAGE ? act[ld4 + i] : __ldcg(Q4 + i), wr, v);
  }
  if (REDUX) gemv_redux_store<R>(v, lane, n0, N, out);
  else gemv_reduce_store<R>(v, lane, n0, N, out);
}

// Latencies in SM cycles of dependent chains (one warp): 16 mma b1, 16 shuffles, 16 redux, 16 popc+lop3,
// 16 L2 loads (ldcg, pointer chasing), and the SM clock from clock64 against globaltimer.
__global__ void latency(const uint32_t *chain, long long *res) {
  const int lane = threadIdx.x;
  uint32_t a[4] = {lane * 3u + 1, lane * 5u + 7, lane * 11u, lane * 13u + 3}, b0 = lane * 17u, b1 = lane * 19u;
  int c[4] = {0, 0, 0, 0};
  long long t0 = clock64();
  for (int i = 0; i < 16; ++i) { mma_b1(c, a, b0, b1); a[0] ^= c[0]; }
  long long t1 = clock64();
  int x = c[0] + lane;
  for (int i = 0; i < 16; ++i) x = __shfl_xor_sync(0xffffffffu, x, 1) + 1;
  long long t2 = clock64();
  for (int i = 0; i < 16; ++i) x = __reduce_add_sync(0xffffffffu, x) + lane;
  long long t3 = clock64();
  uint32_t y = x;
  for (int i = 0; i < 16; ++i) y = __popc((y & b0) | (~y & b1)) + y;
  long long t4 = clock64();
  uint32_t idx = y & 0;
  for (int i = 0; i < 16; ++i) idx = __ldcg(chain + idx);
  long long t5 = clock64();
  uint64_t g0 = 0, g1 = 0;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(g0));
  const long long s0 = clock64();
  while (clock64() - s0 < 2000000) {}
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(g1));
  const long long s1 = clock64();
  if (lane == 0) {
    res[0] = (t1 - t0) / 16; res[1] = (t2 - t1) / 16; res[2] = (t3 - t2) / 16; res[3] = (t4 - t3) / 16;
    res[4] = (t5 - t4) / 16; res[5] = (long long)((s1 - s0) * 1000.0 / (double)(g1 - g0));
    res[6] = c[1] + x + y + idx;
  }
}

// Ablation ladder for the per-call floor (timing only, wrong results below LEVEL 4): 0 wait + trigger + store;
// 1 + weight loads before the wait; 2 + activations staged through shared memory; 3 + the popcounts;
// 4 + the warp sums (= x<4,1,stage,redux>). 5: as 4 without the trigger after the wait (plain stream order).
// EARLY: the next call may launch at the start instead of after the wait.
// stamps (optional): %globaltimer of thread 0 at the start, after the wait, after the activations are staged and
// after its store, 4 per block.
// WAIT1: only warp 0 executes griddepcontrol.wait, the others wait for it at a barrier.
template <int LEVEL, bool EARLY = false, bool WAIT1 = false>
__global__ void __launch_bounds__(256) ladder(const uint32_t *__restrict__ P, const uint32_t *__restrict__ Q,
                                              const uint32_t *__restrict__ W, int ldk, int N,
                                              int32_t *__restrict__ out, uint64_t *__restrict__ stamps) {
  extern __shared__ uint4 act[];
  uint64_t t[4] = {0, 0, 0, 0};
  if (stamps) t[0] = gtime();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int n0 = (blockIdx.x * 8 + warp) * 4;
  const int ld4 = ldk / 4;
  const uint4 *W4 = reinterpret_cast<const uint4 *>(W + (size_t)(n0 < N ? n0 : 0) * ldk);
  if (EARLY) pdl_launch_dependents();
  uint4 w[4];
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    w[r] = make_uint4(r, lane, n0, 0);
    if (LEVEL >= 1 && lane < ld4) w[r] = load_weights<0>(W4 + (size_t)r * ld4 + lane);
  }
  if (WAIT1) {
    if (warp == 0) pdl_wait();
    __syncthreads();
  } else {
    pdl_wait();
  }
  if (stamps) t[1] = gtime();
  if (LEVEL != 5 && !EARLY) pdl_launch_dependents();
  uint4 p = make_uint4(1, 2, 3, 4), q = make_uint4(5, 6, 7, 8);
  if (LEVEL >= 2) {
    const uint4 *P4 = reinterpret_cast<const uint4 *>(P), *Q4 = reinterpret_cast<const uint4 *>(Q);
    for (int i = threadIdx.x; i < ld4; i += blockDim.x) act[i] = __ldcg(P4 + i), act[ld4 + i] = __ldcg(Q4 + i);
    __syncthreads();
    if (lane < ld4) p = act[lane], q = act[ld4 + lane];
  }
  if (stamps) t[2] = gtime();
  if (n0 >= N) return;
  int v[4];
  if (LEVEL >= 3) {
    const uint4 wv[1][4] = {{w[0], w[1], w[2], w[3]}};
#pragma unroll
    for (int r = 0; r < 4; ++r) v[r] = 0;
    if (lane < ld4) gemv_chunk<4>(p, q, wv[0], v);
  } else {
#pragma unroll
    for (int r = 0; r < 4; ++r) v[r] = (int)(w[r].x ^ w[r].y ^ w[r].z ^ w[r].w ^ p.x ^ q.w);
  }
  int mine = v[lane & 3];
  if (LEVEL >= 4) {
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int s = __reduce_add_sync(0xffffffffu, v[r]);
      if (lane == r) mine = s;
    }
  }
  if (lane < 4 && n0 + lane < N) out[n0 + lane] = mine;
  if (stamps && threadIdx.x == 0) {
    t[3] = gtime();
    for (int i = 0; i < 4; ++i) stamps[(size_t)blockIdx.x * 4 + i] = t[i];
  }
}

namespace probe {
struct Shape { int k, n; };
struct Buffers { uint32_t *P, *Q, *W; int32_t *out; int ldk, n; std::vector<int32_t> ref; };

Buffers make(Shape s, std::mt19937 &rng) {
  Buffers b;
  const int kw = (s.k + 31) / 32;
  b.ldk = round_up(kw, 32); b.n = s.n;
  const int np = round_up(s.n, 128);
  std::vector<uint32_t> p(b.ldk, 0), q(b.ldk, 0), w((size_t)np * b.ldk, 0);
  for (int i = 0; i < kw; ++i) {
    const uint32_t mask = (i == kw - 1 && s.k % 32) ? (1u << (s.k % 32)) - 1 : ~0u;
    const uint32_t a = rng() & mask, z = rng() & rng();  // about a quarter of the positions zero
    p[i] = a & ~z; q[i] = ~a & ~z & mask;
  }
  for (int r = 0; r < s.n; ++r)
    for (int i = 0; i < kw; ++i)
      w[(size_t)r * b.ldk + i] = rng() & ((i == kw - 1 && s.k % 32) ? (1u << (s.k % 32)) - 1 : ~0u);
  b.ref.resize(s.n);
  for (int r = 0; r < s.n; ++r) {
    int sum = 0;
    for (int i = 0; i < kw; ++i) {
      const uint32_t x = w[(size_t)r * b.ldk + i];
      sum += 2 * __builtin_popcount((x & p[i]) | (~x & q[i])) - __builtin_popcount(p[i] | q[i]);
    }
    b.ref[r] = sum;
  }
  cudaMalloc(&b.P, b.ldk * 4); cudaMalloc(&b.Q, b.ldk * 4); cudaMalloc(&b.W, w.size() * 4);
  cudaMalloc(&b.out, (size_t)np * 4);
  cudaMemcpy(b.P, p.data(), b.ldk * 4, cudaMemcpyHostToDevice);
  cudaMemcpy(b.Q, q.data(), b.ldk * 4, cudaMemcpyHostToDevice);
  cudaMemcpy(b.W, w.data(), w.size() * 4, cudaMemcpyHostToDevice);
  return b;
}

void release(const Buffers &b) { cudaFree(b.P); cudaFree(b.Q); cudaFree(b.W); cudaFree(b.out); }

using Launch = cudaError_t (*)(const Buffers &, cudaStream_t);
template <int CH>
cudaError_t pdl(const Buffers &b, cudaStream_t st) {
  auto kernel = CH == 1 && b.ldk <= 128 ? tb_gemv_pdl<4, 1, false> : tb_gemv_pdl<4, CH, true>;
  return launch_pdl(kernel, dim3((b.n + 31) / 32), dim3(256), (size_t)b.ldk * 8, st, (const uint32_t *)b.P,
                    (const uint32_t *)b.Q, (const uint32_t *)b.W, b.ldk, b.n, b.out, GemvEpilogue{});
}
template <int R, int KS, int CH>
cudaError_t tc(const Buffers &b, cudaStream_t st) {
  return launch_pdl(tb_gemv_tc<R, KS, CH>, dim3((b.n + 16 * R - 1) / (16 * R)), dim3(32 * R * KS), 0, st,
                    (const uint32_t *)b.P, (const uint32_t *)b.Q, (const uint32_t *)b.W, b.ldk, b.n, b.out);
}

// PAD_KB: dynamic shared memory per block, which bounds the blocks per SM (2 at 100 KiB, 3 at 70 KiB) and so
// how many calls of a chain can be resident at once.
template <int R, int CH, bool STAGE, bool REDUX, int TRIG = 0, int LK = 0, int PAD_KB = 0>
cudaError_t x(const Buffers &b, cudaStream_t st) {
  const size_t smem = PAD_KB ? (size_t)PAD_KB * 1024 : STAGE ? (size_t)b.ldk * 8 : 0;
  if (smem > 48 * 1024)
    cudaFuncSetAttribute(gemv_x<R, CH, STAGE, REDUX, TRIG, LK>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
  return launch_pdl(gemv_x<R, CH, STAGE, REDUX, TRIG, LK>, dim3((b.n + 8 * R - 1) / (8 * R)), dim3(256), smem, st,
                    (const uint32_t *)b.P, (const uint32_t *)b.Q, (const uint32_t *)b.W, b.ldk, b.n, b.out);
}

// PAD_KB as for x<>: bounds the blocks per SM, so how many calls run ahead with EARLY.
template <int LEVEL, bool EARLY = false, int PAD_KB = 0, bool WAIT1 = false>
cudaError_t lad(const Buffers &b, cudaStream_t st) {
  if (LEVEL == 5)
    return ladder<5><<<(b.n + 31) / 32, 256, (size_t)b.ldk * 8, st>>>(b.P, b.Q, b.W, b.ldk, b.n, b.out, nullptr),
           cudaGetLastError();
  const size_t smem = PAD_KB ? (size_t)PAD_KB * 1024 : (size_t)b.ldk * 8;
  if (smem > 48 * 1024)
    cudaFuncSetAttribute(ladder<LEVEL, EARLY, WAIT1>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
  return launch_pdl(ladder<LEVEL, EARLY, WAIT1>, dim3((b.n + 31) / 32), dim3(256), smem, st, (const uint32_t *)b.P,
                    (const uint32_t *)b.Q, (const uint32_t *)b.W, b.ldk, b.n, b.out, (uint64_t *)nullptr);
}

// Captures `calls` launches (launch(c) for call c) on `st` into one CUDA graph, instantiates it and replays it
// three times untimed (warm-up).
template <class F>
cudaGraphExec_t capture_chain(int calls, cudaStream_t st, cudaGraph_t &graph, F launch) {
  cudaGraphExec_t exec;
  cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal);
  for (int c = 0; c < calls; ++c) launch(c);
  cudaStreamEndCapture(st, &graph);
  cudaGraphInstantiate(&exec, graph, 0);
  for (int i = 0; i < 3; ++i) cudaGraphLaunch(exec, st);
  return exec;
}

// Timeline of 64 chained ladder<LEVEL, EARLY> calls with stamps (graph replay): medians over the calls of the
// gaps to the previous call's end (its blocks' last stamp), in ns (%globaltimer advanced in 32 ns or 256 ns steps
// on the H100s used).
template <int LEVEL, bool EARLY, int PAD_KB = 0>
void stamped(const char *name, const Buffers &b, cudaStream_t st) {
  const int calls = 64, blocks = (b.n + 31) / 32;
  uint64_t *stamps;
  cudaMalloc(&stamps, (size_t)calls * blocks * 4 * 8);
  const size_t smem = PAD_KB ? (size_t)PAD_KB * 1024 : (size_t)b.ldk * 8;
  if (smem > 48 * 1024)
    cudaFuncSetAttribute(ladder<LEVEL, EARLY>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
  cudaGraph_t graph;
  cudaGraphExec_t exec = capture_chain(calls, st, graph, [&](int c) {
    launch_pdl(ladder<LEVEL, EARLY>, dim3(blocks), dim3(256), smem, st, (const uint32_t *)b.P, (const uint32_t *)b.Q,
               (const uint32_t *)b.W, b.ldk, b.n, b.out, stamps + (size_t)c * blocks * 4);
  });
  cudaStreamSynchronize(st);
  std::vector<uint64_t> h((size_t)calls * blocks * 4);
  cudaMemcpy(h.data(), stamps, h.size() * 8, cudaMemcpyDeviceToHost);
  std::vector<double> start0, start1, rel0, rel1, staged, end;
  uint64_t prev_end = 0;
  for (int c = 0; c < calls; ++c) {
    uint64_t s0 = ~0ull, s1 = 0, r0 = ~0ull, r1 = 0, a1 = 0, e = 0;
    for (int k = 0; k < blocks; ++k) {
      const uint64_t *t = &h[((size_t)c * blocks + k) * 4];
      s0 = std::min(s0, t[0]); s1 = std::max(s1, t[0]); r0 = std::min(r0, t[1]); r1 = std::max(r1, t[1]);
      a1 = std::max(a1, t[2]); e = std::max(e, t[3]);
    }
    if (c > 0) {
      const double p = (double)prev_end;
      start0.push_back(s0 - p); start1.push_back(s1 - p); rel0.push_back(r0 - p); rel1.push_back(r1 - p);
      staged.push_back(a1 - p); end.push_back(e - p);
    }
    prev_end = e;
  }
  auto med = [](std::vector<double> v) { std::sort(v.begin(), v.end()); return v[v.size() / 2]; };
  printf("  %-22s ns from the previous call's end: blocks start %.0f .. %.0f, released %.0f .. %.0f, "
         "staged %.0f, end %.0f\n",
         name, med(start0), med(start1), med(rel0), med(rel1), med(staged), med(end));
  cudaGraphExecDestroy(exec); cudaGraphDestroy(graph); cudaFree(stamps);
}

// Cold weights (as BWQ_BENCH_COLD_WEIGHTS in the bench): call c of the chain reads copy c % copies of the
// weights, the copies together twice the L2, so every call streams its weights from memory. 0: one copy.
int g_copies = 0;
uint32_t *g_wcopies = nullptr;

void run(const char *name, Launch f, const Buffers &b, cudaStream_t st) {
  const int calls = g_copies ? 4 * g_copies : 64;
  const size_t wsize = (size_t)round_up(b.n, 128) * b.ldk;
  cudaMemsetAsync(b.out, 0x7f, (size_t)b.n * 4, st);  // on st: the legacy stream does not order with it
  cudaError_t e = f(b, st);
  cudaStreamSynchronize(st);
  if (e == cudaSuccess) e = cudaGetLastError();
  std::vector<int32_t> h(b.n);
  cudaMemcpy(h.data(), b.out, (size_t)b.n * 4, cudaMemcpyDeviceToHost);
  int bad = 0;
  for (int i = 0; i < b.n; ++i) bad += h[i] != b.ref[i];
  cudaGraph_t graph;
  cudaGraphExec_t exec = capture_chain(calls, st, graph, [&](int c) {
    Buffers bc = b;
    if (g_copies) bc.W = g_wcopies + (size_t)(c % g_copies) * wsize;
    f(bc, st);
  });
  cudaEvent_t e0, e1; cudaEventCreate(&e0); cudaEventCreate(&e1);
  std::vector<float> per;
  for (int rep = 0; rep < 15; ++rep) {
    cudaEventRecord(e0, st); cudaGraphLaunch(exec, st); cudaEventRecord(e1, st); cudaEventSynchronize(e1);
    float ms; cudaEventElapsedTime(&ms, e0, e1); per.push_back(ms * 1000 / calls);
  }
  std::sort(per.begin(), per.end());
  printf("  %-22s graph %.3f us/call (min %.3f)  %s %s\n", name, per[per.size() / 2], per[0],
         bad ? "MISMATCH" : "exact", e == cudaSuccess ? "" : cudaGetErrorString(e));
  cudaGraphExecDestroy(exec); cudaGraphDestroy(graph);
}
}  // namespace probe

int main() {
  using namespace probe;
  cudaStream_t st; cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking);
  std::mt19937 rng(7);
  const Shape shapes[] = {{4096, 4096}, {4096, 11008}, {11008, 4096}, {1000, 300}, {4100, 4104}};
  auto latencies = [&] {
    uint32_t *chain; long long *res;
    cudaMalloc(&chain, 4096 * 4); cudaMemset(chain, 0, 4096 * 4); cudaMalloc(&res, 8 * 8);
    for (int i = 0; i < 2; ++i) {
      latency<<<1, 32, 0, st>>>(chain, res);
      cudaStreamSynchronize(st);
      long long h[8];
      cudaMemcpy(h, res, sizeof h, cudaMemcpyDeviceToHost);
      printf("latency (cycles): mma b1 %lld, shfl %lld, redux %lld, lop3+popc+add %lld, ldcg L2 hit %lld; "
             "SM clock %lld MHz\n",
             h[0], h[1], h[2], h[3], h[4], h[5]);
    }
    cudaFree(chain); cudaFree(res);
  };
  latencies();
  for (int rep = 0; rep < (getenv("PROBE_COLD_ONLY") ? 0 : 2); ++rep)
    for (Shape s : shapes) {
      Buffers b = make(s, rng);
      printf("-- K=%d N=%d\n", s.k, s.n);
      run("tb_gemv_pdl<4,3>", pdl<3>, b, st);
      run("tb_gemv_pdl<4,1>", pdl<1>, b, st);
      run("x<4,1,stage,redux>", x<4, 1, true, true>, b, st);
      run("x<4,3,stage,redux>", x<4, 3, true, true>, b, st);
      run("x<4,1,direct,redux>", x<4, 1, false, true>, b, st);
      run("x<4,1> trig start", x<4, 1, true, true, 1>, b, st);
      run("x<4,3> trig weights", x<4, 3, true, true, 2>, b, st);
      run("x<4,1> start 2/SM", x<4, 1, true, true, 1, 0, 100>, b, st);
      run("x<4,1> relaxed.gpu", x<4, 1, true, true, 0, 1>, b, st);
      run("x<2,1,stage,redux>", x<2, 1, true, true>, b, st);
      run("x<8,1,stage,redux>", x<8, 1, true, true>, b, st);
      run("tc<2,4,2>", tc<2, 4, 2>, b, st);
      run("tc<1,8,2>", tc<1, 8, 2>, b, st);
      run("tc<8,1,8>", tc<8, 1, 8>, b, st);
      run("ladder 0 wait+store", lad<0>, b, st);
      run("ladder 1 +weights", lad<1>, b, st);
      run("ladder 2 +act staged", lad<2>, b, st);
      run("ladder 3 +popc", lad<3>, b, st);
      run("ladder 4 +redux", lad<4>, b, st);
      run("ladder 5 no PDL", lad<5>, b, st);
      run("ladder 0 early", lad<0, true>, b, st);
      run("ladder 1 early", lad<1, true>, b, st);
      run("ladder 1 early 2/SM", lad<1, true, 100>, b, st);
      run("ladder 2 early", lad<2, true>, b, st);
      run("ladder 2 early 2/SM", lad<2, true, 100>, b, st);
      run("ladder 4 early", lad<4, true>, b, st);
      run("ladder 4 early 2/SM", lad<4, true, 100>, b, st);
      run("ladder 4 early 2/SM w1", lad<4, true, 100, true>, b, st);
      stamped<1, false>("ladder 1", b, st);
      stamped<1, true>("ladder 1 early", b, st);
      stamped<4, false>("ladder 4", b, st);
      stamped<4, true, 100>("ladder 4 early 2/SM", b, st);
      release(b);
      if (rep == 0 && s.n == 4096 && s.k == 4096) latencies();  // the SM clock right after graph replays
    }
  latencies();
  // Cold weights (and the same variants warm, on the same machine): the variants whose next call starts earlier
  // have more time to stream the weights.
  cudaDeviceProp prop;
  cudaGetDeviceProperties(&prop, 0);
  for (int rep = 0; rep < 2; ++rep)
    for (int si = 0; si < 3; ++si)
      for (int cold = 1; cold >= 0; --cold) {
        const Shape s = shapes[si];
        Buffers b = make(s, rng);
        const size_t wsize = (size_t)round_up(b.n, 128) * b.ldk;
        if (cold) {
          g_copies = (int)((2 * (size_t)prop.l2CacheSize + wsize * 4 - 1) / (wsize * 4));
          cudaMalloc(&g_wcopies, wsize * 4 * g_copies);
          for (int c = 0; c < g_copies; ++c)
            cudaMemcpy(g_wcopies + c * wsize, b.W, wsize * 4, cudaMemcpyDeviceToDevice);
          cudaDeviceSynchronize();  // device-to-device copies return before they are done
          printf("-- cold weights (%d copies): K=%d N=%d\n", g_copies, s.k, s.n);
        } else {
          printf("-- warm weights: K=%d N=%d\n", s.k, s.n);
        }
        run("tb_gemv_pdl<4,1>", pdl<1>, b, st);
        run("tb_gemv_pdl<4,3>", pdl<3>, b, st);
        run("x<4,1,stage,redux>", x<4, 1, true, true>, b, st);
        run("x<4,1,stage,shfl>", x<4, 1, true, false>, b, st);
        run("x<4,3,stage,redux>", x<4, 3, true, true>, b, st);
        run("x<4,1> start 2/SM", x<4, 1, true, true, 1, 0, 100>, b, st);
        run("x<4,1> start 3/SM", x<4, 1, true, true, 1, 0, 70>, b, st);
        run("x<4,3> start 2/SM", x<4, 3, true, true, 1, 0, 100>, b, st);
        run("x<4,3> start 3/SM", x<4, 3, true, true, 1, 0, 70>, b, st);
        if (s.k <= 4096) run("ladder 4 +redux", lad<4>, b, st);
        if (cold) cudaFree(g_wcopies);
        g_copies = 0;
        release(b);
      }
  printf("err: %s\n", cudaGetErrorString(cudaDeviceSynchronize()));
  return 0;
}
