// CPU entry points of the C ABI: cpuid dispatch, a persistent std::thread pool, and the
// per-call scratch (masked / padded activation copies) shared by all ISA variants.
#include <stdlib.h>
#include <string.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "../include/bwq.h"
#include "kernels_internal.h"

#if !(defined(__x86_64__) || defined(__i386__))
// Non-x86 build: the SIMD objects are empty; detect_level() never selects them.
namespace bwq {
void tb_block_avx2(const TbArgs &a, int m0, int m1, int n0, int n1) { tb_block_scalar(a, m0, m1, n0, n1); }
void tt_block_avx2(const TtArgs &a, int m0, int m1, int n0, int n1) { tt_block_scalar(a, m0, m1, n0, n1); }
void i8_block_avx2(const I8Args &a, int m0, int m1, int n0, int n1) { i8_block_scalar(a, m0, m1, n0, n1); }
void tb_block_avx512(const TbArgs &a, int m0, int m1, int n0, int n1) { tb_block_scalar(a, m0, m1, n0, n1); }
void tt_block_avx512(const TtArgs &a, int m0, int m1, int n0, int n1) { tt_block_scalar(a, m0, m1, n0, n1); }
void i8_block_avx512(const I8Args &a, int m0, int m1, int n0, int n1) { i8_block_scalar(a, m0, m1, n0, n1); }
}  // namespace bwq
#endif

namespace bwq {
namespace {

int detect_level() {
#if !(defined(__x86_64__) || defined(__i386__))
  return BWQ_CPU_SCALAR;
#else
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512vpopcntdq") && __builtin_cpu_supports("avx512vnni"))
    return BWQ_CPU_AVX512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt")) return BWQ_CPU_AVX2;
  return BWQ_CPU_SCALAR;
#endif
}

int parse_level_env(int best) {
  const char *e = getenv("BWQ_CPU");
  if (!e || !*e) return best;
  int want = best;
  if (!strcmp(e, "scalar")) want = BWQ_CPU_SCALAR;
  else if (!strcmp(e, "avx2")) want = BWQ_CPU_AVX2;
  else if (!strcmp(e, "avx512")) want = BWQ_CPU_AVX512;
  return want < best ? want : best;
}

std::atomic<int> g_level{-1};
int level() {
  int l = g_level.load(std::memory_order_relaxed);
  if (l < 0) {
    l = parse_level_env(detect_level());
    g_level.store(l);
  }
  return l;
}

int default_threads() {
  const char *e = getenv("BWQ_NUM_THREADS");
  if (e && atoi(e) > 0) return atoi(e);
  unsigned hc = std::thread::hardware_concurrency();
  return hc == 0 ? 1 : (int)hc;
}

std::atomic<int> g_threads{0};
int threads() {
  int t = g_threads.load(std::memory_order_relaxed);
  if (t <= 0) {
    t = default_threads();
    g_threads.store(t);
  }
  return t;
}

// Persistent pool: parallel_for hands out task indices through an atomic counter; the calling
// thread works too. One job at a time (callers are serialised by run_mu).
class Pool {
 public:
  ~Pool() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto &t : workers_) t.join();
  }
  void run(int ntasks, int nthreads, const std::function<void(int)> &fn) {
    if (nthreads <= 1 || ntasks <= 1) {
      for (int i = 0; i < ntasks; ++i) fn(i);
      return;
    }
    std::lock_guard<std::mutex> serial(run_mu_);
    const int helpers = (nthreads < ntasks ? nthreads : ntasks) - 1;
    ensure_workers(helpers);
    {
      std::lock_guard<std::mutex> lk(mu_);
      job_ = &fn;
      ntasks_ = ntasks;
      next_.store(0);
      wanted_ = helpers;
      pending_ = helpers;
      ++generation_;
    }
    cv_.notify_all();
    work();
    std::unique_lock<std::mutex> lk(mu_);
    done_cv_.wait(lk, [&] { return pending_ == 0; });
    job_ = nullptr;
  }

 private:
  void ensure_workers(int n) {
    while ((int)workers_.size() < n) {
      const int id = (int)workers_.size();
      workers_.emplace_back([this, id] { loop(id); });
    }
  }
  void work() {
    for (;;) {
      const int i = next_.fetch_add(1);
      if (i >= ntasks_) break;
      (*job_)(i);
    }
  }
  void loop(int id) {
    uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return stop_ || (generation_ != seen && id < wanted_); });
        if (stop_) return;
        seen = generation_;
      }
      work();
      {
        std::lock_guard<std::mutex> lk(mu_);
        if (--pending_ == 0) done_cv_.notify_all();
      }
    }
  }
  std::vector<std::thread> workers_;
  std::mutex mu_, run_mu_;
  std::condition_variable cv_, done_cv_;
  const std::function<void(int)> *job_ = nullptr;
  int ntasks_ = 0, wanted_ = 0, pending_ = 0;
  std::atomic<int> next_{0};
  uint64_t generation_ = 0;
  bool stop_ = false;
};

