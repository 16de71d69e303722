// Checks the CUDA backend of the compute engine (libbwq_cuda.so, bwq_cuda_backend_create) against the CPU backend
// (bwq::rt::cpu_backend(), the reference): every op of native/runtime/backend.h on the same random inputs, several
// shapes each. Build and run on a GPU machine: sh native/test/runtime-ops-check.sh  (usage: runtime_ops_check
// [path/to/libbwq_cuda.so] [--quick] [--bench] [--only=embed,norm,rotate,quantize,linear,gemm,elementwise,loss,
// attention,errors]; --bench also times a few decoder-sized ops on the GPU).
//
// Comparisons (GPU result a against CPU result b):
//  - exact (bit for bit): embed, gather_rows, add, add_bias, quantize (codes, scales, x_hat; the CUDA codes'
//    padding must be zero), packed_linear (its output is a pure function of the exact integer sums), kv_store
//    (k_hat, v_hat, k_codes, k_scales), rms_norm and rope (same rounding points; the double sums / cos / sin may
//    in rare cases round differently, which this check would report);
//  - gated_act normalised (below) at 1e-6, as GELU's 1 + erf(x) cancels for large negative x (exp / erf / tanh of CUDA against
//    glibc in double, rounded once to float; the CPU's SiLU now uses its float32 exp_f32); nll_rows 1e-6 (double
//    sums; the CPU's exps are float32 exp_f32, the CUDA ones double as backend.h says);
//  - normalised, for sums whose order differs: err = max_i |a_i - b_i| / max_i |b_i|: kron_rotate 1e-5,
//    float_binary_linear 1e-5, gemm F32 1e-5, gemm BF16 1e-2 and F16 2e-3 (cuBLAS rounds the activations to the
//    weights' 16-bit type; the CPU keeps them float32), attention 3e-5 (float dot products and P.V sums of up to
//    70000 terms in another order).
//  Output buffers start with different garbage on the two backends, so an output an op fails to write differs.
//  - attention with a quantized probability row: a score that differs in its last bit can move one P across a
//    rounding boundary of the probs quantizer (a whole code step); up to 1 % of the query rows (at least 1) may
//    then differ by more than the tolerance, and the line says how many did.
//  - attention with probs_unmasked (the probs quantizer over each query's unmasked keys): on each backend, the same
//    call with a longer probs row (probs_len + 977) and, on CUDA, the same call replayed from a device position
//    (KvLayer::device_pos0, as a recorded decoding step) must give the context bit for bit.
// Prints one line per op and shape, then "N passed, M failed"; exit status 1 on any failure.
#include <dlfcn.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "../runtime/backend.h"

using namespace bwq::rt;

namespace {

Backend *C = nullptr, *G = nullptr;  // reference (CPU) and device (CUDA)
int g_pass = 0, g_fail = 0;
bool g_quick = false;
std::mt19937_64 rng(12345);

void report(bool ok, const std::string &op, const std::string &detail) {
  printf("%s %-20s %s\n", ok ? "PASS" : "FAIL", op.c_str(), detail.c_str());
  fflush(stdout);
  (ok ? g_pass : g_fail)++;
}

std::string fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char *f, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, f);
  vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  return buf;
}

// Both backends' errors after an op; false (and a FAIL line) when either has one.
bool backends_ok(const std::string &op, const std::string &shape) {
  G->sync();
  const char *eg = G->error(), *ec = C->error();
  if (!eg && !ec) return true;
  report(false, op, shape + ": error: " + (eg ? std::string("cuda: ") + eg : "") + (ec ? std::string(" cpu: ") + ec : ""));
  G->clear_error();
  C->clear_error();
  return false;
}

std::vector<float> randn(size_t n, float scale = 1.0f) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto &x : v) x = d(rng);
  return v;
}
std::vector<uint32_t> rand_words(size_t n) {
  std::vector<uint32_t> v(n);
  for (auto &x : v) x = (uint32_t)rng();
  return v;
}
int randint(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); }

// A buffer on both backends with the same contents.
struct Dual {
  void *c = nullptr, *g = nullptr;
  size_t bytes = 0;
};
Dual dual(const void *host, size_t bytes) {
  Dual d{C->alloc(bytes), G->alloc(bytes), bytes};
  if (host && d.c && d.g) {
    C->upload(d.c, host, bytes);
    G->upload(d.g, host, bytes);
  }
  return d;
}
template <class T>
Dual dual(const std::vector<T> &v) {
  return dual(v.data(), v.size() * sizeof(T));
}
// Different garbage on the two sides (0x7f bytes: 3.4e38 floats on the CPU; 0xfe bytes: -1.7e38 on the GPU).
void poison(Dual &d) {
  std::vector<unsigned char> c(d.bytes, 0x7f), g(d.bytes, 0xfe);
  C->upload(d.c, c.data(), d.bytes);
  G->upload(d.g, g.data(), d.bytes);
}
Dual out_dual(size_t bytes) {
  Dual d = dual(nullptr, bytes);
  poison(d);
  return d;
}
void drop(Dual &d) {
  C->free(d.c);
  G->free(d.g);
  d = Dual{};
}
template <class T>
std::vector<T> get(Backend *b, const void *p, size_t count) {
  std::vector<T> v(count);
  if (count) b->download(v.data(), p, count * sizeof(T));
  return v;
}

// Float comparison (see the top comment); exact = bitwise.
struct FloatCmp {
  double err = 0;
  size_t bad = 0, first = 0;
};
// tol 0: bitwise; normalised: relative to max |b|; else relative to |b_i|.
FloatCmp cmp_floats(const float *a, const float *b, size_t n, double tol, bool normalised = true) {
  FloatCmp r;
  double mx = 0;
  for (size_t i = 0; i < n; ++i) mx = std::max(mx, (double)fabsf(b[i]));
  const double floor = !normalised ? 1e-30 : mx > 0 ? mx : 1e-30;
  for (size_t i = 0; i < n; ++i) {
    double e;
    if (tol == 0) e = memcmp(&a[i], &b[i], 4) == 0 ? 0 : (isnan(a[i]) && isnan(b[i]) ? 0 : 1);
    else e = (isnan(a[i]) || isnan(b[i])) ? (isnan(a[i]) && isnan(b[i]) ? 0 : 1e30)
                                          : fabs((double)a[i] - b[i]) / (normalised ? floor : std::max((double)fabsf(b[i]), floor));
    if (e > tol && r.bad++ == 0) r.first = i;
    r.err = std::max(r.err, e);
  }
  return r;
}
std::string describe(const FloatCmp &c, const float *a, const float *b, double tol) {
  if (!c.bad) return tol == 0 ? "exact" : fmt("max err %.2e (tol %.0e)", c.err, tol);
  return fmt("%zu differ (max err %.2e, tol %.0e); first at %zu: cuda %.9g cpu %.9g", c.bad, c.err, tol, c.first,
             a[c.first], b[c.first]);
}
// Compares float arrays at c.p / g.p; one report line.
bool check_floats(const std::string &op, const std::string &shape, const void *pc, const void *pg, size_t n,
                  double tol, bool normalised = true) {
  const auto b = get<float>(C, pc, n), a = get<float>(G, pg, n);
  const FloatCmp c = cmp_floats(a.data(), b.data(), n, tol, normalised);
  report(c.bad == 0, op, shape + ": " + describe(c, a.data(), b.data(), tol));
  return c.bad == 0;
}

