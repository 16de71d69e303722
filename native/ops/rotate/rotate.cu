// Online Kronecker rotation per row (src/native/quant-linear.ts rotateRows), K = a*b, X = x[r] as [a, b]:
//   T = X R2          T[p, j] = sum_q X[p, q] R2[q, j]       (written to tmp)
//   Y = R1^T T        Y[i, j] = sum_p R1[p, i] T[p, j]
// float32 accumulation (one FMA chain per output, ascending q / p), like the reference's float GEMMs up to
// summation order. One block per row; the row (then T) sits in shared memory when K floats fit, else both
// phases read global memory.
#include "../ops_cuda.cuh"

namespace bwq_ops {
namespace {

template <bool SMEM>
__global__ void __launch_bounds__(256) kron_kernel(const float *__restrict__ x, int a, int b,
                                                   const float *__restrict__ r1, const float *__restrict__ r2,
                                                   float *__restrict__ tmp, float *__restrict__ y) {
  extern __shared__ float sm[];
  const int K = a * b;
  const size_t off = (size_t)blockIdx.x * K;
  const float *X = x + off;
  float *T = tmp + off;
  if (SMEM) {
    for (int i = threadIdx.x; i < K; i += blockDim.x) sm[i] = X[i];
    __syncthreads();
    X = sm;
  }
  for (int o = threadIdx.x; o < K; o += blockDim.x) {
    const int p = o / b, j = o - p * b;
    const float *xp = X + (size_t)p * b;
    float acc = 0.0f;
    for (int q = 0; q < b; ++q) acc = fmaf(xp[q], r2[(size_t)q * b + j], acc);
    T[o] = acc;
  }
  __syncthreads();  // T (global) complete and visible to the block
  const float *Ts = T;
  if (SMEM) {
    for (int i = threadIdx.x; i < K; i += blockDim.x) sm[i] = T[i];
    __syncthreads();
    Ts = sm;
  }
  for (int o = threadIdx.x; o < K; o += blockDim.x) {
    const int i = o / b, j = o - i * b;
    float acc = 0.0f;
    for (int p = 0; p < a; ++p) acc = fmaf(r1[(size_t)p * a + i], Ts[(size_t)p * b + j], acc);
    y[off + o] = acc;
  }
}

}  // namespace

cudaError_t kron_rotate(const float *x, int rows, int a, int b, const float *r1, const float *r2, float *tmp,
                        float *y, int max_smem, cudaStream_t st) {
  const size_t smem = (size_t)a * b * sizeof(float);
  if (smem <= (size_t)max_smem) {
    if (smem > 48 * 1024) {
      const cudaError_t e = cudaFuncSetAttribute(kron_kernel<true>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                 (int)smem);
      if (e != cudaSuccess) return e;
    }
    kron_kernel<true><<<rows, 256, smem, st>>>(x, a, b, r1, r2, tmp, y);
  } else {
    kron_kernel<false><<<rows, 256, 0, st>>>(x, a, b, r1, r2, tmp, y);
  }
  return cudaGetLastError();
}

}  // namespace bwq_ops