Pool &pool() {
  static Pool *p = new Pool();  // never destroyed: avoids joining threads during process exit
  return *p;
}

// Splits [0,m) x [0,n) into cache-sized tiles and runs block(m0,m1,n0,n1) over them in parallel.
void parallel_tiles(int m, int n, long work_per_cell, const std::function<void(int, int, int, int)> &block) {
  const int MB = m >= 64 ? 64 : m;
  int NB = 64;
  const int mt = (m + MB - 1) / MB;
  int nt = (n + NB - 1) / NB;
  const int nth = threads();
  // For few M tiles make N tiles smaller so that every thread gets work.
  while (mt * nt < 4 * nth && NB > 8) {
    NB /= 2;
    nt = (n + NB - 1) / NB;
  }
  const long total = (long)m * n * work_per_cell;
  const int use = total < (1L << 15) ? 1 : nth;
  std::function<void(int)> task = [&](int t) {
    const int bi = t / nt, bj = t % nt;
    const int m0 = bi * MB, n0 = bj * NB;
    block(m0, m0 + MB < m ? m0 + MB : m, n0, n0 + NB < n ? n0 + NB : n);
  };
  pool().run(mt * nt, use, task);
}

inline int kw_of(int k) { return (k + 31) / 32; }
inline uint32_t last_mask(int k) { return (k % 32) == 0 ? 0xFFFFFFFFu : ((1u << (k % 32)) - 1u); }

// Copies ternary planes [rows, kw] into a zero-padded scratch of stride kwp, clearing bits >= k.
void copy_planes(const uint32_t *src, int rows, int k, int kwp, uint32_t *dst) {
  const int kw = kw_of(k);
  const uint32_t lm = last_mask(k);
  for (int r = 0; r < rows; ++r) {
    uint32_t *d = dst + (long)r * kwp;
    memcpy(d, src + (long)r * kw, sizeof(uint32_t) * kw);
    d[kw - 1] &= lm;
    memset(d + kw, 0, sizeof(uint32_t) * (kwp - kw));
  }
}

}  // namespace

// Runs fn(0) ... fn(ntasks - 1) on the pool (the caller works too); serial when single-threaded or tiny.
void parallel_for(int ntasks, const std::function<void(int)> &fn) { pool().run(ntasks, threads(), fn); }
int pool_threads() { return threads(); }

}  // namespace bwq

using namespace bwq;

