// The op interface of bwq's compute engine: one virtual per op of the decoder forward (and, later, of the
// quantize pipeline), implemented once per device (cpu_backend.cpp; cuda_backend.cu in libbwq_cuda.so).
// native/runtime/forward.cpp writes the decoder block once over this interface.
//
// Conventions
//  - Every pointer is a device pointer of the backend that made it (host memory for the CPU backend).
//  - Matrices are row-major; "rows" are tokens. Float activations are float32.
//  - Ops are asynchronous on the backend's one stream, in call order; sync() waits for all of them.
//  - Errors are sticky: an op that fails records the first error (error() returns it, a one-line message)
//    and later ops may be skipped; the forward checks error() after sync().
//  - The float32 semantics of each op are those of the TypeScript reference (src/native/*.ts,
//    docs/NATIVE_FORWARD.md), which follows the simulated model's ONNX graph: fl(.) = round to float32.
#ifndef BWQ_RUNTIME_BACKEND_H
#define BWQ_RUNTIME_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include <string>

#include "recon_trainer.h"

struct bwq_okt_problem;  // include/bwq.h
struct bwq_okt_result;

namespace bwq {
namespace rt {

// Storage type of float weights (embeddings, lm_head, unquantized linears): kept in the checkpoint's dtype.
enum class DType : int32_t { F32 = 0, BF16 = 1, F16 = 2 };
inline size_t dtype_size(DType t) { return t == DType::F32 ? 4 : 2; }

// An activation quantizer (src/quant/recipe.ts), per row of `cols` values:
//   INT, b bits:  qmax = 2^(b-1)-1, s = fl(fl(fl(param)*max|x|)/qmax) (s = 1 if max = 0),
//                 code = clamp(round_half_even(fl(x/s)), -qmax, qmax)            (param = clipRatio)
//   TERNARY:      delta = fl(fl(param) * fl(fl(sum|x|)/cols)), t = (x > 0 ? +1 : -1) if |x| > delta else 0,
//                 s = fl(fl(sum_{|x|>delta}|x|) / count) (0 if none)            (param = thresholdRatio)
//   BINARY:       s = fl(fl(sum|x|)/cols), code = +1 if x >= 0 (or NaN) else -1
// Sums of |x| are accumulated in double (the reference's JS numbers).
enum class QKind : int32_t { NONE = 0, INT = 1, TERNARY = 2, BINARY = 3 };
struct Quantizer {
  QKind kind = QKind::NONE;
  int32_t bits = 0;   // INT only
  float param = 0;    // clipRatio (INT) or thresholdRatio (TERNARY)
};

// How a quantized activation matrix is handed to the packed GEMMs (the cheapest form the kernels take):
enum class CodeForm : int32_t {
  FLOAT = 0,    // NONE, or INT wider than 15 bits: x_hat as float32 only
  INT8 = 1,     // INT <= 8 bits, BINARY: int8 codes
  INT8PAIR = 2, // INT 9..15 bits: code = 256*high + low, low = ((code+128) mod 256) - 128, |high| <= 64
  TERNARY = 3,  // TERNARY: plus/minus bit-planes (bit j of word w = entry 32w+j; bits >= cols are 0)
};
CodeForm code_form(const Quantizer &q);

// Quantized rows in a backend's layout, made by Backend::alloc_codes for at most `max_rows` rows of `cols`.
// The layout fields are the backend's (the CPU backend: ld_bytes = cols, ld_words = ceil(cols/32); CUDA pads
// both to the packed GEMMs' strides and rows to 128, padding zero). Unused members are null.
struct Codes {
  CodeForm form = CodeForm::FLOAT;
  int max_rows = 0, cols = 0;
  int ld_bytes = 0;      // row stride of i8 / i8_low (bytes)
  int ld_words = 0;      // row stride of plus / minus (uint32 words)
  int8_t *i8 = nullptr;  // INT8 codes, or INT8PAIR high part
  int8_t *i8_low = nullptr;
  uint32_t *plus = nullptr, *minus = nullptr;
  float *scales = nullptr;  // [max_rows] per-row scale s
};

// Packed binary weights B in {+1,-1}^{n x k} (bwq-packed-v1 bit order) in a backend's layout.
struct PackedWeights {
  int n = 0, k = 0;
  void *data = nullptr;
  int ld_words = 0;  // row stride in words (CPU: ceil(k/32); CUDA: padded)
};

// A float weight matrix [n, k] (nn.Linear layout, y = x W^T) in its checkpoint dtype.
struct FloatWeights {
  int n = 0, k = 0;
  DType dtype = DType::F32;
  const void *data = nullptr;
};

enum class Act : int32_t { SILU = 0, GELU = 1, GELU_TANH = 2, RELU = 3 };

// One layer's attention problem for a batch of sequences that all start at position `pos0`:
// queries q [batch*t, n_heads*head_dim] (row b*t + i is token pos0+i of sequence b, RoPE applied),
// keys and values already in the cache (KvLayer) for positions [0, pos0 + t).
struct AttentionShape {
  int batch = 1, t = 1, pos0 = 0;
  int n_heads = 1, n_kv_heads = 1, head_dim = 1;
  int sliding_window = 0;  // keys with i - j >= window are masked; 0 = plain causal
  int probs_len = 0;       // row length of a 'window' probs quantizer and of probs_out (the call's pos0 + t; >= pos0 + t)
  double scaling = 1;      // 1/sqrt(head_dim) (double, as the reference multiplies)
  // When set (device memory): the softmax probabilities before the probs quantizer are written here,
  // [batch, n_heads, t, probs_len] (masked entries 0) — the calibration of the probs quantizer reads them.
  float *probs_out = nullptr;
};
struct AttentionRecipe {
  Quantizer query, key, probs, value;
  // Which entries of a query's probability row the probs quantizer's statistics (the ternary threshold's and the
  // binary scale's mean |p|) are taken over (src/quant/recipe.ts ProbsRow): true = the query's unmasked keys
  // [lo, pos] only (the same row at any window length, prefill or decode); false = the whole row of length
  // probs_len, masked zeros included (recipes written before issue #16).
  bool probs_unmasked = false;
};

// The KV cache of one layer for `batch` sequences of up to `max_t` positions, per (sequence, position, kv head):
// k_hat / v_hat float32 [batch, max_t, n_kv*head_dim] (the dequantized operands), and when the key quantizer
// has integer codes (INT <= 8 bits, TERNARY, BINARY) k_codes int8 [batch, max_t, n_kv*head_dim] with
// k_scales [batch, max_t, n_kv].
struct KvLayer {
  int batch = 0, max_t = 0, n_kv_heads = 0, head_dim = 0;
  float *k_hat = nullptr, *v_hat = nullptr;
  int8_t *k_codes = nullptr;
  float *k_scales = nullptr;
  // When set (device memory), kv_store and attention take pos0 from *device_pos0 on the device and the probs row
  // length is pos0 + t, so a recorded decoding step replays at any position; the host-side pos0 then only has to
  // be valid at recording time (the CUDA attention sizes its launch for max_t). Backends that never record
  // (the CPU) use the host pos0.
  const int32_t *device_pos0 = nullptr;
};

struct Backend {
  virtual ~Backend() = default;
  virtual const char *name() const = 0;  // e.g. "cpu (avx512, 2 threads)", "cuda (NVIDIA H100 ...)"
  virtual bool is_device() const = 0;    // memory is not host memory