const char *qname(const Quantizer &q) {
  static char buf[64];
  switch (q.kind) {
    case QKind::NONE: return "none";
    case QKind::INT: snprintf(buf, sizeof buf, "int%d(%.2g)", q.bits, q.param); return buf;
    case QKind::TERNARY: snprintf(buf, sizeof buf, "ternary(%.2g)", q.param); return buf;
    default: return "binary";
  }
}
Quantizer qint(int bits, float clip = 1.0f) { return Quantizer{QKind::INT, bits, clip}; }
Quantizer qter(float ratio = 0.7f) { return Quantizer{QKind::TERNARY, 0, ratio}; }
Quantizer qbin() { return Quantizer{QKind::BINARY, 0, 0}; }
Quantizer qnone() { return Quantizer{}; }
CodeForm form_of(const Quantizer &q) {
  switch (q.kind) {
    case QKind::INT: return q.bits <= 8 ? CodeForm::INT8 : q.bits <= 15 ? CodeForm::INT8PAIR : CodeForm::FLOAT;
    case QKind::TERNARY: return CodeForm::TERNARY;
    case QKind::BINARY: return CodeForm::INT8;
    default: return CodeForm::FLOAT;
  }
}

// Rows of test activations: random normals at row scales 1e-3 .. 1e3, one all-zero row, one row of exact
// half-integers (with max 127: int8 clip 1 gives s = 1 and the codes hit round-half-even ties).
std::vector<float> activations(int rows, int cols) {
  std::vector<float> x = randn((size_t)rows * cols);
  for (int r = 0; r < rows; ++r) {
    const float sc = powf(10.0f, (float)randint(-3, 3));
    for (int j = 0; j < cols; ++j) x[(size_t)r * cols + j] *= sc;
  }
  if (rows >= 3) {
    std::fill(x.begin() + cols, x.begin() + 2 * cols, 0.0f);
    float *t = x.data() + 2 * (size_t)cols;
    for (int j = 0; j < cols; ++j) t[j] = (float)(j % 255 - 127) / 2.0f;
    t[0] = 127.0f;
  }
  return x;
}

// ------------------------------------------------------------------------------------------------
void check_embed_gather() {
  for (int hidden : {100, 4096})
    for (int rows : {1, 7, 129})
      for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
        const int vocab = 300;
        std::vector<uint16_t> t16((size_t)vocab * hidden);
        std::vector<float> t32 = randn((size_t)vocab * hidden);
        for (size_t i = 0; i < t16.size(); ++i) {
          uint32_t u;
          memcpy(&u, &t32[i], 4);
          t16[i] = dt == DType::BF16 ? (uint16_t)(u >> 16) : (uint16_t)(rng() & 0x7BFF);  // finite f16 values
        }
        std::vector<int32_t> ids(rows);
        for (auto &i : ids) i = randint(0, vocab - 1);
        Dual table = dt == DType::F32 ? dual(t32) : dual(t16), did = dual(ids), out = out_dual(4ull * rows * hidden);
        C->embed((const int32_t *)did.c, rows, table.c, dt, hidden, (float *)out.c);
        G->embed((const int32_t *)did.g, rows, table.g, dt, hidden, (float *)out.g);
        const std::string shape = fmt("%s rows=%d hidden=%d", dt == DType::F32 ? "f32" : dt == DType::BF16 ? "bf16" : "f16", rows, hidden);
        if (backends_ok("embed", shape)) check_floats("embed", shape, out.c, out.g, (size_t)rows * hidden, 0);
        drop(table), drop(did), drop(out);
      }
  for (int count : {1, 5, 64}) {
    const int cols = 777, src_rows = 100;
    std::vector<float> src = randn((size_t)src_rows * cols);
    std::vector<int> index(count);
    for (auto &i : index) i = randint(0, src_rows - 1);
    Dual s = dual(src), d = out_dual(4ull * count * cols);
    C->gather_rows((const float *)s.c, cols, index.data(), count, (float *)d.c);
    G->gather_rows((const float *)s.g, cols, index.data(), count, (float *)d.g);
    const std::string shape = fmt("count=%d cols=%d", count, cols);
    if (backends_ok("gather_rows", shape)) check_floats("gather_rows", shape, d.c, d.g, (size_t)count * cols, 0);
    drop(s), drop(d);
  }
}

void check_norm_rope() {
  for (int rows : {1, 7, 129})
    for (int cols : {64, 100, 4096})
      for (int variant = 0; variant < 3; ++variant) {  // 0: weight, 1: no weight, 2: weight, in place
        std::vector<float> x = randn((size_t)rows * cols, 3.0f), w = randn(cols);
        Dual dx = dual(x), dw = dual(w), dy = out_dual(4ull * rows * cols);
        const bool inplace = variant == 2;
        const float *wc = variant == 1 ? nullptr : (const float *)dw.c, *wg = variant == 1 ? nullptr : (const float *)dw.g;
        C->rms_norm((const float *)dx.c, rows, cols, wc, 1e-6f, inplace ? (float *)dx.c : (float *)dy.c);
        G->rms_norm((const float *)dx.g, rows, cols, wg, 1e-6f, inplace ? (float *)dx.g : (float *)dy.g);
        const std::string shape = fmt("rows=%d cols=%d%s", rows, cols, variant == 1 ? " no weight" : inplace ? " in place" : "");
        if (backends_ok("rms_norm", shape))
          check_floats("rms_norm", shape, inplace ? dx.c : dy.c, inplace ? dx.g : dy.g, (size_t)rows * cols, 0);
        drop(dx), drop(dw), drop(dy);
      }
  for (int rows : {1, 7, 129})
    for (int hd : {64, 128})
      for (int partial = 0; partial < 2; ++partial) {
        const int heads = 4, half = partial ? hd / 4 : hd / 2;
        std::vector<float> x = randn((size_t)rows * heads * hd), inv(half);
        for (int i = 0; i < half; ++i) inv[i] = (float)(1.0 / pow(10000.0, (double)(2 * i) / (2 * half)));
        std::vector<int32_t> pos(rows);
        for (auto &p : pos) p = randint(0, 32767);
        Dual dx = dual(x), dinv = dual(inv), dpos = dual(pos);
        C->rope((float *)dx.c, rows, heads, hd, (const float *)dinv.c, half, (const int32_t *)dpos.c);
        G->rope((float *)dx.g, rows, heads, hd, (const float *)dinv.g, half, (const int32_t *)dpos.g);
        const std::string shape = fmt("rows=%d heads=%d head_dim=%d half=%d", rows, heads, hd, half);
        if (backends_ok("rope", shape)) check_floats("rope", shape, dx.c, dx.g, x.size(), 0);
        drop(dx), drop(dinv), drop(dpos);
      }
}

