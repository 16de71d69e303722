// Packed GEMVs (few activation rows): a warp per weight row (per 4 rows at M = 1), K split over its lanes.
//   tb_gemv_direct  ternary x binary, M <= 4: activations through the read-only cache, nz inline ("tb_gemv")
//   tb_gemv         ternary x binary, M <= 16 (a forced GEMV path): activation planes in shared memory
//   i8_gemv         int8 x binary, M <= 8 per launch: 4 weight bits -> 4 bytes of +-1 -> dp4a
//   tb_gemv_pdl     ternary x binary, M = 1 on Hopper, as a programmatic dependent launch
// At M = 1 the ternary (Hopper) and int8 GEMVs also take the linear layer's epilogue (a GemvEpilogue): they then
// store y[n] = fl(s[0] * wscale[n] * acc[n]) (the product in double, as native/ops/linear/linear.cu's
// packed_epilogue) instead of the int32 sums, which saves the epilogue kernel of each decoding GEMV.
#include "common.cuh"

namespace bwq_gemm {
namespace {

// Ternary x binary GEMV (M <= MT <= 16): warp per weight row.
template <int MT>
__global__ void __launch_bounds__(256) tb_gemv(const uint32_t *__restrict__ P, const uint32_t *__restrict__ Q,
                                               const uint32_t *__restrict__ W, int ldk, int M, int N,
                                               int rows_per_warp, int32_t *__restrict__ out, int ldo) {
  extern __shared__ uint4 sm4[];
  __shared__ int nzs[MT];
  const int ld4 = ldk / 4;
  uint4 *sP = sm4, *sQ = sm4 + MT * ld4;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const uint4 *P4 = reinterpret_cast<const uint4 *>(P), *Q4 = reinterpret_cast<const uint4 *>(Q);
  for (int i = tid; i < MT * ld4; i += 256) {
    const int m = i / ld4;
    sP[i] = m < M ? P4[i] : make_uint4(0, 0, 0, 0);
    sQ[i] = m < M ? Q4[i] : make_uint4(0, 0, 0, 0);
  }
  __syncthreads();
  for (int m = warp; m < MT; m += 8) {
    int c = 0;
    for (int i = lane; i < ld4; i += 32) {
      const uint4 p = sP[m * ld4 + i], q = sQ[m * ld4 + i];
      c += __popc(p.x) + __popc(p.y) + __popc(p.z) + __popc(p.w) + __popc(q.x) + __popc(q.y) + __popc(q.z) +
           __popc(q.w);
    }
    for (int o = 16; o; o >>= 1) c += __shfl_xor_sync(0xffffffffu, c, o);
    if (lane == 0) nzs[m] = c;
  }
  __syncthreads();
  const int n_begin = (blockIdx.x * 8 + warp) * rows_per_warp;
  for (int r = 0; r < rows_per_warp; ++r) {
    const int n = n_begin + r;
    if (n >= N) break;
    const uint4 *w4 = reinterpret_cast<const uint4 *>(W + (size_t)n * ldk);
    int pos[MT];
#pragma unroll
    for (int m = 0; m < MT; ++m) pos[m] = 0;
    for (int i = lane; i < ld4; i += 32) {
      const uint4 w = __ldg(w4 + i);
#pragma unroll
      for (int m = 0; m < MT; ++m) {
        const uint4 p = sP[m * ld4 + i], q = sQ[m * ld4 + i];
        pos[m] += popsel(w.x, p.x, q.x) + popsel(w.y, p.y, q.y) + popsel(w.z, p.z, q.z) + popsel(w.w, p.w, q.w);
      }
    }
#pragma unroll
    for (int m = 0; m < MT; ++m) {
      int v = pos[m];
      for (int o = 16; o; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
      if (lane == m && m < M) out[(size_t)m * ldo + n] = 2 * v - nzs[m];
    }
  }
}

// ---------------------------------------------------------------------------------------------
// int8 x binary GEMV (M <= MT <= 8): warp per weight row; 4 weight bits -> 4 bytes of +-1 -> dp4a.
template <int MT>
__global__ void __launch_bounds__(256) i8_gemv(const int8_t *__restrict__ A, int lda, const uint32_t *__restrict__ W,
                                               int ldk, int M, int N, int32_t *__restrict__ out, int ldo,
                                               GemvEpilogue epi) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int n = blockIdx.x * 8 + warp;
  if (n >= N) return;
  const int ld4 = ldk / 4;
  const uint4 *w4 = reinterpret_cast<const uint4 *>(W + (size_t)n * ldk);
  int acc[MT];
#pragma unroll
  for (int m = 0; m < MT; ++m) acc[m] = 0;
  for (int i = lane; i < ld4; i += 32) {
    const uint4 wv = __ldg(w4 + i);
    const uint32_t ws[4] = {wv.x, wv.y, wv.z, wv.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      uint32_t b[8];
#pragma unroll
      for (int h = 0; h < 8; ++h) b[h] = nibble_pm1((ws[j] >> (4 * h)) & 0xFu);
#pragma unroll
      for (int m = 0; m < MT; ++m) {
        if (m < M) {
          const int4 *a4 = reinterpret_cast<const int4 *>(A + (size_t)m * lda + (size_t)(4 * i + j) * 32);
          const int4 x = __ldg(a4), y = __ldg(a4 + 1);
          int s = acc[m];
          s = __dp4a(x.x, (int)b[0], s);
          s = __dp4a(x.y, (int)b[1], s);
          s = __dp4a(x.z, (int)b[2], s);
          s = __dp4a(x.w, (int)b[3], s);
          s = __dp4a(y.x, (int)b[4], s);
          s = __dp4a(y.y, (int)b[5], s);
          s = __dp4a(y.z, (int)b[6], s);
          s = __dp4a(y.w, (int)b[7], s);
          acc[m] = s;
        }
      }
    }
  }
#pragma unroll
  for (int m = 0; m < MT; ++m) {
    int v = acc[m];
    for (int o = 16; o; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == m && m < M) {
      if (epi.y) epi.y[(size_t)m * ldo + n] = epilogue_value(epi, m, n, v);
      else out[(size_t)m * ldo + n] = v;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Ternary x binary GEMV for M <= MT <= 4 without shared memory: activations through the read-only
// cache, row popcounts computed inline (popc(p|q)), weight loads issued before the arithmetic.
template <int MT>
__global__ void __launch_bounds__(256) tb_gemv_direct(const uint32_t *__restrict__ P, const uint32_t *__restrict__ Q,
                                                      const uint32_t *__restrict__ W, int ldk, int M, int N,
                                                      int32_t *__restrict__ out, int ldo) {
  constexpr int CH = 4;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int n = blockIdx.x * 8 + warp;
  if (n >= N) return;
  const int ld4 = ldk / 4;
  const uint4 *w4 = reinterpret_cast<const uint4 *>(W + (size_t)n * ldk);
  const uint4 *P4 = reinterpret_cast<const uint4 *>(P), *Q4 = reinterpret_cast<const uint4 *>(Q);
  int pos[MT], nz[MT];
#pragma unroll
  for (int m = 0; m < MT; ++m) pos[m] = nz[m] = 0;
  for (int base = 0; base < ld4; base += 32 * CH) {
    uint4 w[CH];
#pragma unroll
    for (int c = 0; c < CH; ++c) {
      const int i = base + c * 32 + lane;
      w[c] = i < ld4 ? __ldg(w4 + i) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int c = 0; c < CH; ++c) {
      const int i = base + c * 32 + lane;
      if (i < ld4) {
#pragma unroll
        for (int m = 0; m < MT; ++m) {
          if (m < M) {
            const uint4 p = __ldg(P4 + (size_t)m * ld4 + i), q = __ldg(Q4 + (size_t)m * ld4 + i);
            pos[m] += popsel(w[c].x, p.x, q.x) + popsel(w[c].y, p.y, q.y) + popsel(w[c].z, p.z, q.z) +
                      popsel(w[c].w, p.w, q.w);
            nz[m] += __popc(p.x | q.x) + __popc(p.y | q.y) + __popc(p.z | q.z) + __popc(p.w | q.w);
          }
        }
      }
    }
  }
#pragma unroll
  for (int m = 0; m < MT; ++m) {
    int v = 2 * pos[m] - nz[m];
    for (int o = 16; o; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == m && m < M) out[(size_t)m * ldo + n] = v;
  }
}

// ---------------------------------------------------------------------------------------------
// M = 1 GEMV building blocks of tb_gemv_pdl (and of native/dev/). A 128-bit chunk of the activation
// (planes p, q) against the same chunk of R weight rows: v[r] += 2 popc((w & p) | (~w & q)) - popc(p | q).
template <int R>
__device__ __forceinline__ void gemv_chunk(const uint4 &p, const uint4 &q, const uint4 (&w)[R], int (&v)[R]) {
  const int nz = __popc(p.x | q.x) + __popc(p.y | q.y) + __popc(p.z | q.z) + __popc(p.w | q.w);
#pragma unroll
  for (int r = 0; r < R; ++r)
    v[r] += 2 * (popsel(w[r].x, p.x, q.x) + popsel(w[r].y, p.y, q.y) + popsel(w[r].z, p.z, q.z) +
                 popsel(w[r].w, p.w, q.w)) -
            nz;
}
// Sums each of the R per-lane partials over the warp with one redux.sync per sum (R instructions; lane r
// stores column n0 + r < N).
template <int R>
__device__ __forceinline__ void gemv_redux_store(const int (&v)[R], int lane, int n0, int N, int32_t *__restrict__ out,
                                                 const GemvEpilogue &epi = GemvEpilogue{}) {
  int mine = 0;
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int s = __reduce_add_sync(0xffffffffu, v[r]);
    if (lane == r) mine = s;
  }
  if (lane < R && n0 + lane < N) {
    if (epi.y) epi.y[n0 + lane] = epilogue_value(epi, 0, n0 + lane, mine);
    else out[n0 + lane] = mine;
  }
}

// A 16-byte load that ptxas keeps ahead of griddepcontrol.wait: it moves the wait above read-only (.nc)
// loads, which would leave their latency after the dependency wait; volatile (strong) loads stay before it.
__device__ __forceinline__ uint4 ld_volatile_v4(const uint4 *a) {
  uint4 v;
  asm volatile("ld.volatile.global.v4.u32 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(a)
               : "memory");
  return v;
}
// Loads a lane's first CH 128-bit chunks (lane + 32c) of R weight rows (row stride ld4 chunks) with `load`;
// chunks beyond the row, or all of them when !active, are zero.
template <int R, int CH, class Load>
__device__ __forceinline__ void gemv_preload(uint4 (&w)[CH][R], const uint4 *W4, int ld4, int lane, bool active,
                                             Load load) {
#pragma unroll
  for (int c = 0; c < CH; ++c) {
    const int i = c * 32 + lane;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      w[c][r] = make_uint4(0, 0, 0, 0);
      if (active && i < ld4) w[c][r] = load(W4 + (size_t)r * ld4 + i);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Ternary x binary GEMV for M = 1 as a programmatic dependent launch (sm_90). The weights never depend on
// earlier kernels, so each lane loads its first CH chunks of the warp's R weight rows before pdl_wait();
// after it the block copies the activation planes into shared memory once (L2-coherent loads) and the
// warps read them from there (one L2 read per block instead of one per warp). Each block lets the next kernel
// launch right after its own wait, so in a chain of calls (a decode step, CUDA-graph replay) the next
// kernel's blocks start and load their weights while this one works (not earlier: a trigger before the wait
// lets launches pile up). Contract: no kernel still running when this one
// launches writes W (bwq's kernels never write weights). Arithmetic as in tb_gemv_m1; the R sums are reduced
// with redux.sync (R instructions; 1 - 3 % faster than the shuffle butterfly on an H100,
// native/test/results/h100-gemv-m1-probe-cold-a.txt). TAIL: K may extend beyond the CH preloaded chunks (the
// instance for K <= 4096 has no loop after the arithmetic: about 1 % with weights streamed from memory).
template <int R, int CH, bool TAIL>
__global__ void __launch_bounds__(256) tb_gemv_pdl(const uint32_t *__restrict__ P, const uint32_t *__restrict__ Q,
                                                   const uint32_t *__restrict__ W, int ldk, int N,
                                                   int32_t *__restrict__ out, GemvEpilogue epi) {
  extern __shared__ uint4 act[];  // [ld4] plus, then [ld4] minus
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int n0 = (blockIdx.x * 8 + warp) * R;
  const bool active = n0 < N;
  const int ld4 = ldk / 4;
  const uint4 *W4 = reinterpret_cast<const uint4 *>(W + (size_t)(active ? n0 : 0) * ldk);  // padded rows are zero
  uint4 w[CH][R];
  gemv_preload<R, CH>(w, W4, ld4, lane, active, ld_volatile_v4);
  pdl_wait();
  pdl_launch_dependents();  // the next call's blocks start now and load their weights while this one works
  {
    const uint4 *P4 = reinterpret_cast<const uint4 *>(P), *Q4 = reinterpret_cast<const uint4 *>(Q);
    for (int i = threadIdx.x; i < ld4; i += blockDim.x) {
      act[i] = __ldcg(P4 + i);
      act[ld4 + i] = __ldcg(Q4 + i);
    }
  }
  __syncthreads();
  if (!active) return;
  int v[R];
#pragma unroll
  for (int r = 0; r < R; ++r) v[r] = 0;
#pragma unroll
  for (int c = 0; c < CH; ++c) {
    const int i = c * 32 + lane;
    if (i < ld4) gemv_chunk<R>(act[i], act[ld4 + i], w[c], v);
  }
  if (TAIL)
    for (int i = CH * 32 + lane; i < ld4; i += 32) {  // K beyond the preloaded chunks
      uint4 wr[R];
#pragma unroll
      for (int r = 0; r < R; ++r) wr[r] = __ldg(W4 + (size_t)r * ld4 + i);
      gemv_chunk<R>(act[i], act[ld4 + i], wr, v);
    }
  gemv_redux_store<R>(v, lane, n0, N, out, epi);
}

}  // namespace

void launch_tb_gemv(const uint32_t *dP, const uint32_t *dQ, const uint32_t *dW, int ldk, int m, int n, int32_t *dOut,
                    cudaStream_t st) {
  const int blocks = (n + 7) / 8;
  if (m == 1) tb_gemv_direct<1><<<blocks, 256, 0, st>>>(dP, dQ, dW, ldk, m, n, dOut, n);
  else if (m == 2) tb_gemv_direct<2><<<blocks, 256, 0, st>>>(dP, dQ, dW, ldk, m, n, dOut, n);
  else tb_gemv_direct<4><<<blocks, 256, 0, st>>>(dP, dQ, dW, ldk, m, n, dOut, n);
}

bool launch_tb_gemv_smem(const uint32_t *dP, const uint32_t *dQ, const uint32_t *dW, int ldk, int m, int n,
                         int32_t *dOut, cudaStream_t st) {
  const int mt = m <= 8 ? 8 : 16;
  const size_t smem = 2 * (size_t)mt * ldk * 4;
  if (smem > (size_t)g_max_smem_optin) return false;
  const int rpw = 4;
  const int blocks = (n + 8 * rpw - 1) / (8 * rpw);
  if (mt == 8) {
    if (smem > 48 * 1024) cudaFuncSetAttribute(tb_gemv<8>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    tb_gemv<8><<<blocks, 256, smem, st>>>(dP, dQ, dW, ldk, m, n, rpw, dOut, n);
  } else {
    if (smem > 48 * 1024) cudaFuncSetAttribute(tb_gemv<16>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    tb_gemv<16><<<blocks, 256, smem, st>>>(dP, dQ, dW, ldk, m, n, rpw, dOut, n);
  }
  return true;
}

// 4 columns per warp; the activation planes, 8 * ldk bytes, in shared memory. One preloaded chunk per lane
// covers K <= 4096, where the two unused slots of CH = 3 cost 3-8 % (native/test/results/h100-gemv-m1-probe*.txt).
cudaError_t launch_tb_gemv_pdl(const uint32_t *dP, const uint32_t *dQ, const uint32_t *dW, int ldk, int n,
                               int32_t *dOut, cudaStream_t st, GemvEpilogue epi) {
  auto gemv = ldk <= 128 ? tb_gemv_pdl<4, 1, false> : tb_gemv_pdl<4, 3, true>;
  return launch_pdl(gemv, dim3((n + 31) / 32), dim3(256), (size_t)ldk * 8, st, dP, dQ, dW, ldk, n, dOut, epi);
}

void launch_i8_gemv(const int8_t *dA, int lda, const uint32_t *dW, int ldk, int m, int n, int32_t *dOut,
                    cudaStream_t st, GemvEpilogue epi) {
  if (epi.y && m == 1) {
    i8_gemv<1><<<(n + 7) / 8, 256, 0, st>>>(dA, lda, dW, ldk, 1, n, dOut, n, epi);
    return;
  }
  epi = GemvEpilogue{};  // (the fused epilogue is an M = 1 form; larger M store the int32 sums)
  const int blocks = (n + 7) / 8;
  for (int m0 = 0; m0 < m; m0 += 8) {
    const int mm = m - m0 < 8 ? m - m0 : 8;
    const int8_t *a = dA + (size_t)m0 * lda;
    int32_t *o = dOut + (size_t)m0 * n;
    if (mm == 1) i8_gemv<1><<<blocks, 256, 0, st>>>(a, lda, dW, ldk, mm, n, o, n, epi);
    else if (mm <= 2) i8_gemv<2><<<blocks, 256, 0, st>>>(a, lda, dW, ldk, mm, n, o, n, epi);
    else if (mm <= 4) i8_gemv<4><<<blocks, 256, 0, st>>>(a, lda, dW, ldk, mm, n, o, n, epi);
    else i8_gemv<8><<<blocks, 256, 0, st>>>(a, lda, dW, ldk, mm, n, o, n, epi);
  }
}

}  // namespace bwq_gemm