  // ---- memory
  virtual void *alloc(size_t bytes) = 0;  // zero-filled; nullptr (and error set) on failure
  virtual void free(void *p) = 0;
  virtual void upload(void *dst, const void *src, size_t bytes) = 0;
  virtual void download(void *dst, const void *src, size_t bytes) = 0;  // waits for the copy
  virtual void copy(void *dst, const void *src, size_t bytes) = 0;      // within the backend's memory, in stream order
  virtual void fill_zero(void *p, size_t bytes) = 0;
  virtual void sync() = 0;
  virtual size_t free_memory() = 0;  // bytes this backend can still allocate (best estimate)
  virtual const char *error() const = 0;  // first recorded error, or nullptr
  virtual void clear_error() = 0;

  // ---- recorded steps (CUDA graphs): between capture_begin() and capture_end() ops are recorded, not run;
  // capture_end() returns the executable recording, or nullptr when recording failed (the ops must then be run
  // again eagerly); replay() runs it. Recorded ops may not depend on host data. Default: never records.
  virtual bool capture_begin() { return false; }
  virtual void *capture_end() { return nullptr; }
  virtual void replay(void *recording) { (void)recording; }
  virtual void free_recording(void *recording) { (void)recording; }

  virtual bool alloc_codes(Codes &c, CodeForm form, int max_rows, int cols) = 0;
  virtual void free_codes(Codes &c) = 0;
  // B from host words [n, ceil(k/32)] (padding bits of the last word may be dirty).
  virtual bool upload_packed(PackedWeights &w, const uint32_t *host_words, int n, int k) = 0;
  virtual void free_packed(PackedWeights &w) = 0;

