// RMSNorm per row (transformers' LlamaRMSNorm order, src/native/transformer-ops.ts rmsNormRows):
//   ms  = fl(sum_j x_j^2 / cols)            (x_j^2 exact in double, the sum in double)
//   inv = 1 / sqrt((double)ms + eps)        (double)
//   y_j = fl(x_j * inv), then fl(w_j * y_j) when w is given.
// One block per row; y may be x (each element is read before it is written, by the same thread).
#include "../ops_cuda.cuh"

namespace bwq_ops {
namespace {

__global__ void __launch_bounds__(256) rms_norm_kernel(const float *x, int cols, const float *__restrict__ w,
                                                       float eps, float *y) {
  const float *xr = x + (size_t)blockIdx.x * cols;
  float *yr = y + (size_t)blockIdx.x * cols;
  double ss = 0;
  for (int j = threadIdx.x; j < cols; j += blockDim.x) {
    const double v = xr[j];
    ss += v * v;  // exact product, so an FMA rounds the same
  }
  ss = block_sum(ss);
  const float ms = __double2float_rn(__ddiv_rn(ss, (double)cols));
  const double inv = __ddiv_rn(1.0, __dsqrt_rn(__dadd_rn((double)ms, (double)eps)));
  for (int j = threadIdx.x; j < cols; j += blockDim.x) {
    const float v = __double2float_rn(__dmul_rn((double)xr[j], inv));
    yr[j] = w ? __fmul_rn(w[j], v) : v;
  }
}

}  // namespace

cudaError_t rms_norm(const float *x, int rows, int cols, const float *w, float eps, float *y, cudaStream_t st) {
  const int threads = cols >= 1024 ? 256 : cols >= 256 ? 128 : 64;
  rms_norm_kernel<<<rows, threads, 0, st>>>(x, cols, w, eps, y);
  return cudaGetLastError();
}

}  // namespace bwq_ops
