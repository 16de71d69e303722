// Linear-layer pieces around the packed GEMMs (which live in native/ops/gemm):
//   packed_epilogue:     y[m, n] = fl(s[m] * wscale[n] * acc[m, n]), the product in double, left to right
//                        (INT8PAIR: acc = 256*acc_high + acc_low, exact in double)
//   float_binary_linear: y[m, n] = fl(wscale[n] * sum_k x[m,k] B[n,k]), float32 accumulation in ascending k
//                        (64x64 output tiles, 32 k per step; B bits unpacked on the fly)
//   mask_last_word:      clears the bits >= k of each row's last word (dirty padding of uploaded weights)
//   convert_rows:        a rounded to BF16 / F16 (round to nearest even) for cuBLAS
//   split_tf32:          x = hi + lo, hi = x rounded to TF32 (10-bit mantissa, to nearest, ties away), lo = x - hi
//                        (exact): the Gram matrix as three TF32 tensor-core products (cuda_backend.cu gram)
//   gemm_simple:         c[m, n] (+)= sum_k a[m,k] W[n,k], float32 accumulation (when cuBLAS is missing)
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "../ops_cuda.cuh"

namespace bwq_ops {
namespace {

__global__ void mask_kernel(uint32_t *w, int rows, int ldk, int kw, uint32_t mask) {
  const int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r < rows) w[(size_t)r * ldk + kw - 1] &= mask;
}

template <class A, bool PAIR>
__global__ void epilogue_kernel(const A *__restrict__ acc, int rows, int n, const float *__restrict__ s,
                                const float *__restrict__ wscale, float *__restrict__ y) {
  const size_t total = (size_t)rows * n;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
    const size_t m = i / n, j = i - m * n;
    const double a = PAIR ? 256.0 * (double)acc[i] + (double)acc[total + i] : (double)acc[i];
    y[i] = __double2float_rn(__dmul_rn(__dmul_rn((double)s[m], (double)wscale[j]), a));
  }
}

constexpr int FB_T = 64;  // output tile FB_T x FB_T, 256 threads of 4x4 outputs
__global__ void __launch_bounds__(256) float_binary_kernel(const float *__restrict__ x, int rows, int k,
                                                           const uint32_t *__restrict__ w, int ldw, int n,
                                                           const float *__restrict__ wscale, float *__restrict__ y) {
  __shared__ float xs[FB_T][33];
  __shared__ uint32_t ws[FB_T];
  const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
  const int r0 = blockIdx.y * FB_T, c0 = blockIdx.x * FB_T;
  float acc[4][4] = {};
  for (int k0 = 0; k0 < k; k0 += 32) {
    for (int e = threadIdx.x; e < FB_T * 32; e += 256) {
      const int rr = e >> 5, kk = e & 31;
      xs[rr][kk] = (r0 + rr < rows && k0 + kk < k) ? x[(size_t)(r0 + rr) * k + k0 + kk] : 0.0f;
    }
    if (threadIdx.x < FB_T) ws[threadIdx.x] = c0 + threadIdx.x < n ? w[(size_t)(c0 + threadIdx.x) * ldw + k0 / 32] : 0u;
    __syncthreads();
    const int kmax = k - k0 < 32 ? k - k0 : 32;
    for (int kk = 0; kk < kmax; ++kk) {
      float xv[4];
      for (int i = 0; i < 4; ++i) xv[i] = xs[ty * 4 + i][kk];
      for (int c = 0; c < 4; ++c) {
        const bool plus = (ws[tx + 16 * c] >> kk) & 1u;
        for (int i = 0; i < 4; ++i) acc[i][c] = __fadd_rn(acc[i][c], plus ? xv[i] : -xv[i]);
      }
    }
    __syncthreads();
  }
  for (int i = 0; i < 4; ++i) {
    const int r = r0 + ty * 4 + i;
    if (r >= rows) continue;
    for (int c = 0; c < 4; ++c) {
      const int col = c0 + tx + 16 * c;
      if (col < n) y[(size_t)r * n + col] = __fmul_rn(wscale[col], acc[i][c]);
    }
  }
}

__device__ __forceinline__ void store_rn(__half *p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ void store_rn(__nv_bfloat16 *p, float v) { *p = __float2bfloat16_rn(v); }

template <class T>
__global__ void convert_kernel(const float *__restrict__ a, int m, int k, int lda, T *__restrict__ out) {
  const size_t total = (size_t)m * k;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
    const size_t r = i / k, c = i - r * k;
    store_rn(out + i, a[r * lda + c]);
  }
}

template <class T>
__device__ __forceinline__ float wload(const T *w, size_t i);
template <>
__device__ __forceinline__ float wload<float>(const float *w, size_t i) { return w[i]; }
template <>
__device__ __forceinline__ float wload<__nv_bfloat16>(const __nv_bfloat16 *w, size_t i) {
  return __bfloat162float(w[i]);
}
template <>
__device__ __forceinline__ float wload<__half>(const __half *w, size_t i) { return __half2float(w[i]); }

template <class T>
__global__ void gemm_simple_kernel(const float *__restrict__ a, int m, int lda, const T *__restrict__ w, int n, int k,
                                   float *__restrict__ c, int ldc, bool accumulate) {
  __shared__ float as[16][17], wsh[16][17];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int row = blockIdx.y * 16 + ty, col = blockIdx.x * 16 + tx;
  float acc = 0.0f;
  for (int k0 = 0; k0 < k; k0 += 16) {
    as[ty][tx] = row < m && k0 + tx < k ? a[(size_t)row * lda + k0 + tx] : 0.0f;
    const int wr = blockIdx.x * 16 + ty;
    wsh[ty][tx] = wr < n && k0 + tx < k ? wload(w, (size_t)wr * k + k0 + tx) : 0.0f;
    __syncthreads();
    for (int kk = 0; kk < 16; ++kk) acc = fmaf(as[ty][kk], wsh[tx][kk], acc);
    __syncthreads();
  }
  if (row < m && col < n) {
    float *p = c + (size_t)row * ldc + col;
    *p = accumulate ? *p + acc : acc;
  }
}