extern "C" {

int bwq_cpu_detect(void) { return detect_level(); }
int bwq_cpu_level(void) { return level(); }
int bwq_cpu_set_level(int l) {
  const int best = detect_level();
  if (l < 0) l = parse_level_env(best);
  if (l > best) l = best;
  g_level.store(l);
  return l;
}
const char *bwq_cpu_level_name(int l) {
  switch (l) {
    case BWQ_CPU_AVX512: return "avx512";
    case BWQ_CPU_AVX2: return "avx2";
    default: return "scalar";
  }
}
void bwq_cpu_set_threads(int n) { g_threads.store(n > 0 ? n : default_threads()); }
int bwq_cpu_threads(void) { return threads(); }

int bwq_cpu_ternary_binary_gemm(const uint32_t *plus, const uint32_t *minus, const uint32_t *weights, int m, int n,
                                int k, int32_t *out) {
  if (m < 0 || n < 0 || k < 0 || (m * (long)n > 0 && !out)) return BWQ_EINVAL;
  if (m == 0 || n == 0) return BWQ_OK;
  if (k == 0) {
    memset(out, 0, sizeof(int32_t) * (size_t)m * n);
    return BWQ_OK;
  }
  if (!plus || !minus || !weights) return BWQ_EINVAL;
  const int kw = kw_of(k), kwp = (kw + 15) / 16 * 16;
  std::vector<uint32_t> P((size_t)m * kwp), Q((size_t)m * kwp);
  std::vector<int32_t> nz(m);
  copy_planes(plus, m, k, kwp, P.data());
  copy_planes(minus, m, k, kwp, Q.data());
  for (int r = 0; r < m; ++r) {
    int c = 0;
    for (int i = 0; i < kw; ++i)
      c += __builtin_popcount(P[(size_t)r * kwp + i]) + __builtin_popcount(Q[(size_t)r * kwp + i]);
    nz[r] = c;
  }
  TbArgs a{P.data(), Q.data(), kwp, weights, kw, nz.data(), out, n};
  const int l = level();
  parallel_tiles(m, n, kw, [&](int m0, int m1, int n0, int n1) {
    if (l == BWQ_CPU_AVX512) tb_block_avx512(a, m0, m1, n0, n1);
    else if (l == BWQ_CPU_AVX2) tb_block_avx2(a, m0, m1, n0, n1);
    else tb_block_scalar(a, m0, m1, n0, n1);
  });
  return BWQ_OK;
}

int bwq_cpu_ternary_ternary_gemm(const uint32_t *a_plus, const uint32_t *a_minus, const uint32_t *b_plus,
                                 const uint32_t *b_minus, int m, int n, int k, int32_t *out) {
  if (m < 0 || n < 0 || k < 0 || (m * (long)n > 0 && !out)) return BWQ_EINVAL;
  if (m == 0 || n == 0) return BWQ_OK;
  if (k == 0) {
    memset(out, 0, sizeof(int32_t) * (size_t)m * n);
    return BWQ_OK;
  }
  if (!a_plus || !a_minus || !b_plus || !b_minus) return BWQ_EINVAL;
  const int kw = kw_of(k), kwp = (kw + 15) / 16 * 16;
  std::vector<uint32_t> AP((size_t)m * kwp), AM((size_t)m * kwp);
  copy_planes(a_plus, m, k, kwp, AP.data());
  copy_planes(a_minus, m, k, kwp, AM.data());
  TtArgs a{AP.data(), AM.data(), kwp, b_plus, b_minus, kw, out, n};
  const int l = level();
  parallel_tiles(m, n, 2 * kw, [&](int m0, int m1, int n0, int n1) {
    if (l == BWQ_CPU_AVX512) tt_block_avx512(a, m0, m1, n0, n1);
    else if (l == BWQ_CPU_AVX2) tt_block_avx2(a, m0, m1, n0, n1);
    else tt_block_scalar(a, m0, m1, n0, n1);
  });
  return BWQ_OK;
}

int bwq_cpu_int8_binary_gemm(const int8_t *act, const uint32_t *weights, int m, int n, int k, int32_t *out) {
  if (m < 0 || n < 0 || k < 0 || (m * (long)n > 0 && !out)) return BWQ_EINVAL;
  if (m == 0 || n == 0) return BWQ_OK;
  if (k == 0) {
    memset(out, 0, sizeof(int32_t) * (size_t)m * n);
    return BWQ_OK;
  }
  if (!act || !weights) return BWQ_EINVAL;
  const int kw = kw_of(k), kp = (k + 63) / 64 * 64;
  const uint32_t lm = last_mask(k);
  const int l = level();
  const bool vnni = l == BWQ_CPU_AVX512;
  std::vector<uint8_t> au(vnni ? 0 : (size_t)m * kp, 0);
  std::vector<int8_t> as(vnni ? (size_t)m * kp : 0, 0);
  std::vector<int32_t> sa(m), pw(n);
  for (int r = 0; r < m; ++r) {
    const int8_t *src = act + (size_t)r * k;
    int s = 0;
    for (int i = 0; i < k; ++i) s += src[i];
    sa[r] = s;
    if (vnni) {
      memcpy(as.data() + (size_t)r * kp, src, k);
    } else {
      uint8_t *d = au.data() + (size_t)r * kp;
      for (int i = 0; i < k; ++i) d[i] = (uint8_t)src[i] ^ 0x80u;
    }
  }
  for (int r = 0; r < n && !vnni; ++r) {
    const uint32_t *w = weights + (size_t)r * kw;
    int c = 0;
    for (int i = 0; i < kw - 1; ++i) c += __builtin_popcount(w[i]);
    pw[r] = c + __builtin_popcount(w[kw - 1] & lm);
  }
  I8Args a{au.data(), as.data(), kp, k, weights, kw, lm, sa.data(), pw.data(), out, n};
  parallel_tiles(m, n, 8 * kw, [&](int m0, int m1, int n0, int n1) {
    if (l == BWQ_CPU_AVX512) i8_block_avx512(a, m0, m1, n0, n1);
    else if (l == BWQ_CPU_AVX2) i8_block_avx2(a, m0, m1, n0, n1);
    else i8_block_scalar(a, m0, m1, n0, n1);
  });
  return BWQ_OK;
}

}  // extern "C"
