// Activation quantization per row of x [rows, cols] (backend.h Quantizer; src/native/activation-codes.ts):
//   INT b bits: qmax = 2^(b-1)-1, s = fl(fl(param*max|x|)/qmax) (1 if max = 0),
//               code = clamp(round_half_even(fl(x/s)), -qmax, qmax)
//   TERNARY:    delta = fl(param*fl(fl(sum|x|)/cols)), t = sign(x) if |x| > delta else 0,
//               s = fl(fl(sum_{|x|>delta}|x|)/count) (0 if none)
//   BINARY:     s = fl(fl(sum|x|)/cols), code = +1 if x >= 0 (or NaN) else -1
//   x_hat = fl(s*code) (NONE: x)
// Stored by form: INT8 codes; INT8PAIR code = 256*high + low, low = ((code+128) mod 256) - 128; TERNARY
// plus/minus bit-planes (each warp builds its words with __ballot_sync; bits >= cols are 0); FLOAT x_hat only.
// One block per row: the reductions (block_row_quant), then the codes. Padding columns of the codes are never
// written (alloc_codes zero-fills them). For few rows (decoding) the row is held in registers (quantize_regs).
#include "../ops_cuda.cuh"

namespace bwq_ops {
namespace {

// An integer code in the INT8 / INT8PAIR layouts (FLOAT and TERNARY store nothing here).
__device__ __forceinline__ void store_int_code(CodeForm form, int c, int8_t *i8, int8_t *i8_low, size_t at) {
  if (form == CodeForm::INT8) {
    i8[at] = (int8_t)c;
  } else if (form == CodeForm::INT8PAIR) {
    const int lo = ((c + 128) & 255) - 128;
    i8[at] = (int8_t)((c - lo) / 256);
    i8_low[at] = (int8_t)lo;
  }
}

__global__ void __launch_bounds__(256) quantize_kernel(const float *x, int cols, Quantizer q, CodeForm form,
                                                       int8_t *__restrict__ i8, int8_t *__restrict__ i8_low,
                                                       int ld_bytes, uint32_t *__restrict__ plus,
                                                       uint32_t *__restrict__ minus, int ld_words,
                                                       float *__restrict__ scales, float *x_hat) {
  const size_t r = blockIdx.x;
  const float *xr = x + r * cols;
  float *hr = x_hat ? x_hat + r * cols : nullptr;
  const RowQuant rq = block_row_quant(q, cols, 0, cols, [&](int j) { return xr[j]; });
  if (scales && threadIdx.x == 0) scales[r] = rq.s;
  if (form == CodeForm::TERNARY) {
    const int lane = threadIdx.x & 31, kw = (cols + 31) / 32;
    for (int w = threadIdx.x >> 5; w < kw; w += blockDim.x >> 5) {
      const int j = w * 32 + lane;
      int c = 0;
      if (j < cols) {
        const float v = xr[j];
        c = quant_code(q, rq, v);
        if (hr) hr[j] = quant_hat(q, rq, v, c);
      }
      const uint32_t p = __ballot_sync(0xffffffffu, c > 0), m = __ballot_sync(0xffffffffu, c < 0);
      if (lane == 0) {
        plus[r * ld_words + w] = p;
        minus[r * ld_words + w] = m;
      }
    }
    return;
  }
  for (int j = threadIdx.x; j < cols; j += blockDim.x) {
    const float v = xr[j];
    const int c = quant_code(q, rq, v);
    store_int_code(form, c, i8, i8_low, r * ld_bytes + j);
    if (hr) hr[j] = quant_hat(q, rq, v, c);
  }
}

// Thread t holds x[t + u * blockDim.x] (u < ROW_REGS); for the ternary planes, warp w's lanes hold the 32 entries of
// word u * blockDim.x / 32 + w.
__global__ void __launch_bounds__(1024) quantize_regs(const float *x, int cols, Quantizer q, CodeForm form,
                                                      int8_t *__restrict__ i8, int8_t *__restrict__ i8_low,
                                                      int ld_bytes, uint32_t *__restrict__ plus,
                                                      uint32_t *__restrict__ minus, int ld_words,
                                                      float *__restrict__ scales, float *x_hat) {
  const size_t r = blockIdx.x;
  const float *xr = x + r * cols;
  float *hr = x_hat ? x_hat + r * cols : nullptr;
  float v[ROW_REGS];
#pragma unroll
  for (int u = 0; u < ROW_REGS; ++u) {
    const int j = threadIdx.x + u * blockDim.x;
    v[u] = j < cols ? xr[j] : 0.0f;
  }
  const RowQuant rq = block_row_quant_regs(q, cols, v);
  if (scales && threadIdx.x == 0) scales[r] = rq.s;
  const int lane = threadIdx.x & 31, kw = (cols + 31) / 32;
#pragma unroll
  for (int u = 0; u < ROW_REGS; ++u) {
    const int j = threadIdx.x + u * blockDim.x;
    const int c = j < cols ? quant_code(q, rq, v[u]) : 0;
    if (hr && j < cols) hr[j] = quant_hat(q, rq, v[u], c);
    if (form == CodeForm::TERNARY) {
      const uint32_t p = __ballot_sync(0xffffffffu, c > 0), m = __ballot_sync(0xffffffffu, c < 0);
      const int w = (u * blockDim.x + threadIdx.x) >> 5;
      if (lane == 0 && w < kw) {
        plus[r * ld_words + w] = p;
        minus[r * ld_words + w] = m;
      }
    } else if (j < cols) {
      store_int_code(form, c, i8, i8_low, r * ld_bytes + j);
    }
  }
}

}  // namespace

cudaError_t quantize(const float *x, int rows, int cols, const Quantizer &q, const bwq::rt::Codes &codes,
                     float *x_hat, cudaStream_t st) {
  if (rows <= 64 && row_threads(cols) > 0) {
    quantize_regs<<<rows, row_threads(cols), 0, st>>>(x, cols, q, codes.form, codes.i8, codes.i8_low, codes.ld_bytes,
                                                      codes.plus, codes.minus, codes.ld_words, codes.scales, x_hat);
    return cudaGetLastError();
  }
  const int threads = cols >= 2048 ? 256 : cols >= 512 ? 128 : 64;
  quantize_kernel<<<rows, threads, 0, st>>>(x, cols, q, codes.form, codes.i8, codes.i8_low, codes.ld_bytes,
                                            codes.plus, codes.minus, codes.ld_words, codes.scales, x_hat);
  return cudaGetLastError();
}

}  // namespace bwq_ops