// h[i, j] += sum_r x[r, i] x[r, j] for a 16 x 16 tile of h (x [rows, cols] row-major), float accumulation.
__global__ void gram_simple_kernel(const float *__restrict__ x, int rows, int cols, float *__restrict__ h) {
  __shared__ float xi[16][17], xj[16][17];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int i = blockIdx.y * 16 + ty, j = blockIdx.x * 16 + tx;
  float acc = 0.0f;
  for (int r0 = 0; r0 < rows; r0 += 16) {
    // xi[rr][c] = x[r0 + rr, tile-row column c], xj[rr][c] = x[r0 + rr, tile-column column c]
    const int ci = blockIdx.y * 16 + tx, cj = blockIdx.x * 16 + tx, r = r0 + ty;
    xi[ty][tx] = r < rows && ci < cols ? x[(size_t)r * cols + ci] : 0.0f;
    xj[ty][tx] = r < rows && cj < cols ? x[(size_t)r * cols + cj] : 0.0f;
    __syncthreads();
    for (int rr = 0; rr < 16; ++rr) acc = fmaf(xi[rr][ty], xj[rr][tx], acc);
    __syncthreads();
  }
  if (i < cols && j < cols) h[(size_t)i * cols + j] += acc;
}

__global__ void split_tf32_kernel(const float *__restrict__ x, size_t n, float *__restrict__ hi,
                                  float *__restrict__ lo) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    const float v = x[i];
    uint32_t t;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(t) : "f"(v));
    const float h = __uint_as_float(t);
    hi[i] = h;
    lo[i] = __fsub_rn(v, h);
  }
}

}  // namespace

cudaError_t split_tf32(const float *x, size_t n, float *hi, float *lo, cudaStream_t st) {
  split_tf32_kernel<<<grid_1d(n), 256, 0, st>>>(x, n, hi, lo);
  return cudaGetLastError();
}

cudaError_t gram_simple(const float *x, int rows, int cols, float *h, cudaStream_t st) {
  const dim3 grid((cols + 15) / 16, (cols + 15) / 16), block(16, 16);
  gram_simple_kernel<<<grid, block, 0, st>>>(x, rows, cols, h);
  return cudaGetLastError();
}

cudaError_t mask_last_word(uint32_t *w, int rows, int ldk, int k, cudaStream_t st) {
  if (k % 32 == 0 || rows == 0) return cudaSuccess;
  mask_kernel<<<(rows + 255) / 256, 256, 0, st>>>(w, rows, ldk, (k + 31) / 32, (1u << (k % 32)) - 1u);
  return cudaGetLastError();
}

cudaError_t packed_epilogue(const void *acc, bool acc16, bool pair, int rows, int n, const float *s,
                            const float *wscale, float *y, cudaStream_t st) {
  const unsigned g = grid_1d((size_t)rows * n);
  if (pair) epilogue_kernel<int32_t, true><<<g, 256, 0, st>>>((const int32_t *)acc, rows, n, s, wscale, y);
  else if (acc16) epilogue_kernel<int16_t, false><<<g, 256, 0, st>>>((const int16_t *)acc, rows, n, s, wscale, y);
  else epilogue_kernel<int32_t, false><<<g, 256, 0, st>>>((const int32_t *)acc, rows, n, s, wscale, y);
  return cudaGetLastError();
}

cudaError_t float_binary_linear(const float *x, int rows, int k, const uint32_t *w, int ldw, int n,
                                const float *wscale, float *y, cudaStream_t st) {
  const dim3 grid((n + FB_T - 1) / FB_T, (rows + FB_T - 1) / FB_T);
  float_binary_kernel<<<grid, 256, 0, st>>>(x, rows, k, w, ldw, n, wscale, y);
  return cudaGetLastError();
}

cudaError_t convert_rows(const float *a, int m, int k, int lda, DType dtype, void *out, cudaStream_t st) {
  const unsigned g = grid_1d((size_t)m * k);
  if (dtype == DType::F16) convert_kernel<__half><<<g, 256, 0, st>>>(a, m, k, lda, (__half *)out);
  else convert_kernel<__nv_bfloat16><<<g, 256, 0, st>>>(a, m, k, lda, (__nv_bfloat16 *)out);
  return cudaGetLastError();
}

cudaError_t gemm_simple(const float *a, int m, int lda, const void *w, DType dtype, int n, int k, float *c, int ldc,
                        bool accumulate, cudaStream_t st) {
  const dim3 grid((n + 15) / 16, (m + 15) / 16), block(16, 16);
  if (dtype == DType::BF16)
    gemm_simple_kernel<<<grid, block, 0, st>>>(a, m, lda, (const __nv_bfloat16 *)w, n, k, c, ldc, accumulate);
  else if (dtype == DType::F16)
    gemm_simple_kernel<<<grid, block, 0, st>>>(a, m, lda, (const __half *)w, n, k, c, ldc, accumulate);
  else
    gemm_simple_kernel<<<grid, block, 0, st>>>(a, m, lda, (const float *)w, n, k, c, ldc, accumulate);
  return cudaGetLastError();
}

}  // namespace bwq_ops
