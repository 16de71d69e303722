// Row gathers:
//   embed:       out[r, :] = float(table[ids[r], :])   (BF16: bits << 16; F16: exact widening; F32: copy)
//   gather_rows: dst[i, :] = src[index[i], :]          (index already on the device)
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "../ops_cuda.cuh"

namespace bwq_ops {
namespace {

template <class T>
__device__ __forceinline__ float to_float(T v);
template <>
__device__ __forceinline__ float to_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <>
__device__ __forceinline__ float to_float<__half>(__half v) { return __half2float(v); }

template <class T>
__global__ void embed_kernel(const int32_t *__restrict__ ids, int rows, const T *__restrict__ table, int hidden,
                             float *__restrict__ out) {
  const size_t total = (size_t)rows * hidden;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
    const size_t r = i / hidden, c = i - r * hidden;
    out[i] = to_float(table[(size_t)ids[r] * hidden + c]);
  }
}

__global__ void gather_kernel(const float *__restrict__ src, int cols, const int *__restrict__ index, int count,
                              float *__restrict__ dst) {
  const size_t total = (size_t)count * cols;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
    const size_t r = i / cols, c = i - r * cols;
    dst[i] = src[(size_t)index[r] * cols + c];
  }
}

}  // namespace

cudaError_t embed(const int32_t *ids, int rows, const void *table, DType dtype, int hidden, float *out,
                  cudaStream_t st) {
  const unsigned g = grid_1d((size_t)rows * hidden);
  if (dtype == DType::BF16)
    embed_kernel<<<g, 256, 0, st>>>(ids, rows, (const __nv_bfloat16 *)table, hidden, out);
  else if (dtype == DType::F16)
    embed_kernel<<<g, 256, 0, st>>>(ids, rows, (const __half *)table, hidden, out);
  else
    embed_kernel<<<g, 256, 0, st>>>(ids, rows, (const float *)table, hidden, out);
  return cudaGetLastError();
}

cudaError_t gather_rows(const float *src, int cols, const int *index, int count, float *dst, cudaStream_t st) {
  gather_kernel<<<grid_1d((size_t)count * cols), 256, 0, st>>>(src, cols, index, count, dst);
  return cudaGetLastError();
}

}  // namespace bwq_ops