void check_rotate() {
  struct AB {
    int a, b, rem, rows;
  };
  // K = 11008 (86 x 128), 4096, odd 3 x 5, 27648 (108 x 256: opt-in shared memory), 65536 (global-memory path);
  // with a remainder block (src/quant/kronecker.ts kroneckerSplit): K = 61 (7 x 8 + 5), 127 (11 x 11 + 6),
  // 10007 (prime: 100 x 100 + 7), 344 (18 x 19 + 2)
  std::vector<AB> shapes = {{86, 128, 0, 1}, {86, 128, 0, 33}, {64, 64, 0, 129}, {3, 5, 0, 7}, {108, 256, 0, 5},
                            {256, 256, 0, 2}, {7, 8, 5, 1}, {7, 8, 5, 40}, {11, 11, 6, 33}, {100, 100, 7, 9},
                            {18, 19, 2, 130}};
  for (const AB &s : shapes) {
    const int K = s.a * s.b + s.rem;
    std::vector<float> x = randn((size_t)s.rows * K), r1 = randn((size_t)s.a * s.a, 1.0f / sqrtf((float)s.a)),
                       r2 = randn((size_t)s.b * s.b, 1.0f / sqrtf((float)s.b)),
                       r3 = randn((size_t)(s.rem > 0 ? s.rem * s.rem : 1), 1.0f / sqrtf((float)(s.rem > 0 ? s.rem : 1)));
    Dual dx = dual(x), d1 = dual(r1), d2 = dual(r2), d3 = dual(r3), dt = out_dual(4ull * s.rows * K),
         dy = out_dual(4ull * s.rows * K);
    C->kron_rotate((const float *)dx.c, s.rows, s.a, s.b, s.rem, (const float *)d1.c, (const float *)d2.c,
                   (const float *)d3.c, (float *)dt.c, (float *)dy.c);
    G->kron_rotate((const float *)dx.g, s.rows, s.a, s.b, s.rem, (const float *)d1.g, (const float *)d2.g,
                   (const float *)d3.g, (float *)dt.g, (float *)dy.g);
    const std::string shape = fmt("rows=%d a=%d b=%d rem=%d (K=%d)", s.rows, s.a, s.b, s.rem, K);
    if (backends_ok("kron_rotate", shape)) check_floats("kron_rotate", shape, dy.c, dy.g, (size_t)s.rows * K, 1e-5);
    drop(dx), drop(d1), drop(d2), drop(d3), drop(dt), drop(dy);
  }
}

// Compares two backends' codes of `rows` rows; CUDA padding (columns >= cols, bits >= cols) must be zero.
std::string compare_codes(const Codes &cc, const Codes &cg, int rows, int cols, bool *ok) {
  *ok = true;
  std::string what;
  auto bad = [&](const std::string &m) {
    if (*ok) what = m;
    *ok = false;
  };
  if (cc.form == CodeForm::INT8 || cc.form == CodeForm::INT8PAIR) {
    for (int part = 0; part < (cc.form == CodeForm::INT8PAIR ? 2 : 1); ++part) {
      const int8_t *pc = part ? cc.i8_low : cc.i8, *pg = part ? cg.i8_low : cg.i8;
      const auto hc = get<int8_t>(C, pc, (size_t)rows * cc.ld_bytes), hg = get<int8_t>(G, pg, (size_t)rows * cg.ld_bytes);
      for (int r = 0; r < rows && *ok; ++r) {
        for (int j = 0; j < cols; ++j)
          if (hc[(size_t)r * cc.ld_bytes + j] != hg[(size_t)r * cg.ld_bytes + j]) {
            bad(fmt("%s code [%d, %d]: cuda %d cpu %d", part ? "low" : "int8", r, j, hg[(size_t)r * cg.ld_bytes + j],
                    hc[(size_t)r * cc.ld_bytes + j]));
            break;
          }
        for (int j = cols; j < cg.ld_bytes; ++j)
          if (hg[(size_t)r * cg.ld_bytes + j]) {
            bad(fmt("cuda padding byte [%d, %d] = %d", r, j, hg[(size_t)r * cg.ld_bytes + j]));
            break;
          }
      }
    }
  } else if (cc.form == CodeForm::TERNARY) {
    const int kw = (cols + 31) / 32;
    for (int part = 0; part < 2; ++part) {
      const auto hc = get<uint32_t>(C, part ? cc.minus : cc.plus, (size_t)rows * cc.ld_words);
      const auto hg = get<uint32_t>(G, part ? cg.minus : cg.plus, (size_t)rows * cg.ld_words);
      for (int r = 0; r < rows && *ok; ++r)
        for (int w = 0; w < cg.ld_words; ++w) {
          const uint32_t vg = hg[(size_t)r * cg.ld_words + w], vc = w < kw ? hc[(size_t)r * cc.ld_words + w] : 0u;
          if (vg != vc) {
            bad(fmt("%s word [%d, %d]: cuda %08x cpu %08x", part ? "minus" : "plus", r, w, vg, vc));
            break;
          }
        }
    }
  }
  if (cc.form != CodeForm::FLOAT && *ok) {
    const auto sc = get<float>(C, cc.scales, rows), sg = get<float>(G, cg.scales, rows);
    for (int r = 0; r < rows; ++r)
      if (memcmp(&sc[r], &sg[r], 4)) {
        bad(fmt("scale [%d]: cuda %.9g cpu %.9g", r, sg[r], sc[r]));
        break;
      }
  }
  return what;
}

