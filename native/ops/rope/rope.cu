// RoPE (rotate_half form, src/native/rope.ts) in place on x [rows, heads*head_dim]; row r has position pos[r]:
//   angle = fl(pos * inv_freq[i]), c = fl(cos angle), s = fl(sin angle)   (cos/sin in double)
//   x'_i = fl(x_i c) - fl(x_{i+half} s),  x'_{i+half} = fl(x_{i+half} c) + fl(x_i s),   i < half
// One thread per (row, head, i).
#include "../ops_cuda.cuh"

namespace bwq_ops {
namespace {

__global__ void rope_kernel(float *x, int rows, int heads, int head_dim, const float *__restrict__ inv_freq,
                            int half, const int32_t *__restrict__ positions) {
  const size_t total = (size_t)rows * heads * half;
  for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < total; t += (size_t)gridDim.x * blockDim.x) {
    const int i = (int)(t % half);
    const size_t rh = t / half;  // row * heads + head
    const size_t r = rh / heads;
    const float angle = __fmul_rn((float)positions[r], inv_freq[i]);
    double sd, cd;
    sincos((double)angle, &sd, &cd);
    const float c = __double2float_rn(cd), s = __double2float_rn(sd);
    float *p = x + rh * head_dim;
    const float a = p[i], b = p[i + half];
    p[i] = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
    p[i + half] = __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s));
  }
}

}  // namespace

cudaError_t rope(float *x, int rows, int heads, int head_dim, const float *inv_freq, int half,
                 const int32_t *positions, cudaStream_t st) {
  rope_kernel<<<grid_1d((size_t)rows * heads * half), 256, 0, st>>>(x, rows, heads, head_dim, inv_freq, half,
                                                                    positions);
  return cudaGetLastError();
}

}  // namespace bwq_ops
