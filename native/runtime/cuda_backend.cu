// The CUDA backend of bwq's compute engine (backend.h), in libbwq_cuda.so: memory through cudaMalloc, every op on
// one non-blocking stream (cuBLAS too), the kernels of native/ops/*/*.cu and the packed GEMMs of
// native/ops/gemm/ (packed_gemm.cuh). Errors are sticky: the first one is kept and later ops are skipped
// until clear_error().
#include <cuda_runtime.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <string>

#include "../ops/gemm/packed_gemm.cuh"
#include "../include/bwq.h"
#include "../ops/ops_cuda.cuh"
#include "../ops/okt/okt.h"
#include "../ops/recon/recon.cuh"
#include "backend.h"

namespace {

using namespace bwq::rt;
using bwq_ops::form_of;
using bwq_ops::has_int_codes;

// cuBLAS enum values (the headers are not needed: the library is dlopen'ed).
constexpr int kOpN = 0, kOpT = 1, kR32F = 0, kR16F = 2, kR16BF = 14, kCompute32F = 68, kCompute32FFastTF32 = 77,
              kGemmDefault = -1;

class CudaBackend final : public Backend {
 public:
  ~CudaBackend() override {
    if (st_) cudaStreamSynchronize(st_);
    for (Scratch *s : {&nz_, &index_, &half_, &att_, &split_})
      if (s->p) cudaFree(s->p);
    if (blas_handle_) blas_.destroy(blas_handle_);
    if (st_) cudaStreamDestroy(st_);
  }

  // False (with msg) when the device cannot be used.
  bool init(char *msg, size_t msg_len) {
    cudaDeviceProp prop;
    cudaError_t e = cudaGetDeviceProperties(&prop, 0);
    if (e == cudaSuccess) e = cudaStreamCreateWithFlags(&st_, cudaStreamNonBlocking);
    if (e != cudaSuccess) {
      if (msg && msg_len) snprintf(msg, msg_len, "CUDA backend: %s", cudaGetErrorString(e));
      return false;
    }
    max_smem_ = bwq_cuda::max_smem_optin();
    num_sms_ = bwq_cuda::num_sms();
    if (bwq_cuda::cublas_api(&blas_) && blas_.create(&blas_handle_) == 0 && blas_handle_) {
      blas_.set_stream(blas_handle_, st_);
    } else {
      blas_handle_ = nullptr;
    }
    char buf[512];
    snprintf(buf, sizeof buf, "cuda (%s, sm_%d%d, %d SMs%s)", prop.name, prop.major, prop.minor,
             prop.multiProcessorCount, blas_handle_ ? "" : ", no cuBLAS: simple float GEMM");
    name_ = buf;
    if (msg && msg_len) snprintf(msg, msg_len, "%s", buf);
    return true;
  }

  const char *name() const override { return name_.c_str(); }
  bool is_device() const override { return true; }

