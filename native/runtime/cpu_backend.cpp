// The CPU backend: host memory, ops from native/ops/*/*_cpu.cpp, packed GEMMs from native/src (popcount
// kernels per ISA on the shared thread pool).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <string>

#include "../include/bwq.h"
#include "../ops/ops_cpu.h"
#include "backend.h"

namespace bwq {
namespace rt {
namespace {

class CpuBackend : public Backend {
 public:
  const char *name() const override {
    static std::string s;
    s = std::string("cpu (") + bwq_cpu_level_name(bwq_cpu_level()) + ", " + std::to_string(bwq_cpu_threads()) +
        (bwq_cpu_threads() == 1 ? " thread)" : " threads)");
    return s.c_str();
  }
  bool is_device() const override { return false; }

  void *alloc(size_t bytes) override {
    void *p = calloc(bytes ? bytes : 1, 1);
    if (!p) fail("out of host memory allocating " + std::to_string(bytes) + " bytes");
    return p;
  }
  void free(void *p) override { ::free(p); }
  void upload(void *dst, const void *src, size_t bytes) override { memcpy(dst, src, bytes); }
  void download(void *dst, const void *src, size_t bytes) override { memcpy(dst, src, bytes); }
  void copy(void *dst, const void *src, size_t bytes) override { memmove(dst, src, bytes); }
  void fill_zero(void *p, size_t bytes) override { memset(p, 0, bytes); }
  void sync() override {}
  size_t free_memory() override {
    const long pages = sysconf(_SC_AVPHYS_PAGES), size = sysconf(_SC_PAGESIZE);
    return pages > 0 && size > 0 ? (size_t)pages * (size_t)size : (size_t)-1;
  }
  const char *error() const override { return err_.empty() ? nullptr : err_.c_str(); }
  void clear_error() override { err_.clear(); }

  bool alloc_codes(Codes &c, CodeForm form, int max_rows, int cols) override {
    c = Codes{};
    c.form = form;
    c.max_rows = max_rows;
    c.cols = cols;
    c.ld_bytes = cols;
    c.ld_words = (cols + 31) / 32;
    const size_t r = (size_t)max_rows;
    if (form != CodeForm::FLOAT) c.scales = (float *)alloc(sizeof(float) * r);
    if (form == CodeForm::INT8 || form == CodeForm::INT8PAIR) c.i8 = (int8_t *)alloc(r * cols);
    if (form == CodeForm::INT8PAIR) c.i8_low = (int8_t *)alloc(r * cols);
    if (form == CodeForm::TERNARY) {
      c.plus = (uint32_t *)alloc(4 * r * c.ld_words);
      c.minus = (uint32_t *)alloc(4 * r * c.ld_words);
    }
    return error() == nullptr;
  }
  void free_codes(Codes &c) override {
    ::free(c.i8);
    ::free(c.i8_low);
    ::free(c.plus);
    ::free(c.minus);
    ::free(c.scales);
    c = Codes{};
  }
  bool upload_packed(PackedWeights &w, const uint32_t *host_words, int n, int k) override {
    w.n = n;
    w.k = k;
    w.ld_words = (k + 31) / 32;
    const size_t words = (size_t)n * w.ld_words;
    w.data = alloc(4 * words);
    if (!w.data) return false;
    memcpy(w.data, host_words, 4 * words);
    return true;
  }
  void free_packed(PackedWeights &w) override {
    ::free(w.data);
    w.data = nullptr;
  }

  void embed(const int32_t *ids, int rows, const void *table, DType dtype, int hidden, float *out) override {
    cpu::embed(ids, rows, table, dtype, hidden, out);
  }
  void rms_norm(const float *x, int rows, int cols, const float *w, float eps, float *y) override {
    cpu::rms_norm(x, rows, cols, w, eps, y);
  }
  void rope(float *x, int rows, int heads, int head_dim, const float *inv_freq, int half,
            const int32_t *positions) override {
    cpu::rope(x, rows, heads, head_dim, inv_freq, half, positions);
  }
  void kron_rotate(const float *x, int rows, int a, int b, int rem, const float *r1, const float *r2,
                   const float *r3, float *tmp, float *y) override {
    cpu::kron_rotate(x, rows, a, b, rem, r1, r2, r3, tmp, y);
  }
  void quantize(const float *x, int rows, int cols, const Quantizer &q, Codes &codes, float *x_hat) override {
    cpu::quantize(x, rows, cols, q, codes, x_hat);
  }
  void packed_linear(const Codes &codes, int rows, const PackedWeights &w, const float *wscale, int32_t *acc,
                     float *y) override {
    cpu::packed_linear(codes, rows, w, wscale, acc, y);
  }
  void float_binary_linear(const float *x, int rows, const PackedWeights &w, const float *wscale, float *y) override {
    cpu::float_binary_linear(x, rows, w, wscale, y);
  }
  void gemm(const float *a, int m, int lda, const FloatWeights &w, float *c, int ldc, bool accumulate) override {
    cpu::gemm(a, m, lda, w, c, ldc, accumulate);
  }
  void gram(const float *x, int rows, int cols, float *h) override { cpu::gram(x, rows, cols, h); }
  void add_bias(float *y, int rows, int cols, const float *bias) override { cpu::add_bias(y, rows, cols, bias); }
  void add(float *a, const float *b, size_t count) override { cpu::add(a, b, count); }
  void gated_act(float *gate, const float *up, size_t count, Act act) override {
    cpu::gated_act(gate, up, count, act);
  }
  void kv_store(KvLayer &kv, const float *k, const float *v, int batch, int t, int pos0, const Quantizer &key,
                const Quantizer &value) override {
    cpu::kv_store(kv, k, v, batch, t, pos0, key, value);
  }
  void attention(const float *q, const KvLayer &kv, const AttentionShape &shape, const AttentionRecipe &r,
                 float *ctx) override {
    cpu::attention(q, kv, shape, r, ctx);
  }
  void nll_rows(const float *logits, int rows, int vocab, const int32_t *targets, double *nll) override {
    cpu::nll_rows(logits, rows, vocab, targets, nll);
  }
  void gather_rows(const float *src, int cols, const int *index_host, int count, float *dst) override {
    for (int i = 0; i < count; ++i) memcpy(dst + (size_t)i * cols, src + (size_t)index_host[i] * cols, 4 * (size_t)cols);
  }
  bool learn_okt(const bwq_okt_problem &p, bwq_okt_result &r) override {
    const std::string e = cpu::learn_okt(p, r);
    if (e.empty()) return true;
    fail(e);
    return false;
  }

 private:
  void fail(const std::string &m) {
    if (err_.empty()) err_ = m;
  }
  std::string err_;
};

}  // namespace

Backend *cpu_backend() {
  static CpuBackend *b = new CpuBackend();
  return b;
}

}  // namespace rt
}  // namespace bwq
