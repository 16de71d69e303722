// CUDA ops of bwq's compute engine: the host launchers of native/ops/<family>/<family>.cu (device pointers,
// one stream; each returns cudaGetLastError() after its launches), and the device helpers several families
// share (block reductions, the activation quantizers of backend.h per row). cuda_backend.cu calls these.
// Semantics (float32 rounding points) are those of native/runtime/backend.h; fl(.) = round to float32. Float
// arithmetic that must round as documented is written with the _rn intrinsics, which nvcc never contracts
// into FMAs.
#ifndef BWQ_OPS_CUDA_CUH
#define BWQ_OPS_CUDA_CUH

#include <cuda_runtime.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "../runtime/backend.h"

namespace bwq_ops {

using bwq::rt::Act;
using bwq::rt::CodeForm;
using bwq::rt::DType;
using bwq::rt::QKind;
using bwq::rt::Quantizer;

// code_form(q) of backend.h (kept local: libbwq_cuda.so does not link the CPU backend).
inline CodeForm form_of(const Quantizer &q) {
  switch (q.kind) {
    case QKind::INT: return q.bits <= 8 ? CodeForm::INT8 : q.bits <= 15 ? CodeForm::INT8PAIR : CodeForm::FLOAT;
    case QKind::TERNARY: return CodeForm::TERNARY;
    case QKind::BINARY: return CodeForm::INT8;
    default: return CodeForm::FLOAT;
  }
}
// Quantizers whose codes the attention kernel dots as integers (int8 codes in the KV cache).
inline bool has_int_codes(const Quantizer &q) {
  return (q.kind == QKind::INT && q.bits <= 8) || q.kind == QKind::TERNARY || q.kind == QKind::BINARY;
}

// Blocks for a grid-stride loop over `count` items with `block` threads each.
inline unsigned grid_1d(size_t count, int block = 256) {
  const size_t g = (count + block - 1) / block;
  return (unsigned)(g < 1 ? 1 : g > (1u << 20) ? (1u << 20) : g);
}

// ---- embed.cu
cudaError_t embed(const int32_t *ids, int rows, const void *table, DType dtype, int hidden, float *out,
                  cudaStream_t st);
cudaError_t gather_rows(const float *src, int cols, const int *index, int count, float *dst, cudaStream_t st);
// ---- norm.cu
cudaError_t rms_norm(const float *x, int rows, int cols, const float *w, float eps, float *y, cudaStream_t st);
// ---- rope.cu
cudaError_t rope(float *x, int rows, int heads, int head_dim, const float *inv_freq, int half,
                 const int32_t *positions, cudaStream_t st);
// ---- rotate.cu (max_smem: the device's opt-in limit of dynamic shared memory per block)
// row width K = a*b + rem; the last rem entries of a row are multiplied by R3 [rem, rem] (rem = 0: none).
cudaError_t kron_rotate(const float *x, int rows, int a, int b, int rem, const float *r1, const float *r2,
                        const float *r3, float *tmp, float *y, int max_smem, cudaStream_t st);
// ---- quantize.cu: codes in the padded layout of Codes (i8/i8_low row stride ld_bytes, planes ld_words).
cudaError_t quantize(const float *x, int rows, int cols, const Quantizer &q, const bwq::rt::Codes &codes,
                     float *x_hat, cudaStream_t st);
// ---- linear.cu
// Clears the bits >= k of the last word of each of `rows` rows (stride ldk words).
cudaError_t mask_last_word(uint32_t *w, int rows, int ldk, int k, cudaStream_t st);
// y[m, n] = fl(s[m] * wscale[n] * acc[m, n]) in double; acc int32 or (acc16) int16 [rows, n]; with pair, acc is
// [2, rows, n] int32 (high sums, then low sums) and acc = 256*high + low.
cudaError_t packed_epilogue(const void *acc, bool acc16, bool pair, int rows, int n, const float *s,
                            const float *wscale, float *y, cudaStream_t st);
cudaError_t float_binary_linear(const float *x, int rows, int k, const uint32_t *w, int ldw, int n,
                                const float *wscale, float *y, cudaStream_t st);
// out [m, k] (compact) = a [m, k] (row stride lda) rounded to BF16 / F16.
cudaError_t convert_rows(const float *a, int m, int k, int lda, DType dtype, void *out, cudaStream_t st);
// c[m, n] (+)= sum_k a[m,k] W[n,k] with float accumulation, for when cuBLAS is not available.
cudaError_t gemm_simple(const float *a, int m, int lda, const void *w, DType dtype, int n, int k, float *c, int ldc,
                        bool accumulate, cudaStream_t st);
// h[cols, cols] += x^T x (x [rows, cols]) with float accumulation, for when cuBLAS is not available.
cudaError_t gram_simple(const float *x, int rows, int cols, float *h, cudaStream_t st);
cudaError_t split_tf32(const float *x, size_t n, float *hi, float *lo, cudaStream_t st);
// ---- elementwise.cu
cudaError_t add_bias(float *y, int rows, int cols, const float *bias, cudaStream_t st);
cudaError_t add(float *a, const float *b, size_t count, cudaStream_t st);
cudaError_t gated_act(float *gate, const float *up, size_t count, Act act, cudaStream_t st);
// ---- attention.cu
cudaError_t kv_store(const bwq::rt::KvLayer &kv, const float *k, const float *v, int batch, int t, int pos0,
                     const Quantizer &key, const Quantizer &value, cudaStream_t st);
// Scratch: attention_scratch_floats() floats of global memory when the scores of a row do not fit in shared
// memory (0 otherwise); the kernel then runs on at most that many / S blocks.
size_t attention_scratch_floats(const bwq::rt::AttentionShape &shape, const bwq::rt::KvLayer &kv, int max_smem,
                                int num_sms);
cudaError_t attention(const float *q, const bwq::rt::KvLayer &kv, const bwq::rt::AttentionShape &shape,
                      const bwq::rt::AttentionRecipe &r, float *ctx, float *scratch, int max_smem, int num_sms,
                      cudaStream_t st);
// ---- loss.cu
cudaError_t nll_rows(const float *logits, int rows, int vocab, const int32_t *targets, double *nll,
                     cudaStream_t st);

// =============================================================================================
// Device helpers shared by the families (header-only: no device code crosses translation units).
#ifdef __CUDACC__

template <class T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int o = 16; o; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Block-wide reductions (blockDim.x a multiple of 32, at most 1024; every thread calls, every thread gets the
// result). The order is fixed for a given block size, so results are reproducible.
template <class T>
__device__ __forceinline__ T block_sum(T v) {
  __shared__ T buf[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_sum(v);
  if (lane == 0) buf[warp] = v;
  __syncthreads();
  if (warp == 0) {
    T s = lane < nw ? buf[lane] : T(0);
    s = warp_sum(s);
    if (lane == 0) buf[0] = s;
  }
  __syncthreads();
  const T r = buf[0];
  __syncthreads();
  return r;
}
__device__ __forceinline__ float block_max(float v) {
  __shared__ float buf[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_max(v);
  if (lane == 0) buf[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float s = lane < nw ? buf[lane] : -INFINITY;
    s = warp_max(s);
    if (lane == 0) buf[0] = s;
  }
  __syncthreads();
  const float r = buf[0];
  __syncthreads();
  return r;
}

// Per-row constants of an activation quantizer (backend.h):
//   INT:     s = fl(fl(param*max|x|)/qmax), 1 when max = 0 (max is exact, whatever the order)
//   TERNARY: delta = fl(param * fl(fl(sum|x|)/n)), s = fl(fl(sum_{|x|>delta}|x|)/count), 0 if none
//   BINARY:  s = fl(fl(sum|x|)/n)
// Sums of |x| are accumulated in double, in a different order than the CPU's: fl(sum) is the same except in
// the (rare) case where the two double sums differ and straddle a float rounding boundary.
struct RowQuant {
  float s, delta;
};

// The constants from the row's reductions (every thread holds the block-wide value).
__device__ __forceinline__ float int_row_scale(const Quantizer &q, float max_abs) {
  const float qmax = (float)((1 << (q.bits - 1)) - 1);
  return max_abs == 0.0f ? 1.0f : __fdiv_rn(__fmul_rn(q.param, max_abs), qmax);
}
__device__ __forceinline__ float mean_abs(double sum, int n) { return __fdiv_rn(__double2float_rn(sum), (float)n); }
__device__ __forceinline__ float kept_scale(double kept, int count) {
  return count == 0 ? 0.0f : __fdiv_rn(__double2float_rn(kept), (float)count);
}

// The row is x[j] = get(j) for j in [lo, hi) and zeros elsewhere in [0, n) (attention's masked probabilities).
template <class Get>
__device__ RowQuant block_row_quant(const Quantizer &q, int n, int lo, int hi, Get get) {
  RowQuant r{1.0f, 0.0f};
  if (q.kind == QKind::INT) {
    float m = 0.0f;
    for (int j = lo + threadIdx.x; j < hi; j += blockDim.x) m = fmaxf(m, fabsf(get(j)));  // NaN ignored
    r.s = int_row_scale(q, block_max(m));
  } else if (q.kind == QKind::TERNARY || q.kind == QKind::BINARY) {
    double sum = 0;
    for (int j = lo + threadIdx.x; j < hi; j += blockDim.x) sum += (double)fabsf(get(j));
    const float mean = mean_abs(block_sum(sum), n);
    if (q.kind == QKind::BINARY) {
      r.s = mean;
    } else {
      r.delta = __fmul_rn(q.param, mean);
      double kept = 0;
      int count = 0;
      for (int j = lo + threadIdx.x; j < hi; j += blockDim.x) {
        const float a = fabsf(get(j));
        if (a > r.delta) kept += (double)a, ++count;
      }
      kept = block_sum(kept);
      count = block_sum(count);
      if (0.0f > r.delta) count += n - (hi - lo);  // the implicit zeros pass a negative threshold
      r.s = kept_scale(kept, count);
    }
  }
  return r;
}

// block_row_quant for a row held in registers: thread t holds x[t + u * blockDim.x] in v[u] (u < V; entries at or
// beyond cols are ignored). The row's values are read from memory once, and all of a thread's loads are in
// flight together (the decoding kernels, where one row is latency-bound).
template <int V>
__device__ RowQuant block_row_quant_regs(const Quantizer &q, int cols, const float (&v)[V]) {
  RowQuant r{1.0f, 0.0f};
  if (q.kind == QKind::INT) {
    float m = 0.0f;
#pragma unroll
    for (int u = 0; u < V; ++u)
      if (threadIdx.x + u * blockDim.x < cols) m = fmaxf(m, fabsf(v[u]));  // NaN ignored
    r.s = int_row_scale(q, block_max(m));
  } else if (q.kind == QKind::TERNARY || q.kind == QKind::BINARY) {
    double sum = 0;
#pragma unroll
    for (int u = 0; u < V; ++u)
      if (threadIdx.x + u * blockDim.x < cols) sum += (double)fabsf(v[u]);
    const float mean = mean_abs(block_sum(sum), cols);
    if (q.kind == QKind::BINARY) {
      r.s = mean;
    } else {
      r.delta = __fmul_rn(q.param, mean);
      double kept = 0;
      int count = 0;
#pragma unroll
      for (int u = 0; u < V; ++u) {
        const float a = fabsf(v[u]);
        if (threadIdx.x + u * blockDim.x < cols && a > r.delta) kept += (double)a, ++count;
      }
      kept = block_sum(kept);
      count = block_sum(count);
      r.s = kept_scale(kept, count);
    }
  }
  return r;
}

// Threads per row of the register-resident row kernels (each thread holds at most ROW_REGS values): a multiple
// of 32 in [64, 1024] that gives each thread about 4 values; 0 when cols exceed 1024 * ROW_REGS.
constexpr int ROW_REGS = 16;
inline int row_threads(int cols) {
  if (cols > 1024 * ROW_REGS) return 0;
  int t = ((cols + 3) / 4 + 31) / 32 * 32;
  t = t < 64 ? 64 : t > 1024 ? 1024 : t;
  while (t * ROW_REGS < cols) t += 32;
  return t;
}

// The integer code of x (0 for NONE). INT: clamp(round_half_even(fl(x/s)), -qmax, qmax).
__device__ __forceinline__ int quant_code(const Quantizer &q, const RowQuant &r, float x) {
  switch (q.kind) {
    case QKind::INT: {
      const int qmax = (1 << (q.bits - 1)) - 1;
      const int c = __float2int_rn(__fdiv_rn(x, r.s));  // round half to even; NaN -> 0
      return c > qmax ? qmax : c < -qmax ? -qmax : c;
    }
    case QKind::TERNARY: return fabsf(x) > r.delta ? (x > 0.0f ? 1 : -1) : 0;  // as the CPU/reference: 0 -> -1
    case QKind::BINARY: return x < 0.0f ? -1 : 1;  // x >= 0 or NaN -> +1
    default: return 0;
  }
}
// x_hat = fl(s * code) (NONE: x).
__device__ __forceinline__ float quant_hat(const Quantizer &q, const RowQuant &r, float x, int code) {
  return q.kind == QKind::NONE ? x : __fmul_rn((float)code, r.s);
}

#endif  // __CUDACC__

}  // namespace bwq_ops

#endif