  // ---- memory
  void *alloc(size_t bytes) override {
    void *p = nullptr;
    const cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
      cudaGetLastError();
      fail("CUDA error in alloc (%zu bytes): %s", bytes, cudaGetErrorString(e));
      return nullptr;
    }
    if (!check("alloc", cudaMemsetAsync(p, 0, bytes ? bytes : 1, st_))) {
      cudaFree(p);
      return nullptr;
    }
    return p;
  }
  void free(void *p) override {
    if (!p) return;
    cudaStreamSynchronize(st_);  // no queued op may still use it
    check("free", cudaFree(p));
  }
  void upload(void *dst, const void *src, size_t bytes) override {
    if (bytes) copy_in(dst, src, bytes, "upload");
  }
  void download(void *dst, const void *src, size_t bytes) override {
    if (!bytes) return;
    if (check("download", cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, st_)))
      check("download", cudaStreamSynchronize(st_));
  }
  void copy(void *dst, const void *src, size_t bytes) override {
    if (bytes) check("copy", cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, st_));
  }
  void fill_zero(void *p, size_t bytes) override {
    if (bytes) check("fill_zero", cudaMemsetAsync(p, 0, bytes, st_));
  }
  void sync() override { check("sync", cudaStreamSynchronize(st_)); }
  size_t free_memory() override {
    size_t f = 0, t = 0;
    if (cudaMemGetInfo(&f, &t) != cudaSuccess) {
      cudaGetLastError();
      return 0;
    }
    return f;
  }
  const char *error() const override { return has_err_ ? err_.c_str() : nullptr; }
  void clear_error() override {
    has_err_ = false;
    err_.clear();
    cudaGetLastError();
  }

  // ---- recorded steps: stream capture into a CUDA graph. An op that would allocate or synchronise while
  // recording (a workspace that has to grow) invalidates the capture; capture_end() then returns nullptr and
  // the caller runs the step eagerly (after one eager step every workspace has its size).
  bool capture_begin() override {
    if (has_err_) return false;
    if (cudaStreamBeginCapture(st_, cudaStreamCaptureModeThreadLocal) != cudaSuccess) {
      cudaGetLastError();
      return false;
    }
    return true;
  }
  void *capture_end() override {
    cudaGraph_t g = nullptr;
    const cudaError_t e = cudaStreamEndCapture(st_, &g);
    cudaGraphExec_t x = nullptr;
    const bool ok = e == cudaSuccess && g && !has_err_ && cudaGraphInstantiate(&x, g, 0) == cudaSuccess;
    if (g) cudaGraphDestroy(g);
    if (!ok) {
      x = nullptr;
      clear_error();  // the recording failed, not the ops: the caller runs them eagerly
    }
    return x;
  }
  void replay(void *recording) override {
    if (!has_err_ && recording) check("replay", cudaGraphLaunch((cudaGraphExec_t)recording, st_));
  }
  void free_recording(void *recording) override {
    if (recording) cudaGraphExecDestroy((cudaGraphExec_t)recording);
  }

  bool alloc_codes(Codes &c, CodeForm form, int max_rows, int cols) override {
    c = Codes{};
    if (max_rows <= 0 || cols <= 0) return fail("alloc_codes: %d rows of %d columns", max_rows, cols);
    c.form = form;
    c.max_rows = max_rows;
    c.cols = cols;
    c.ld_words = bwq_cuda::packed_ldk(cols);
    c.ld_bytes = c.ld_words * 32;
    const size_t mp = bwq_cuda::padded_rows(max_rows);
    bool ok = (c.scales = (float *)alloc(mp * sizeof(float))) != nullptr;
    if (ok && (form == CodeForm::INT8 || form == CodeForm::INT8PAIR))
      ok = (c.i8 = (int8_t *)alloc(mp * c.ld_bytes)) != nullptr;
    if (ok && form == CodeForm::INT8PAIR) ok = (c.i8_low = (int8_t *)alloc(mp * c.ld_bytes)) != nullptr;
    if (ok && form == CodeForm::TERNARY)
      ok = (c.plus = (uint32_t *)alloc(mp * c.ld_words * 4)) && (c.minus = (uint32_t *)alloc(mp * c.ld_words * 4));
    if (!ok) free_codes(c);
    return ok;
  }
  void free_codes(Codes &c) override {
    free(c.i8);
    free(c.i8_low);
    free(c.plus);
    free(c.minus);
    free(c.scales);
    c = Codes{};
  }
  bool upload_packed(PackedWeights &w, const uint32_t *host_words, int n, int k) override {
    w = PackedWeights{};
    if (n <= 0 || k <= 0) return fail("upload_packed: %d x %d weights", n, k);
    const int kw = (k + 31) / 32, ldk = bwq_cuda::packed_ldk(k);
    void *d = alloc((size_t)bwq_cuda::padded_rows(n) * ldk * 4);
    if (!d) return false;
    if (!check("upload_packed", cudaMemcpy2DAsync(d, (size_t)ldk * 4, host_words, (size_t)kw * 4, (size_t)kw * 4, n,
                                                  cudaMemcpyHostToDevice, st_)) ||
        !check("upload_packed", bwq_ops::mask_last_word((uint32_t *)d, n, ldk, k, st_)) ||
        !check("upload_packed", cudaStreamSynchronize(st_))) {
      free(d);
      return false;
    }
    w.n = n;
    w.k = k;
    w.data = d;
    w.ld_words = ldk;
    return true;
  }
  void free_packed(PackedWeights &w) override {
    free(w.data);
    w = PackedWeights{};
  }

  // ---- ops
  void embed(const int32_t *ids, int rows, const void *table, DType dtype, int hidden, float *out) override {
    if (!has_err_ && rows > 0 && hidden > 0) check("embed", bwq_ops::embed(ids, rows, table, dtype, hidden, out, st_));
  }
  void rms_norm(const float *x, int rows, int cols, const float *w, float eps, float *y) override {
    if (!has_err_ && rows > 0 && cols > 0) check("rms_norm", bwq_ops::rms_norm(x, rows, cols, w, eps, y, st_));
  }
  void rope(float *x, int rows, int heads, int head_dim, const float *inv_freq, int half,
            const int32_t *positions) override {
    if (has_err_ || rows <= 0 || heads <= 0 || half <= 0) return;
    if (2 * half > head_dim) return (void)fail("rope: 2*half = %d exceeds head_dim %d", 2 * half, head_dim);
    check("rope", bwq_ops::rope(x, rows, heads, head_dim, inv_freq, half, positions, st_));
  }
  void kron_rotate(const float *x, int rows, int a, int b, int rem, const float *r1, const float *r2,
                   const float *r3, float *tmp, float *y) override {
    if (!has_err_ && rows > 0 && a > 0 && b > 0 && rem >= 0)
      check("kron_rotate", bwq_ops::kron_rotate(x, rows, a, b, rem, r1, r2, r3, tmp, y, max_smem_, st_));
  }
  void quantize(const float *x, int rows, int cols, const Quantizer &q, Codes &codes, float *x_hat) override {
    if (has_err_ || rows <= 0 || cols <= 0) return;
    if (!valid(q, "quantize")) return;
    const CodeForm form = form_of(q);
    if (codes.form != form)
      return (void)fail("quantize: codes have form %d, the quantizer needs %d", (int)codes.form, (int)form);
    if (form != CodeForm::FLOAT && (rows > codes.max_rows || cols != codes.cols))
      return (void)fail("quantize: %d x %d rows into codes for %d x %d", rows, cols, codes.max_rows, codes.cols);
    if (form == CodeForm::FLOAT && !x_hat) return;
    check("quantize", bwq_ops::quantize(x, rows, cols, q, codes, x_hat, st_));
  }
  void packed_linear(const Codes &codes, int rows, const PackedWeights &w, const float *wscale, int32_t *acc,
                     float *y) override {
    if (has_err_ || rows <= 0 || w.n <= 0) return;
    if (codes.form == CodeForm::FLOAT) return (void)fail("packed_linear: float activations have no integer kernel");
    if (codes.cols != w.k || codes.ld_words != w.ld_words || rows > codes.max_rows)
      return (void)fail("packed_linear: codes %d x %d (ld %d) against weights %d x %d (ld %d)", rows, codes.cols,
                        codes.ld_words, w.n, w.k, w.ld_words);
    const int n = w.n, ldk = w.ld_words;
    const uint32_t *W = (const uint32_t *)w.data;
    if (rows == 1 && codes.form != CodeForm::INT8PAIR) {  // decoding: the GEMV with the epilogue fused
      const char *fused = codes.form == CodeForm::TERNARY
                              ? bwq_cuda::tb_gemv_scaled(codes.plus, codes.minus, W, ldk, n, codes.scales, wscale, y, st_)
                              : bwq_cuda::i8_gemv_scaled(codes.i8, codes.ld_bytes, W, ldk, n, codes.scales, wscale, y, st_);
      if (fused) {
        const cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess) fail("CUDA error in packed_linear (%s): %s", fused, cudaGetErrorString(e));
        return;
      }
    }
    const char *kernel = "";
    bool out16 = false;
    if (codes.form == CodeForm::TERNARY) {
      int *nz = (int *)grow(nz_, (size_t)bwq_cuda::padded_rows(rows) * sizeof(int), "packed_linear");
      if (!nz) return;
      kernel = bwq_cuda::tb_gemm(codes.plus, codes.minus, W, ldk, nz, rows, n, acc, st_, &out16);
    } else {
      kernel = bwq_cuda::i8_gemm(codes.i8, codes.ld_bytes, W, ldk, rows, n, acc, st_);
      if (codes.form == CodeForm::INT8PAIR)
        bwq_cuda::i8_gemm(codes.i8_low, codes.ld_bytes, W, ldk, rows, n, acc + (size_t)rows * n, st_);
    }
    const cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return (void)fail("CUDA error in packed_linear (%s): %s", kernel, cudaGetErrorString(e));
    check("packed_linear", bwq_ops::packed_epilogue(acc, out16, codes.form == CodeForm::INT8PAIR, rows, n,
                                                    codes.scales, wscale, y, st_));
  }
  void float_binary_linear(const float *x, int rows, const PackedWeights &w, const float *wscale, float *y) override {
    if (!has_err_ && rows > 0 && w.n > 0)
      check("float_binary_linear", bwq_ops::float_binary_linear(x, rows, w.k, (const uint32_t *)w.data, w.ld_words,
                                                                w.n, wscale, y, st_));
  }
  // Row-major c[m, n] = a[m, k] W[n, k]^T is, in cuBLAS's column-major terms, C^T (n x m, ld ldc) =
  // op(W) * a^T with W's memory read as a k x n column-major matrix (ld k) and op = T, and a's memory as a k x m
  // column-major matrix (ld lda) with op = N: gemm(T, N, n, m, k, W, k, a, lda, C, ldc).
  void gemm(const float *a, int m, int lda, const FloatWeights &w, float *c, int ldc, bool accumulate) override {
    if (has_err_ || m <= 0 || w.n <= 0) return;
    const int n = w.n, k = w.k;
    if (!blas_handle_) {
      check("gemm", bwq_ops::gemm_simple(a, m, lda, w.data, w.dtype, n, k, c, ldc, accumulate, st_));
      return;
    }
    const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    const void *A = a;
    int atype = kR32F, ld_a = lda;
    if (w.dtype != DType::F32) {
      void *h = grow(half_, (size_t)m * k * 2, "gemm");
      if (!h || !check("gemm", bwq_ops::convert_rows(a, m, k, lda, w.dtype, h, st_))) return;
      A = h;
      atype = w.dtype == DType::BF16 ? kR16BF : kR16F;
      ld_a = k;
    }
    const int rc = blas_.gemm_ex(blas_handle_, kOpT, kOpN, n, m, k, &alpha, w.data, atype, k, A, atype, ld_a, &beta,
                                 c, kR32F, ldc, kCompute32F, kGemmDefault);
    if (rc != 0) fail("cuBLAS error %d in gemm (%d x %d x %d)", rc, m, n, k);
  }
  // h = x^T x + h: x's row-major memory read column-major (ld cols) is A = x^T [cols, rows], and A A^T (N, T) with
  // beta = 1 accumulates the Gram matrix (symmetric, so its storage order does not matter). On the tensor cores as
  // three TF32 products (the 3xTF32 of CUTLASS): x = hi + lo (split_tf32), x x^T = hi lo^T + lo hi^T + hi hi^T with
  // the lo lo^T term (2^-22 relative) dropped; FP32 accumulation. About FP32's accuracy at a fraction of its time
  // (docs/PERFORMANCE.md: the Gram was half of a 70B-shape statistics pass in FP32).
  void gram(const float *x, int rows, int cols, float *h) override {
    if (has_err_ || rows <= 0 || cols <= 0) return;
    if (!blas_handle_) {
      check("gram", bwq_ops::gram_simple(x, rows, cols, h, st_));
      return;
    }
    const size_t n = (size_t)rows * cols;
    float *hi = (float *)grow(split_, 2 * n * sizeof(float), "gram");
    if (!hi || !check("gram", bwq_ops::split_tf32(x, n, hi, hi + n, st_))) return;
    const float *lo = hi + n;
    const float alpha = 1.0f, beta = 1.0f;
    const float *terms[3][2] = {{hi, lo}, {lo, hi}, {hi, hi}};
    for (const auto &t : terms) {
      const int rc = blas_.gemm_ex(blas_handle_, kOpN, kOpT, cols, cols, rows, &alpha, t[0], kR32F, cols, t[1], kR32F,
                                   cols, &beta, h, kR32F, cols, kCompute32FFastTF32, kGemmDefault);
      if (rc != 0) return (void)fail("cuBLAS error %d in gram (%d rows x %d)", rc, rows, cols);
    }
  }
  // Row-major C [m, n] is column-major C^T [n, m] = op(B)^T op(A)^T. b's memory read column-major is b^T: [n, k]
  // with ld n (b stored [k, n]) → op N; b stored [n, k] (trans_b) reads as [k, n] with ld k → op T. Likewise a:
  // stored [m, k] reads as [k, m] with ld k → op N; stored [k, m] (trans_a) reads as [m, k] with ld m → op T.
  bool gemm_t(bool trans_a, bool trans_b, const float *a, const float *b, int m, int k, int n, float *c) override {
    if (!blas_handle_) return false;
    if (has_err_ || m <= 0 || n <= 0 || k <= 0) return true;
    const float alpha = 1.0f, beta = 0.0f;
    const int rc = blas_.gemm_ex(blas_handle_, trans_b ? kOpT : kOpN, trans_a ? kOpT : kOpN, n, m, k, &alpha, b, kR32F,
                                 trans_b ? k : n, a, kR32F, trans_a ? m : k, &beta, c, kR32F, n, kCompute32F,
                                 kGemmDefault);
    if (rc != 0) fail("cuBLAS error %d in gemm_t (%d x %d x %d, trans %d %d)", rc, m, n, k, (int)trans_a, (int)trans_b);
    return true;
  }
  void add_bias(float *y, int rows, int cols, const float *bias) override {
    if (!has_err_ && rows > 0 && cols > 0) check("add_bias", bwq_ops::add_bias(y, rows, cols, bias, st_));
  }
  void add(float *a, const float *b, size_t count) override {
    if (!has_err_ && count) check("add", bwq_ops::add(a, b, count, st_));
  }
  void gated_act(float *gate, const float *up, size_t count, Act act) override {
    if (!has_err_ && count) check("gated_act", bwq_ops::gated_act(gate, up, count, act, st_));
  }
  void kv_store(KvLayer &kv, const float *k, const float *v, int batch, int t, int pos0, const Quantizer &key,
                const Quantizer &value) override {
    if (has_err_ || batch <= 0 || t <= 0) return;
    if (!valid(key, "kv_store") || !valid(value, "kv_store")) return;
    if (batch > kv.batch || pos0 < 0 || pos0 + t > kv.max_t)
      return (void)fail("kv_store: %d sequences at positions [%d, %d) into a cache of %d x %d", batch, pos0, pos0 + t,
                        kv.batch, kv.max_t);
    if (has_int_codes(key) && (!kv.k_codes || !kv.k_scales))
      return (void)fail("kv_store: the key quantizer has integer codes but the cache has no k_codes/k_scales");
    check("kv_store", bwq_ops::kv_store(kv, k, v, batch, t, pos0, key, value, st_));
  }
  void attention(const float *q, const KvLayer &kv, const AttentionShape &s, const AttentionRecipe &r,
                 float *ctx) override {
    if (has_err_ || s.batch <= 0 || s.t <= 0 || s.n_heads <= 0) return;
    if (!valid(r.query, "attention") || !valid(r.probs, "attention")) return;
    if (r.probs.kind == QKind::BINARY) return (void)fail("attention: binary probabilities are not supported");
    if (s.n_kv_heads <= 0 || s.n_heads % s.n_kv_heads || s.n_kv_heads != kv.n_kv_heads || s.head_dim != kv.head_dim ||
        s.batch > kv.batch || s.pos0 < 0 || s.pos0 + s.t > kv.max_t)
      return (void)fail("attention: shape (batch %d, t %d, pos0 %d, heads %d/%d, head_dim %d) does not fit the cache",
                        s.batch, s.t, s.pos0, s.n_heads, s.n_kv_heads, s.head_dim);
    float *scratch = nullptr;
    if (const size_t floats = bwq_ops::attention_scratch_floats(s, kv, max_smem_, num_sms_))
      if (!(scratch = (float *)grow(att_, floats * sizeof(float), "attention"))) return;
    check("attention", bwq_ops::attention(q, kv, s, r, ctx, scratch, max_smem_, num_sms_, st_));
  }
  void nll_rows(const float *logits, int rows, int vocab, const int32_t *targets, double *nll) override {
    if (!has_err_ && rows > 0 && vocab > 0) check("nll_rows", bwq_ops::nll_rows(logits, rows, vocab, targets, nll, st_));
  }
  void gather_rows(const float *src, int cols, const int *index_host, int count, float *dst) override {
    if (has_err_ || count <= 0 || cols <= 0) return;
    int *d = (int *)grow(index_, (size_t)count * sizeof(int), "gather_rows");
    if (d && copy_in(d, index_host, (size_t)count * sizeof(int), "gather_rows"))
      check("gather_rows", bwq_ops::gather_rows(src, cols, d, count, dst, st_));
  }

  ReconTrainer *recon_trainer(const ReconSpec &s, std::string &err) override {
    if (has_err_) return err = error(), nullptr;
    if (!blas_handle_) return err = "the device reconstruction needs cuBLAS (libcublas was not found)", nullptr;
    return bwq_recon::make_trainer(s, st_, blas_, blas_handle_, max_smem_, err);
  }
  bool learn_okt(const bwq_okt_problem &p, bwq_okt_result &r) override {
    if (has_err_) return false;
    if (!blas_handle_) return fail("the device OKT needs cuBLAS (libcublas was not found)");
    const std::string e = bwq_okt::run_on_stream(p, r, st_, blas_, blas_handle_);
    return e.empty() || fail("%s", e.c_str());
  }

 private:
  struct Scratch {
    void *p = nullptr;
    size_t cap = 0;
  };

  bool fail(const char *fmt, ...) __attribute__((format(printf, 2, 3))) {
    if (!has_err_) {
      char buf[512];
      va_list ap;
      va_start(ap, fmt);
      vsnprintf(buf, sizeof buf, fmt, ap);
      va_end(ap);
      err_ = buf;
      has_err_ = true;
    }
    return false;
  }
  bool check(const char *op, cudaError_t e) {
    if (e == cudaSuccess) return true;
    cudaGetLastError();
    return fail("CUDA error in %s: %s", op, cudaGetErrorString(e));
  }
  bool valid(const Quantizer &q, const char *op) {
    if (q.kind == QKind::INT && (q.bits < 2 || q.bits > 24))
      return fail("%s: int quantizer with %d bits (2..24 supported)", op, q.bits);
    if ((int)q.kind < 0 || (int)q.kind > 3) return fail("%s: unknown quantizer kind %d", op, (int)q.kind);
    return true;
  }
  // Host -> device on the stream. A pageable source is staged before cudaMemcpyAsync returns; a pinned one is
  // read asynchronously, so then the copy is waited for (the caller may reuse its buffer at once).
  bool copy_in(void *dst, const void *src, size_t bytes, const char *op) {
    if (!check(op, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, st_))) return false;
    cudaPointerAttributes at;
    if (cudaPointerGetAttributes(&at, src) == cudaSuccess && at.type == cudaMemoryTypeHost)
      return check(op, cudaStreamSynchronize(st_));
    cudaGetLastError();
    return true;
  }
  // Grow-only internal workspace (the old one is freed once the stream no longer uses it).
  void *grow(Scratch &s, size_t bytes, const char *op) {
    if (s.cap >= bytes) return s.p;
    if (s.p) {
      cudaStreamSynchronize(st_);
      cudaFree(s.p);
      s.p = nullptr;
      s.cap = 0;
    }
    const size_t cap = bytes + bytes / 4;
    if (!check(op, cudaMalloc(&s.p, cap))) return s.p = nullptr;
    s.cap = cap;
    return s.p;
  }

  cudaStream_t st_ = nullptr;
  std::string name_, err_;
  bool has_err_ = false;
  int max_smem_ = 48 * 1024, num_sms_ = 1;
  bwq_cuda::CublasApi blas_{};
  void *blas_handle_ = nullptr;
  Scratch nz_, index_, half_, att_, split_;
};

}  // namespace

extern "C" __attribute__((visibility("default"))) bwq::rt::Backend *bwq_cuda_backend_create(char *msg,
                                                                                           size_t msg_len) {
  char buf[256] = "";
  if (bwq_cuda::ensure_ready(buf, sizeof buf) != BWQ_OK) {
    if (msg && msg_len) snprintf(msg, msg_len, "%s", buf[0] ? buf : "CUDA initialisation failed");
    return nullptr;
  }
  CudaBackend *b = new CudaBackend();
  if (!b->init(msg, msg_len)) {
    delete b;
    return nullptr;
  }
  return b;
}