  // ---- ops
  // out[r, :] = table[ids[r], :] as float32; ids int32 [rows] (checked by the caller).
  virtual void embed(const int32_t *ids, int rows, const void *table, DType dtype, int hidden, float *out) = 0;
  // y = w * fl(x * inv), inv = 1 / sqrt(fl(sum(x^2)/cols) + eps) in double (sum in double; transformers'
  // LlamaRMSNorm order); w may be null (no scale). y may be x.
  virtual void rms_norm(const float *x, int rows, int cols, const float *w, float eps, float *y) = 0;
  // In place on x [rows, heads*head_dim]: row r has position positions[r]; the first 2*half dims of each head:
  // angle = fl(pos * inv_freq[i]), c = fl(cos angle), s = fl(sin angle),
  // x'_i = fl(x_i c) - fl(x_{i+half} s), x'_{i+half} = fl(x_{i+half} c) + fl(x_i s).
  virtual void rope(float *x, int rows, int heads, int head_dim, const float *inv_freq, int half,
                    const int32_t *positions) = 0;
  // y[r] = x[r] diag(R1 (x) R2, R3), row width K = a*b + rem: X = x[r][0, a*b) as [a, b], Y = R1^T X R2;
  // y[r][a*b + j] = sum_q x[r][a*b + q] R3[q, j] (rem = 0: no remainder, r3 unused). tmp: rows*K floats. y != x.
  virtual void kron_rotate(const float *x, int rows, int a, int b, int rem, const float *r1, const float *r2,
                           const float *r3, float *tmp, float *y) = 0;
  // Quantizes every row of x [rows, cols] with q into `codes` (form code_form(q)), and when x_hat is not null
  // writes x_hat = s*code (for NONE: a copy of x) [rows, cols].
  virtual void quantize(const float *x, int rows, int cols, const Quantizer &q, Codes &codes, float *x_hat) = 0;
  // y[m, n] = fl(s[m] * wscale[n] * acc[m, n]) with acc = sum_k code[m,k] B[n,k] exact (int32; INT8PAIR:
  // 256*acc_high + acc_low), the product in double. codes.form must not be FLOAT. acc: rows*n int32 scratch
  // (INT8PAIR: 2*rows*n).
  virtual void packed_linear(const Codes &codes, int rows, const PackedWeights &w, const float *wscale,
                             int32_t *acc, float *y) = 0;
  // y[m, n] = wscale[n] * sum_k x[m,k] B[n,k] (float32 accumulation), for float activations on a packed linear.
  virtual void float_binary_linear(const float *x, int rows, const PackedWeights &w, const float *wscale,
                                   float *y) = 0;
  // h[cols, cols] += x^T x for x float32 [rows, cols] (row-major): the Gram matrix of the rows, accumulated in
  // float32 (every entry written; cuBLAS GEMM with beta = 1 on CUDA). The quantize pipeline's statistics over every
  // calibration token (docs/ALGORITHMS.md "Calibration statistics").
  virtual void gram(const float *x, int rows, int cols, float *h) = 0;
  // c[m, n] (+)= sum_k a[m,k] W[n,k]: a float32 [m, k] (row stride lda), W in its dtype; c row stride ldc.
  // Backends may round a to W's dtype when W is 16-bit (cuBLAS); the CPU backend accumulates in float32.
  virtual void gemm(const float *a, int m, int lda, const FloatWeights &w, float *c, int ldc, bool accumulate) = 0;
  // c[m, n] = op(A) op(B), float32 row-major, c overwritten: op(A) = a [m, k] (trans_a: a^T, a stored [k, m]),
  // op(B) = b [k, n] (trans_b: b^T, b stored [n, k]). Returns false when the backend has no such product (the caller
  // rearranges the operands on the host and calls gemm); cuBLAS takes both transpositions as flags.
  virtual bool gemm_t(bool trans_a, bool trans_b, const float *a, const float *b, int m, int k, int n, float *c) {
    (void)trans_a, (void)trans_b, (void)a, (void)b, (void)m, (void)k, (void)n, (void)c;
    return false;
  }
  // y[r, :] += bias
  virtual void add_bias(float *y, int rows, int cols, const float *bias) = 0;
  // a[i] += b[i]
  virtual void add(float *a, const float *b, size_t count) = 0;
  // gate[i] = fl(act(gate[i])) * up[i] (act in double and rounded once; the CPU's SiLU in float32 with exp_f32)
  virtual void gated_act(float *gate, const float *up, size_t count, Act act) = 0;
  // Writes the keys and values of tokens [pos0, pos0+t) of every sequence into the cache: k, v
  // [batch*t, n_kv*head_dim]; per (token, kv head) row the key and value quantizers apply (k_codes/k_scales
  // written when the key quantizer has integer codes).
  virtual void kv_store(KvLayer &kv, const float *k, const float *v, int batch, int t, int pos0,
                        const Quantizer &key, const Quantizer &value) = 0;
  // ctx [batch*t, n_heads*head_dim] = causal GQA attention of q over the cache (AttentionShape, docs):
  //   q_hat = query quantizer per (token, head) row; score_ij = when both q and k have integer codes (and the
  //   cache holds k_codes; without them the float form below):
  //   fl((s_q*scaling) * s_k * (code_q . code_k)) in double, else fl(fl(q_hat . k_hat) * scaling);
  //   P_i = softmax over the unmasked keys j (masked P = 0; exp(score - max) in float32 within 2 ulp on the CPU,
  //   in double on CUDA: the backends agree within float rounding); P_hat = probs quantizer over the
  //   query's unmasked keys (r.probs_unmasked) or over the whole row of length probs_len (masked zeros
  //   included); ctx_i = sum_j P_hat_ij v_hat_j.
  virtual void attention(const float *q, const KvLayer &kv, const AttentionShape &shape, const AttentionRecipe &r,
                         float *ctx) = 0;
  // nll[r] = log sum_v exp(logits[r, v]) - logits[r, target[r]], sums in double (the exponentials in float32 on
  // the CPU, double on CUDA) (logits row stride vocab).
  virtual void nll_rows(const float *logits, int rows, int vocab, const int32_t *targets, double *nll) = 0;
  // dst rows [i] = src rows [index[i]] (row length cols floats); index on the host.
  virtual void gather_rows(const float *src, int cols, const int *index_host, int count, float *dst) = 0;