void check_quantize() {
  const std::vector<Quantizer> qs = {qnone(),      qint(2),   qint(4, 0.9f), qint(6), qint(8), qint(8, 0.85f),
                                     qint(12),     qint(16),  qint(24),      qter(0.7f), qter(0.0f), qbin()};
  for (const Quantizer &q : qs)
    for (int rows : {1, 7, 129})
      for (int cols : {32, 100, 4096, 11008}) {
        if (g_quick && cols == 11008 && rows == 129) continue;
        const std::vector<float> x = activations(rows, cols);
        const CodeForm form = form_of(q);
        Codes cc, cg;
        Dual dx = dual(x), dh = out_dual(4ull * rows * cols);
        if (form != CodeForm::FLOAT) {
          C->alloc_codes(cc, form, rows, cols);
          G->alloc_codes(cg, form, rows, cols);
        }
        C->quantize((const float *)dx.c, rows, cols, q, cc, (float *)dh.c);
        G->quantize((const float *)dx.g, rows, cols, q, cg, (float *)dh.g);
        const std::string shape = fmt("%s rows=%d cols=%d", qname(q), rows, cols);
        if (backends_ok("quantize", shape)) {
          bool ok;
          const std::string why = compare_codes(cc, cg, rows, cols, &ok);
          if (!ok) report(false, "quantize", shape + ": " + why);
          else check_floats("quantize", shape + " codes, scales exact; x_hat", dh.c, dh.g, (size_t)rows * cols, 0);
        }
        if (form != CodeForm::FLOAT) C->free_codes(cc), G->free_codes(cg);
        drop(dx), drop(dh);
      }
}

void check_linear() {
  struct NK {
    int n, k;
  };
  const std::vector<NK> nks = {{128, 4096}, {200, 100}, {256, 11008}, {130, 33}, {1024, 2048}};
  const std::vector<Quantizer> qs = {qint(4), qint(8), qbin(), qint(12), qter(0.7f)};
  for (const NK &nk : nks) {
    // packed weights with dirty padding bits
    const int kw = (nk.k + 31) / 32;
    const std::vector<uint32_t> words = rand_words((size_t)nk.n * kw);
    std::vector<float> wscale(nk.n);
    for (auto &s : wscale) s = 0.01f + std::uniform_real_distribution<float>(0, 1)(rng);
    PackedWeights wc, wg;
    C->upload_packed(wc, words.data(), nk.n, nk.k);
    G->upload_packed(wg, words.data(), nk.n, nk.k);
    Dual dws = dual(wscale);
    for (int rows : {1, 3, 17, 64, 129, 300}) {
      if (g_quick && rows == 300 && nk.k > 4096) continue;
      const std::vector<float> x = activations(rows, nk.k);
      Dual dx = dual(x), dy = out_dual(4ull * rows * nk.n), dacc = out_dual(8ull * rows * nk.n);
      for (const Quantizer &q : qs) {
        Codes cc, cg;
        C->alloc_codes(cc, form_of(q), rows, nk.k);
        G->alloc_codes(cg, form_of(q), rows, nk.k);
        poison(dy);
        C->quantize((const float *)dx.c, rows, nk.k, q, cc, nullptr);
        G->quantize((const float *)dx.g, rows, nk.k, q, cg, nullptr);
        C->packed_linear(cc, rows, wc, (const float *)dws.c, (int32_t *)dacc.c, (float *)dy.c);
        G->packed_linear(cg, rows, wg, (const float *)dws.g, (int32_t *)dacc.g, (float *)dy.g);
        const std::string shape = fmt("%s rows=%d n=%d k=%d", qname(q), rows, nk.n, nk.k);
        if (backends_ok("packed_linear", shape)) {
          bool ok;
          const std::string why = compare_codes(cc, cg, rows, nk.k, &ok);
          if (!ok) report(false, "packed_linear", shape + ": codes differ: " + why);
          else check_floats("packed_linear", shape, dy.c, dy.g, (size_t)rows * nk.n, 0);
        }
        C->free_codes(cc), G->free_codes(cg);
      }
      if (rows != 64) {
        poison(dy);
        C->float_binary_linear((const float *)dx.c, rows, wc, (const float *)dws.c, (float *)dy.c);
        G->float_binary_linear((const float *)dx.g, rows, wg, (const float *)dws.g, (float *)dy.g);
        const std::string shape = fmt("rows=%d n=%d k=%d", rows, nk.n, nk.k);
        if (backends_ok("float_binary_linear", shape))
          check_floats("float_binary_linear", shape, dy.c, dy.g, (size_t)rows * nk.n, 1e-5);
      }
      drop(dx), drop(dy), drop(dacc);
    }
    C->free_packed(wc), G->free_packed(wg);
    drop(dws);
  }
}

void check_gemm() {
  struct MNK {
    int m, n, k;
  };
  const std::vector<MNK> shapes = {{1, 256, 4096}, {33, 100, 64}, {129, 512, 1000}, {7, 8, 3}, {300, 1024, 2048}};
  for (const MNK &s : shapes)
    for (DType dt : {DType::F32, DType::BF16, DType::F16})
      for (int acc = 0; acc < 2; ++acc) {
        const int lda = s.k + 3, ldc = s.n + 5;
        std::vector<float> a = randn((size_t)s.m * lda), w32 = randn((size_t)s.n * s.k, 1.0f / sqrtf((float)s.k)),
                           c0 = randn((size_t)s.m * ldc);
        std::vector<uint16_t> w16(w32.size());
        for (size_t i = 0; i < w32.size(); ++i) {
          uint32_t u;
          memcpy(&u, &w32[i], 4);
          if (dt == DType::BF16) {
            w16[i] = (uint16_t)(u >> 16);
          } else {  // f16 of a normal value in about [2^-8, 2): sign | exponent 7..15 | mantissa
            w16[i] = (uint16_t)(((u >> 31) << 15) | ((7 + (u >> 20) % 9) << 10) | (u & 0x3FF));
          }
        }
        Dual da = dual(a), dw = dt == DType::F32 ? dual(w32) : dual(w16), dc = dual(c0);
        const FloatWeights fc{s.n, s.k, dt, dw.c}, fg{s.n, s.k, dt, dw.g};
        C->gemm((const float *)da.c, s.m, lda, fc, (float *)dc.c, ldc, acc);
        G->gemm((const float *)da.g, s.m, lda, fg, (float *)dc.g, ldc, acc);
        const double tol = dt == DType::F32 ? 1e-5 : dt == DType::BF16 ? 1e-2 : 2e-3;
        const std::string shape = fmt("%s m=%d n=%d k=%d lda=%d ldc=%d%s", dt == DType::F32 ? "f32" : dt == DType::BF16 ? "bf16" : "f16",
                                      s.m, s.n, s.k, lda, ldc, acc ? " accumulate" : "");
        if (backends_ok("gemm", shape)) check_floats("gemm", shape, dc.c, dc.g, (size_t)s.m * ldc, tol);
        drop(da), drop(dw), drop(dc);
      }
}

