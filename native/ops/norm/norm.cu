// RMSNorm per row (transformers' LlamaRMSNorm order, src/native/transformer-ops.ts rmsNormRows):
//   ms  = fl(sum_j x_j^2 / cols)            (x_j^2 exact in double, the sum in double)
//   inv = 1 / sqrt((double)ms + eps)        (double)
//   y_j = fl(x_j * inv), then fl(w_j * y_j) when w is given.
// One block per row; y may be x (each element is read before it is written, by the same thread). For few rows
// (decoding) the row is held in registers (rms_norm_regs): one read of x, all loads in flight together.
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

__global__ void __launch_bounds__(1024) rms_norm_regs(const float *x, int cols, const float *__restrict__ w, float eps,
                                                       float *y) {
  const float *xr = x + (size_t)blockIdx.x * cols;
  float *yr = y + (size_t)blockIdx.x * cols;
  float v[ROW_REGS];
#pragma unroll
  for (int u = 0; u < ROW_REGS; ++u) {
    const int j = threadIdx.x + u * blockDim.x;
    v[u] = j < cols ? xr[j] : 0.0f;
  }
  double ss = 0;
#pragma unroll
  for (int u = 0; u < ROW_REGS; ++u) ss += (double)v[u] * (double)v[u];
  ss = block_sum(ss);
  const float ms = __double2float_rn(__ddiv_rn(ss, (double)cols));
  const double inv = __ddiv_rn(1.0, __dsqrt_rn(__dadd_rn((double)ms, (double)eps)));
#pragma unroll
  for (int u = 0; u < ROW_REGS; ++u) {
    const int j = threadIdx.x + u * blockDim.x;
    if (j < cols) {
      const float n = __double2float_rn(__dmul_rn((double)v[u], inv));
      yr[j] = w ? __fmul_rn(w[j], n) : n;
    }
  }
}

}  // namespace

cudaError_t rms_norm(const float *x, int rows, int cols, const float *w, float eps, float *y, cudaStream_t st) {
  if (rows <= 64 && row_threads(cols) > 0) {
    rms_norm_regs<<<rows, row_threads(cols), 0, st>>>(x, cols, w, eps, y);
    return cudaGetLastError();
  }
  const int threads = cols >= 1024 ? 256 : cols >= 256 ? 128 : 64;
  rms_norm_kernel<<<rows, threads, 0, st>>>(x, cols, w, eps, y);
  return cudaGetLastError();
}

}  // namespace bwq_ops
