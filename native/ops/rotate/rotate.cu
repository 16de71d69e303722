// Online rotation per row (src/native/quant-linear.ts rotateRows), row width K = a*b + rem, X = x[r][0, a*b) as [a, b]:
//   T = X R2          T[p, j] = sum_q X[p, q] R2[q, j]       (written to tmp)
//   Y = R1^T T        Y[i, j] = sum_p R1[p, i] T[p, j]
//   y[r][a*b + j] = sum_q x[r][a*b + q] R3[q, j]             (remainder block, rem > 0 only)
// float32 accumulation, one FMA chain per output in ascending q / p (the CPU's order). Two kernels (three with a
// remainder), each with one thread per output element (blocks of 128 consecutive outputs of one row), so that even
// one row (decoding) spreads over K/128 blocks; X, R1, R2 and T are read through the caches (within a warp, X[p, q]
// and R1[p, i] are broadcasts and R2 / T rows coalesced).
#include "../ops_cuda.cuh"

namespace bwq_ops {
namespace {

constexpr int ROT_THREADS = 128;

// T[p, j] for the outputs o = p*b + j of this block (row blockIdx.y, row stride ld)
__global__ void __launch_bounds__(ROT_THREADS) kron_t_kernel(const float *__restrict__ x, int a, int b, int ld,
                                                             const float *__restrict__ r2, float *__restrict__ tmp) {
  const int K = a * b, o = blockIdx.x * ROT_THREADS + threadIdx.x;
  if (o >= K) return;
  const size_t off = (size_t)blockIdx.y * ld;
  const int p = o / b, j = o - p * b;
  const float *xp = x + off + (size_t)p * b;
  float acc = 0.0f;
  for (int q = 0; q < b; ++q) acc = fmaf(xp[q], r2[(size_t)q * b + j], acc);
  tmp[off + o] = acc;
}

// Y[i, j] for the outputs o = i*b + j of this block (row blockIdx.y, row stride ld)
__global__ void __launch_bounds__(ROT_THREADS) kron_y_kernel(const float *__restrict__ tmp, int a, int b, int ld,
                                                             const float *__restrict__ r1, float *__restrict__ y) {
  const int K = a * b, o = blockIdx.x * ROT_THREADS + threadIdx.x;
  if (o >= K) return;
  const size_t off = (size_t)blockIdx.y * ld;
  const int i = o / b, j = o - i * b;
  const float *T = tmp + off + j;
  float acc = 0.0f;
  for (int p = 0; p < a; ++p) acc = fmaf(r1[(size_t)p * a + i], T[(size_t)p * b], acc);
  y[off + o] = acc;
}

// y[m + j] = sum_q x[m + q] R3[q, j] for the remainder outputs j of this block (row blockIdx.y, m = a*b)
__global__ void __launch_bounds__(ROT_THREADS) kron_rem_kernel(const float *__restrict__ x, int m, int rem, int ld,
                                                               const float *__restrict__ r3, float *__restrict__ y) {
  const int j = blockIdx.x * ROT_THREADS + threadIdx.x;
  if (j >= rem) return;
  const size_t off = (size_t)blockIdx.y * ld + m;
  float acc = 0.0f;
  for (int q = 0; q < rem; ++q) acc = fmaf(x[off + q], r3[(size_t)q * rem + j], acc);
  y[off + j] = acc;
}

}  // namespace

cudaError_t kron_rotate(const float *x, int rows, int a, int b, int rem, const float *r1, const float *r2,
                        const float *r3, float *tmp, float *y, int max_smem, cudaStream_t st) {
  (void)max_smem;
  const int m = a * b, ld = m + rem;
  for (int r0 = 0; r0 < rows; r0 += 65535) {  // grid.y limit
    const int n = rows - r0 < 65535 ? rows - r0 : 65535;
    const dim3 grid((m + ROT_THREADS - 1) / ROT_THREADS, n);
    kron_t_kernel<<<grid, ROT_THREADS, 0, st>>>(x + (size_t)r0 * ld, a, b, ld, r2, tmp + (size_t)r0 * ld);
    kron_y_kernel<<<grid, ROT_THREADS, 0, st>>>(tmp + (size_t)r0 * ld, a, b, ld, r1, y + (size_t)r0 * ld);
    if (rem > 0) {
      const dim3 rgrid((rem + ROT_THREADS - 1) / ROT_THREADS, n);
      kron_rem_kernel<<<rgrid, ROT_THREADS, 0, st>>>(x + (size_t)r0 * ld, m, rem, ld, r3, y + (size_t)r0 * ld);
    }
  }
  return cudaGetLastError();
}

}  // namespace bwq_ops