void check_elementwise() {
  for (size_t count : {(size_t)1000, (size_t)100003}) {
    std::vector<float> a = randn(count, 4.0f), b = randn(count);
    Dual da = dual(a), db = dual(b);
    C->add((float *)da.c, (const float *)db.c, count);
    G->add((float *)da.g, (const float *)db.g, count);
    if (backends_ok("add", fmt("count=%zu", count))) check_floats("add", fmt("count=%zu", count), da.c, da.g, count, 0);
    for (Act act : {Act::SILU, Act::GELU, Act::GELU_TANH, Act::RELU}) {
      C->upload(da.c, a.data(), 4 * count);
      G->upload(da.g, a.data(), 4 * count);
      C->gated_act((float *)da.c, (const float *)db.c, count, act);
      G->gated_act((float *)da.g, (const float *)db.g, count, act);
      const char *names[] = {"silu", "gelu", "gelu_tanh", "relu"};
      const std::string shape = fmt("%s count=%zu", names[(int)act], count);
      if (backends_ok("gated_act", shape))
        check_floats("gated_act", shape, da.c, da.g, count, act == Act::RELU ? 0 : 1e-6);
    }
    drop(da), drop(db);
  }
  for (int rows : {1, 129})
    for (int cols : {100, 4096}) {
      std::vector<float> y = randn((size_t)rows * cols), bias = randn(cols);
      Dual dy = dual(y), db = dual(bias);
      C->add_bias((float *)dy.c, rows, cols, (const float *)db.c);
      G->add_bias((float *)dy.g, rows, cols, (const float *)db.g);
      const std::string shape = fmt("rows=%d cols=%d", rows, cols);
      if (backends_ok("add_bias", shape)) check_floats("add_bias", shape, dy.c, dy.g, (size_t)rows * cols, 0);
      drop(dy), drop(db);
    }
}

void check_nll() {
  for (int rows : {1, 7})
    for (int vocab : {1000, 151936}) {
      std::vector<float> logits = randn((size_t)rows * vocab, 5.0f);
      std::vector<int32_t> targets(rows);
      for (auto &t : targets) t = randint(0, vocab - 1);
      Dual dl = dual(logits), dt = dual(targets), dn = out_dual(8ull * rows);
      C->nll_rows((const float *)dl.c, rows, vocab, (const int32_t *)dt.c, (double *)dn.c);
      G->nll_rows((const float *)dl.g, rows, vocab, (const int32_t *)dt.g, (double *)dn.g);
      const std::string shape = fmt("rows=%d vocab=%d", rows, vocab);
      if (backends_ok("nll_rows", shape)) {
        const auto b = get<double>(C, dn.c, rows), a = get<double>(G, dn.g, rows);
        double err = 0;
        int worst = 0;
        for (int r = 0; r < rows; ++r) {
          const double e = fabs(a[r] - b[r]) / std::max(1e-300, fabs(b[r]));
          if (e > err) err = e, worst = r;
        }
        report(err <= 1e-6, "nll_rows",
               shape + fmt(": max err %.2e (tol 1e-06; row %d: cuda %.17g cpu %.17g)", err, worst, a[worst], b[worst]));
      }
      drop(dl), drop(dt), drop(dn);
    }
}

// ------------------------------------------------------------------------------------------------
struct AttnCase {
  int batch, n_heads, n_kv, hd, prefix, t, window, probs_extra;
  AttentionRecipe r;
};

struct Cache {
  KvLayer c, g;
  Dual k_hat, v_hat, k_codes, k_scales;
};

Cache make_cache(int batch, int max_t, int n_kv, int hd, bool codes) {
  Cache k;
  const size_t slots = (size_t)batch * max_t, w = (size_t)n_kv * hd;
  k.k_hat = dual(nullptr, 4 * slots * w);
  k.v_hat = dual(nullptr, 4 * slots * w);
  if (codes) {
    k.k_codes = dual(nullptr, slots * w);
    k.k_scales = dual(nullptr, 4 * slots * n_kv);
  }
  for (int side = 0; side < 2; ++side) {
    KvLayer &l = side ? k.g : k.c;
    l.batch = batch, l.max_t = max_t, l.n_kv_heads = n_kv, l.head_dim = hd;
    l.k_hat = (float *)(side ? k.k_hat.g : k.k_hat.c);
    l.v_hat = (float *)(side ? k.v_hat.g : k.v_hat.c);
    l.k_codes = (int8_t *)(side ? k.k_codes.g : k.k_codes.c);
    l.k_scales = (float *)(side ? k.k_scales.g : k.k_scales.c);
  }
  return k;
}

bool has_int_codes(const Quantizer &q) {
  return (q.kind == QKind::INT && q.bits <= 8) || q.kind == QKind::TERNARY || q.kind == QKind::BINARY;
}

// (token, head) rows of g with an element farther than tol * max|b| from b.
int rows_beyond(const std::vector<float> &g, const std::vector<float> &b, int nrows, int hd, double tol) {
  double mx = 0;
  for (float v : b) mx = std::max(mx, (double)fabsf(v));
  int bad = 0;
  for (int r = 0; r < nrows; ++r)
    for (int d = 0; d < hd; ++d)
      if (!(fabs((double)g[(size_t)r * hd + d] - b[(size_t)r * hd + d]) <= tol * mx)) {
        ++bad;
        break;
      }
  return bad;
}
constexpr double kAttnTol = 3e-5;
// Rows a quantized probs row may flip a code in (the backends' exp differ in the last bits).
int flips_allowed(const AttnCase &a, int nrows) { return a.r.probs.kind != QKind::NONE ? std::max(1, nrows / 100) : 0; }