  // ---- the quantize pipeline's transforms
  // The OKT of BWLA in one call (native/ops/okt/okt.h, bwq.h bwq_okt_problem; host arrays in and out, device
  // memory for the call; the CPU backend's on its thread pool, native/ops/okt/okt_cpu.cpp). False when this
  // backend has none (error() stays unset) or when it failed (error() says why). Synchronous.
  virtual bool learn_okt(const bwq_okt_problem &p, bwq_okt_result &r) {
    (void)p;
    (void)r;
    return false;
  }
  // The block-wise reconstruction's training step held on this backend (recon_trainer.h; the CUDA backend's in
  // native/ops/recon/): a new trainer of `s` (the caller deletes it before the backend), or nullptr with `err` set
  // when this backend has none or it could not be made. The CPU runs the reference (src/quant/reconstruct/).
  virtual ReconTrainer *recon_trainer(const ReconSpec &s, std::string &err) {
    (void)s;
    err = "this backend has no device reconstruction";
    return nullptr;
  }
};

// The CPU backend (threads, AVX2/AVX-512 kernels of native/src). Never null.
Backend *cpu_backend();

}  // namespace rt
}  // namespace bwq

// libbwq_cuda.so exports this (C linkage) to hand out its backend; msg gets a one-line reason on failure.
extern "C" bwq::rt::Backend *bwq_cuda_backend_create(char *msg, size_t msg_len);

#endif
