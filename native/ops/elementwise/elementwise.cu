// Element-wise ops (src/native/transformer-ops.ts):
//   add_bias:  y[r, c] = fl(y[r, c] + bias[c])
//   add:       a[i] = fl(a[i] + b[i])
//   gated_act: gate[i] = fl(fl(act(gate[i])) * up[i]), act evaluated in double and rounded once:
//     SILU x/(1+exp(-x)); GELU 0.5x(1+erf(x/sqrt2)) (exact erf); GELU_TANH 0.5x(1+tanh(sqrt(2/pi)(x+0.044715x^3)));
//     RELU max(x, 0). (The TypeScript reference also evaluates in double; its GELU uses an erf approximation
//     with |error| < 1.2e-7, so GELU may differ from it by an ulp.)
#include "../ops_cuda.cuh"

namespace bwq_ops {
namespace {

__global__ void add_bias_kernel(float *y, int rows, int cols, const float *__restrict__ bias) {
  const size_t total = (size_t)rows * cols;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x)
    y[i] = __fadd_rn(y[i], bias[i % cols]);
}

__global__ void add_kernel(float *a, const float *b, size_t count) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x)
    a[i] = __fadd_rn(a[i], b[i]);
}

// Written with _rn intrinsics so that nvcc forms no FMA: the double rounding steps are those of the CPU's code;
// only exp / erf / tanh (CUDA's against glibc's, both within an ulp or two in double) may differ.
__device__ __forceinline__ double act_of(double x, Act act) {
  switch (act) {
    case Act::SILU: return __ddiv_rn(x, __dadd_rn(1.0, exp(-x)));
    case Act::GELU: return __dmul_rn(__dmul_rn(0.5, x), __dadd_rn(1.0, erf(__ddiv_rn(x, 1.4142135623730951))));
    case Act::GELU_TANH: {
      const double x3 = __dmul_rn(__dmul_rn(__dmul_rn(0.044715, x), x), x);
      const double u = __dmul_rn(0.7978845608028654, __dadd_rn(x, x3));  // sqrt(2/pi) rounded to double
      return __dmul_rn(__dmul_rn(0.5, x), __dadd_rn(1.0, tanh(u)));
    }
    default: return x > 0 ? x : 0.0;
  }
}

__global__ void gated_act_kernel(float *gate, const float *up, size_t count, Act act) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x)
    gate[i] = __fmul_rn(__double2float_rn(act_of((double)gate[i], act)), up[i]);
}

}  // namespace

cudaError_t add_bias(float *y, int rows, int cols, const float *bias, cudaStream_t st) {
  add_bias_kernel<<<grid_1d((size_t)rows * cols), 256, 0, st>>>(y, rows, cols, bias);
  return cudaGetLastError();
}

cudaError_t add(float *a, const float *b, size_t count, cudaStream_t st) {
  add_kernel<<<grid_1d(count), 256, 0, st>>>(a, b, count);
  return cudaGetLastError();
}

cudaError_t gated_act(float *gate, const float *up, size_t count, Act act, cudaStream_t st) {
  gated_act_kernel<<<grid_1d(count), 256, 0, st>>>(gate, up, count, act);
  return cudaGetLastError();
}

}  // namespace bwq_ops