// probs_unmasked: a longer probs row (both backends) and a device position (CUDA) leave the context unchanged, bit
// for bit (b, g: the context of `sh` on the CPU and on CUDA). A call with a device position takes the row kernel
// (what a recorded decoding step replays); a prefill of t >= 16 integer-score rows takes the tiled kernel, whose
// sums run in another order: that replay is held to the CPU context within the attention tolerance instead.
void check_attention_window_free(const AttnCase &a, const Cache &kv, const AttentionShape &sh, const Dual &dq,
                                 const std::vector<float> &b, const std::vector<float> &g, const std::string &shape) {
  const size_t n = b.size();
  Dual longer = out_dual(4 * n), replay = out_dual(4 * n);
  AttentionShape sl = sh;
  sl.probs_len = sh.probs_len + 977;
  C->attention((const float *)dq.c, kv.c, sl, a.r, (float *)longer.c);
  G->attention((const float *)dq.g, kv.g, sl, a.r, (float *)longer.g);
  const std::vector<int32_t> pos{sh.pos0};
  Dual dpos = dual(pos);
  KvLayer kd = kv.g;
  kd.device_pos0 = (const int32_t *)dpos.g;
  G->attention((const float *)dq.g, kd, sh, a.r, (float *)replay.g);
  if (backends_ok("attention", shape + " (window-free)")) {
    const bool cpu_same = get<float>(C, longer.c, n) == b;
    const bool cuda_same = get<float>(G, longer.g, n) == g;
    const auto r = get<float>(G, replay.g, n);
    const int nrows = sh.batch * sh.t * sh.n_heads;
    const bool replay_same = r == g || (sh.t >= 16 && rows_beyond(r, b, nrows, sh.head_dim, kAttnTol) <= flips_allowed(a, nrows));
    report(cpu_same && cuda_same && replay_same, "attention",
           shape + fmt(": probs row +977 keys: cpu %s, cuda %s; device pos0: cuda %s", cpu_same ? "same" : "DIFFERS",
                       cuda_same ? "same" : "DIFFERS", replay_same ? "same" : "DIFFERS"));
  }
  drop(longer), drop(replay), drop(dpos);
}

void check_attention_case(const AttnCase &a) {
  const int S = a.prefix + a.t, max_t = S + 3;
  const bool codes = has_int_codes(a.r.key);
  Cache kv = make_cache(a.batch, max_t, a.n_kv, a.hd, codes);
  const std::string shape = fmt("b=%d heads=%d/%d hd=%d pos0=%d t=%d win=%d L=%d q=%s", a.batch, a.n_heads, a.n_kv, a.hd,
                                a.prefix, a.t, a.window, S + a.probs_extra, qname(a.r.query)) +
                            fmt(" k=%s", qname(a.r.key)) + fmt(" p=%s%s", qname(a.r.probs), a.r.probs_unmasked ? "/unmasked" : "") +
                            fmt(" v=%s", qname(a.r.value));
  // the prefix, then the chunk, into the cache
  for (int part = 0; part < 2; ++part) {
    const int t = part ? a.t : a.prefix, pos0 = part ? a.prefix : 0;
    if (t == 0) continue;
    const size_t n = (size_t)a.batch * t * a.n_kv * a.hd;
    std::vector<float> k = randn(n), v = randn(n);
    Dual dk = dual(k), dv = dual(v);
    C->kv_store(kv.c, (const float *)dk.c, (const float *)dv.c, a.batch, t, pos0, a.r.key, a.r.value);
    G->kv_store(kv.g, (const float *)dk.g, (const float *)dv.g, a.batch, t, pos0, a.r.key, a.r.value);
    drop(dk), drop(dv);
  }
  bool ok = backends_ok("kv_store", shape);
  if (ok) {
    const size_t cells = (size_t)a.batch * max_t * a.n_kv;
    const auto kc = get<float>(C, kv.k_hat.c, cells * a.hd), kg = get<float>(G, kv.k_hat.g, cells * a.hd);
    const auto vc = get<float>(C, kv.v_hat.c, cells * a.hd), vg = get<float>(G, kv.v_hat.g, cells * a.hd);
    ok = memcmp(kc.data(), kg.data(), 4 * kc.size()) == 0 && memcmp(vc.data(), vg.data(), 4 * vc.size()) == 0;
    if (ok && codes) {
      ok = get<int8_t>(C, kv.k_codes.c, cells * a.hd) == get<int8_t>(G, kv.k_codes.g, cells * a.hd) &&
           get<uint32_t>(C, kv.k_scales.c, cells) == get<uint32_t>(G, kv.k_scales.g, cells);
    }
    report(ok, "kv_store", shape + (ok ? ": k_hat, v_hat, codes, scales exact" : ": cache contents differ"));
  }
  if (ok) {
    const int rows = a.batch * a.t, qw = a.n_heads * a.hd;
    std::vector<float> q = randn((size_t)rows * qw);
    Dual dq = dual(q), dctx = out_dual(4ull * rows * qw);
    AttentionShape sh;
    sh.batch = a.batch, sh.t = a.t, sh.pos0 = a.prefix, sh.n_heads = a.n_heads, sh.n_kv_heads = a.n_kv;
    sh.head_dim = a.hd, sh.sliding_window = a.window, sh.probs_len = S + a.probs_extra;
    sh.scaling = 1.0 / sqrt((double)a.hd);
    C->attention((const float *)dq.c, kv.c, sh, a.r, (float *)dctx.c);
    G->attention((const float *)dq.g, kv.g, sh, a.r, (float *)dctx.g);
    if (backends_ok("attention", shape)) {
      const auto b = get<float>(C, dctx.c, (size_t)rows * qw), g = get<float>(G, dctx.g, (size_t)rows * qw);
      const double tol = kAttnTol;
      const int nrows = rows * a.n_heads;
      const FloatCmp all = cmp_floats(g.data(), b.data(), b.size(), tol);
      // (token, head) rows with an element beyond tol (normalised by the whole array's max)
      const int bad_rows = rows_beyond(g, b, nrows, a.hd, tol);
      const int allowed = flips_allowed(a, nrows);
      std::string d = fmt(": max err %.2e (tol %.0e)", all.err, tol);
      if (bad_rows) d += fmt(", %d of %d (token, head) rows beyond tol (%d allowed: probs-code flips)", bad_rows, nrows, allowed);
      report(bad_rows <= allowed, "attention", shape + d);
      if (a.r.probs_unmasked) check_attention_window_free(a, kv, sh, dq, b, g, shape);
    }
    drop(dq), drop(dctx);
  }
  drop(kv.k_hat), drop(kv.v_hat);
  if (codes) drop(kv.k_codes), drop(kv.k_scales);
}

void check_attention() {
  const Quantizer none = qnone();
  std::vector<AttnCase> cases;
  // plain float attention, GQA, head_dim 64 / 128, prefill and chunks after a prefix
  cases.push_back({2, 8, 2, 64, 0, 37, 0, 0, {none, none, none, none}});
  cases.push_back({1, 4, 4, 128, 100, 29, 0, 0, {none, none, none, none}});
  cases.push_back({2, 6, 2, 128, 50, 1, 0, 0, {none, none, none, none}});
  // sliding window; chunk of a longer call (probs row longer than pos0 + t)
  cases.push_back({1, 4, 2, 64, 150, 50, 16, 0, {none, none, none, none}});
  cases.push_back({2, 4, 1, 64, 64, 64, 0, 100, {none, none, qint(8), none}});
  // the tiled float prefill (t >= 16): several query and key tiles, a chunk after a prefix that does not end on a
  // tile, a sliding window that masks whole key tiles for some rows, quantized keys and values under a float query
  cases.push_back({1, 8, 2, 128, 0, 300, 0, 0, {none, none, none, none}});
  cases.push_back({2, 4, 2, 64, 70, 90, 0, 0, {none, none, none, none}});
  cases.push_back({1, 4, 1, 128, 30, 150, 40, 0, {none, none, none, none}});
  cases.push_back({1, 4, 2, 128, 0, 100, 0, 0, {none, qint(8), none, qint(6)}});
  // integer scores (int8, ternary, binary x int4), with quantized probabilities and values
  cases.push_back({2, 8, 2, 64, 40, 24, 0, 0, {qint(8), qint(8), qint(8), qint(8)}});
  cases.push_back({1, 4, 2, 128, 0, 129, 0, 0, {qter(0.7f), qter(0.7f), qter(0.5f), qter(0.7f)}});
  cases.push_back({1, 4, 2, 64, 30, 10, 8, 0, {qbin(), qint(4), qint(4), qint(6)}});
  cases.push_back({1, 2, 1, 128, 10, 20, 0, 0, {qint(6, 0.9f), qter(0.7f), none, qint(4)}});
  // float scores from quantized operands (int query against float / 12-bit keys)
  cases.push_back({1, 4, 2, 64, 20, 33, 0, 0, {qint(8), none, none, qint(8)}});
  cases.push_back({1, 4, 4, 64, 0, 40, 0, 0, {qint(4), qint(12), qint(8), qint(12)}});
  // long rows: S = 32768 (shared-memory scores), S = 70000 (global scratch), decode steps, sliding window 4096
  cases.push_back({1, 4, 1, 128, 32767, 1, 0, 0, {none, none, none, none}});
  cases.push_back({1, 2, 1, 64, 32760, 8, 0, 0, {qint(8), qint(8), qint(8), none}});
  cases.push_back({1, 2, 1, 64, 5000, 3, 4096, 0, {none, none, qter(0.7f), none}});
  if (!g_quick) cases.push_back({1, 2, 1, 64, 69999, 1, 0, 0, {qter(0.7f), qter(0.7f), none, none}});
  // probs quantizer over each query's unmasked keys (issue #16): prefill rows of every length, a chunk after a prefix
  // in a longer call, decode steps, a sliding window, int probabilities; plus the window-free checks
  auto unmasked = [](AttentionRecipe r) {
    r.probs_unmasked = true;
    return r;
  };
  cases.push_back({1, 4, 2, 128, 0, 129, 0, 0, unmasked({qter(0.7f), qter(0.7f), qter(1.0f), qter(0.7f)})});
  cases.push_back({2, 8, 2, 64, 40, 24, 0, 60, unmasked({qint(8), qint(8), qter(2.0f), qint(8)})});
  cases.push_back({2, 6, 2, 128, 50, 1, 0, 0, unmasked({qter(0.7f), qter(0.7f), qter(0.5f), qter(0.7f)})});
  cases.push_back({1, 2, 1, 64, 5000, 3, 4096, 0, unmasked({none, none, qter(1.5f), none})});
  cases.push_back({1, 4, 2, 64, 30, 10, 8, 0, unmasked({qint(8), qint(4), qint(4), qint(6)})});
  cases.push_back({1, 2, 1, 64, 32760, 8, 0, 0, unmasked({qint(8), qint(8), qter(1.0f), none})});
  // the tiled integer-score prefill (t >= 16): several query and key tiles, GQA, a chunk after a prefix, a sliding
  // window, int and ternary probabilities over the unmasked keys, unquantized probabilities
  cases.push_back({1, 8, 2, 128, 0, 300, 0, 0, unmasked({qter(0.7f), qter(0.7f), qter(1.0f), qter(0.7f)})});
  cases.push_back({2, 4, 2, 64, 70, 90, 0, 0, unmasked({qint(8), qint(8), qint(8), qint(8)})});
  cases.push_back({1, 4, 1, 128, 30, 150, 40, 0, unmasked({qter(0.7f), qter(0.7f), qter(1.5f), none})});
  cases.push_back({1, 4, 2, 128, 0, 100, 0, 0, {qter(0.7f), qint(6), none, qint(8)}});
  for (const AttnCase &c : cases) check_attention_case(c);
}

void check_errors() {
  // a float-form codes object into packed_linear must set the sticky error, and clear_error must reset it
  Codes none;
  PackedWeights w;
  G->upload_packed(w, std::vector<uint32_t>(4, 0).data(), 4, 100);
  G->packed_linear(none, 1, w, nullptr, nullptr, nullptr);
  const bool set = G->error() != nullptr;
  G->clear_error();
  const bool cleared = G->error() == nullptr;
  G->free_packed(w);
  report(set && cleared, "errors", set && cleared ? "sticky error set and cleared" : "no error for float codes in packed_linear");
}

// --bench: GPU times of a few decoder-sized ops (mean of 10 calls after one warm-up; no comparison).
template <class F>
double time_ms(F &&f, int reps = 10) {
  f();
  G->sync();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) f();
  G->sync();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / reps;
}

void bench() {
  auto gbuf = [](size_t bytes) { return G->alloc(bytes); };
  const int H = 4096, N = 4096;
  for (int rows : {1, 2048}) {
    std::vector<float> x = randn((size_t)rows * H);
    float *dx = (float *)gbuf(4ull * rows * H), *dy = (float *)gbuf(4ull * rows * N), *dh = (float *)gbuf(4ull * rows * H);
    int32_t *acc = (int32_t *)gbuf(8ull * rows * N);
    G->upload(dx, x.data(), 4ull * rows * H);
    PackedWeights w;
    G->upload_packed(w, rand_words((size_t)N * H / 32).data(), N, H);
    std::vector<float> ws(N, 0.5f);
    float *dws = (float *)gbuf(4 * N);
    G->upload(dws, ws.data(), 4 * N);
    for (const Quantizer &q : {qint(8), qter(0.7f), qint(12)}) {
      Codes c;
      G->alloc_codes(c, form_of(q), rows, H);
      const double tq = time_ms([&] { G->quantize(dx, rows, H, q, c, dh); });
      const double tl = time_ms([&] { G->packed_linear(c, rows, w, dws, acc, dy); });
      printf("bench quantize %-12s rows=%d cols=%d: %.3f ms; packed_linear n=%d: %.3f ms\n", qname(q), rows, H, tq, N, tl);
      G->free_codes(c);
    }
    printf("bench float_binary_linear rows=%d %dx%d: %.3f ms\n", rows, N, H,
           time_ms([&] { G->float_binary_linear(dx, rows, w, dws, dy); }));
    std::vector<uint16_t> w16((size_t)N * H, 0x3c00);
    void *dw = gbuf(2ull * N * H);
    G->upload(dw, w16.data(), 2ull * N * H);
    const FloatWeights fw{N, H, DType::BF16, dw};
    printf("bench gemm bf16 rows=%d %dx%d: %.3f ms\n", rows, N, H, time_ms([&] { G->gemm(dx, rows, H, fw, dy, N, false); }));
    std::vector<float> r1 = randn(64 * 64), r2 = randn(64 * 64);
    float *d1 = (float *)gbuf(4 * 64 * 64), *d2 = (float *)gbuf(4 * 64 * 64);
    G->upload(d1, r1.data(), 4 * 64 * 64), G->upload(d2, r2.data(), 4 * 64 * 64);
    printf("bench kron_rotate rows=%d 64x64: %.3f ms\n", rows, time_ms([&] { G->kron_rotate(dx, rows, 64, 64, 0, d1, d2, nullptr, dy, dh); }));
    printf("bench rms_norm rows=%d cols=%d: %.3f ms\n", rows, H, time_ms([&] { G->rms_norm(dx, rows, H, dws, 1e-6f, dh); }));
    G->free_packed(w);
    for (void *p : {(void *)dx, (void *)dy, (void *)dh, (void *)acc, (void *)dws, dw, (void *)d1, (void *)d2}) G->free(p);
  }
  // attention, llama-7B-like heads (32 / 8, head_dim 128), one sequence
  struct A {
    int pos0, t;
    AttentionRecipe r;
  };
  AttentionRecipe bwta{qter(0.7f), qter(0.7f), qter(1.0f), qter(0.7f)};
  bwta.probs_unmasked = true;
  for (const A &a : {A{0, 2048, {}}, A{4095, 1, {}}, A{32767, 1, {}}, A{0, 2048, {qint(8), qint(8), qint(8), qint(8)}},
                     A{0, 2048, bwta}, A{32767, 1, {qint(8), qint(8), qint(8), qint(8)}}}) {
    const int S = a.pos0 + a.t, nh = 32, nkv = 8, hd = 128;
    KvLayer kv;
    kv.batch = 1, kv.max_t = S, kv.n_kv_heads = nkv, kv.head_dim = hd;
    kv.k_hat = (float *)gbuf(4ull * S * nkv * hd);
    kv.v_hat = (float *)gbuf(4ull * S * nkv * hd);
    if (has_int_codes(a.r.key)) kv.k_codes = (int8_t *)gbuf((size_t)S * nkv * hd), kv.k_scales = (float *)gbuf(4ull * S * nkv);
    float *q = (float *)gbuf(4ull * a.t * nh * hd), *ctx = (float *)gbuf(4ull * a.t * nh * hd);
    std::vector<float> qh = randn((size_t)a.t * nh * hd);
    G->upload(q, qh.data(), 4 * qh.size());
    AttentionShape sh;
    sh.t = a.t, sh.pos0 = a.pos0, sh.n_heads = nh, sh.n_kv_heads = nkv, sh.head_dim = hd, sh.probs_len = S;
    sh.scaling = 1.0 / sqrt((double)hd);
    printf("bench attention heads 32/8 hd 128 pos0=%d t=%d q/k/p/v=%s: %.3f ms\n", a.pos0, a.t, qname(a.r.query),
           time_ms([&] { G->attention(q, kv, sh, a.r, ctx); }, 3));
    for (void *p : {(void *)kv.k_hat, (void *)kv.v_hat, (void *)kv.k_codes, (void *)kv.k_scales, (void *)q, (void *)ctx}) G->free(p);
  }
  if (const char *e = G->error()) printf("bench error: %s\n", e);
}

}  // namespace

int main(int argc, char **argv) {
  const char *lib = "build/Release/libbwq_cuda.so";
  bool do_bench = false;
  std::string only;  // --only=a,b: just the checks whose group names are listed
  for (int i = 1; i < argc; ++i) {
    if (!strcmp(argv[i], "--quick")) g_quick = true;
    else if (!strcmp(argv[i], "--bench")) do_bench = true;
    else if (!strncmp(argv[i], "--only=", 7)) only = std::string(",") + (argv[i] + 7) + ",";
    else lib = argv[i];
  }
  auto want = [&](const char *group) { return only.empty() || only.find(std::string(",") + group + ",") != std::string::npos; };
  void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    fprintf(stderr, "cannot open %s: %s\n", lib, dlerror());
    return 2;
  }
  typedef Backend *(*Create)(char *, size_t);
  Create create = (Create)dlsym(h, "bwq_cuda_backend_create");
  if (!create) {
    fprintf(stderr, "%s has no bwq_cuda_backend_create\n", lib);
    return 2;
  }
  char msg[256] = "";
  G = create(msg, sizeof msg);
  if (!G) {
    fprintf(stderr, "no CUDA backend: %s\n", msg);
    return 2;
  }
  C = cpu_backend();
  printf("reference: %s\ndevice:    %s\n", C->name(), G->name());
  if (want("embed")) check_embed_gather();
  if (want("norm")) check_norm_rope();
  if (want("rotate")) check_rotate();
  if (want("quantize")) check_quantize();
  if (want("linear")) check_linear();
  if (want("gemm")) check_gemm();
  if (want("elementwise")) check_elementwise();
  if (want("loss")) check_nll();
  if (want("attention")) check_attention();
  if (want("errors")) check_errors();
  if (do_bench) bench();
  printf("%d passed, %d failed\n", g_pass, g_fail);
  delete G;
  return g_fail ? 1 : 0;
}
