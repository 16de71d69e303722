// Test driver and GPU benchmark for the bwq C ABI (no Node.js needed).
//   driver test        : every CPU kernel at every available ISA level (and CUDA kernels when built with
//                        -DBWQ_DRIVER_CUDA) against a plain integer reference on random shapes.
//   driver bench [--quick] [--tb-only] [--json FILE] : bwq_cuda_bench over the shapes (CUDA build only).
// Exit code 0 iff all checks pass.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <random>
#include <string>
#include <utility>
#include <vector>

#include "../include/bwq.h"

namespace {

struct Case {
  int m, n, k;
};

std::mt19937_64 rng(12345);

// Random ternary matrix -> planes (with deliberately dirty padding bits to prove they are ignored).
void random_ternary(int rows, int k, std::vector<int8_t> &t, std::vector<uint32_t> &p, std::vector<uint32_t> &q,
                    bool dirty_padding) {
  const int kw = (k + 31) / 32;
  t.assign((size_t)rows * k, 0);
  p.assign((size_t)rows * kw, 0);
  q.assign((size_t)rows * kw, 0);
  for (int r = 0; r < rows; ++r) {
    for (int i = 0; i < k; ++i) {
      const int v = (int)(rng() % 3) - 1;
      t[(size_t)r * k + i] = (int8_t)v;
      if (v == 1) p[(size_t)r * kw + i / 32] |= 1u << (i % 32);
      if (v == -1) q[(size_t)r * kw + i / 32] |= 1u << (i % 32);
    }
    if (dirty_padding && k % 32) {
      const uint32_t pad = ~((1u << (k % 32)) - 1u);
      // Keep plus/minus disjoint in the padding too.
      const uint32_t junk = (uint32_t)rng() & pad;
      p[(size_t)r * kw + kw - 1] |= junk & 0x55555555u;
      q[(size_t)r * kw + kw - 1] |= junk & 0xAAAAAAAAu;
    }
  }
}

void random_binary(int rows, int k, std::vector<int8_t> &b, std::vector<uint32_t> &w, bool dirty_padding) {
  const int kw = (k + 31) / 32;
  b.assign((size_t)rows * k, 0);
  w.assign((size_t)rows * kw, 0);
  for (int r = 0; r < rows; ++r) {
    for (int i = 0; i < k; ++i) {
      const bool plus = rng() & 1;
      b[(size_t)r * k + i] = plus ? 1 : -1;
      if (plus) w[(size_t)r * kw + i / 32] |= 1u << (i % 32);
    }
    if (dirty_padding && k % 32) w[(size_t)r * kw + kw - 1] |= (uint32_t)rng() & ~((1u << (k % 32)) - 1u);
  }
}

void ref_gemm(const std::vector<int8_t> &a, const std::vector<int8_t> &b, int m, int n, int k, std::vector<int32_t> &y) {
  y.assign((size_t)m * n, 0);
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) {
      long s = 0;
      for (int t = 0; t < k; ++t) s += (long)a[(size_t)i * k + t] * b[(size_t)j * k + t];
      y[(size_t)i * n + j] = (int32_t)s;
    }
}

int compare(const char *what, const Case &c, const std::vector<int32_t> &got, const std::vector<int32_t> &want) {
  int bad = 0;
  for (size_t i = 0; i < want.size(); ++i)
    if (got[i] != want[i]) {
      if (bad < 3)
        fprintf(stderr, "MISMATCH %s m=%d n=%d k=%d at %zu: got %d want %d\n", what, c.m, c.n, c.k, i, got[i], want[i]);
      ++bad;
    }
  return bad ? 1 : 0;
}

std::vector<Case> cases() {
  std::vector<Case> cs;
  const int ms[] = {1, 3, 17};
  const int ks[] = {1, 31, 33, 100, 257};
  const int ns[] = {1, 5, 70};
  for (int m : ms)
    for (int k : ks)
      for (int n : ns) cs.push_back({m, n, k});
  // Larger shapes that exercise full vector tiles, several threads and GPU tiles / split paths.
  cs.push_back({64, 130, 1024});
  cs.push_back({129, 257, 4096 + 40});
  cs.push_back({8, 300, 2048});
  cs.push_back({300, 96, 700});
  // Tile rows and column pairs for the Hopper kernels (paired blocks, TMA store with ragged edges).
  cs.push_back({200, 512, 1500});
  cs.push_back({130, 256, 2048});
  // Hopper tiles: ragged last column tile with n % 8 == 0 (16-bit output), an odd number of K stages, and
  // more tiles than SMs with a 16-bit output.
  cs.push_back({300, 520, 3000});
  cs.push_back({1536, 3072, 64});
  // K >= 2^15: the sums may not fit 16 bits, so the Hopper kernel stores int32.
  cs.push_back({130, 136, 33000});
  return cs;
}

typedef int (*tb_fn)(const uint32_t *, const uint32_t *, const uint32_t *, int, int, int, int32_t *);
typedef int (*i8_fn)(const int8_t *, const uint32_t *, int, int, int, int32_t *);
typedef int (*tt_fn)(const uint32_t *, const uint32_t *, const uint32_t *, const uint32_t *, int, int, int, int32_t *);

#ifdef BWQ_DRIVER_CUDA
// The CUDA GEMMs through resident weights: upload, call, free (n = 0 or k = 0 go to the plain call).
int tb_resident(const uint32_t *p, const uint32_t *q, const uint32_t *w, int m, int n, int k, int32_t *out) {
  uint64_t h = 0;
  if (n == 0 || k == 0) return bwq_cuda_ternary_binary_gemm(p, q, w, m, n, k, out);
  int rc = bwq_cuda_weights_upload(w, n, k, &h);
  if (rc == BWQ_OK) rc = bwq_cuda_ternary_binary_gemm_resident(p, q, h, m, n, k, out);
  if (h && bwq_cuda_weights_free(h) != BWQ_OK) rc = BWQ_EINVAL;
  return rc;
}
int i8_resident(const int8_t *a, const uint32_t *w, int m, int n, int k, int32_t *out) {
  uint64_t h = 0;
  if (n == 0 || k == 0) return bwq_cuda_int8_binary_gemm(a, w, m, n, k, out);
  int rc = bwq_cuda_weights_upload(w, n, k, &h);
  if (rc == BWQ_OK) rc = bwq_cuda_int8_binary_gemm_resident(a, h, m, n, k, out);
  if (h && bwq_cuda_weights_free(h) != BWQ_OK) rc = BWQ_EINVAL;
  return rc;
}
#endif

// tt may be null (no ternary x ternary entry point for this label).
int run_checks(const char *label, tb_fn tb, i8_fn i8, tt_fn tt) {
  int failures = 0, total = 0;
  for (const Case &c : cases()) {
    std::vector<int8_t> t, b, t2, a8;
    std::vector<uint32_t> p, q, w, p2, q2;
    std::vector<int32_t> want, got((size_t)c.m * c.n);
    random_ternary(c.m, c.k, t, p, q, true);
    random_binary(c.n, c.k, b, w, true);
    ref_gemm(t, b, c.m, c.n, c.k, want);
    std::fill(got.begin(), got.end(), 0x7eadbeef);
    if (tb(p.data(), q.data(), w.data(), c.m, c.n, c.k, got.data()) != BWQ_OK) { fprintf(stderr, "tb call failed\n"); ++failures; }
    else failures += compare((std::string(label) + " ternary_binary").c_str(), c, got, want);
    ++total;

    // int8 codes in [-32, 31] (int6) plus some extremes of int8.
    a8.resize((size_t)c.m * c.k);
    for (auto &v : a8) v = (int8_t)((rng() % 8 == 0) ? ((rng() & 1) ? 127 : -128) : (int)(rng() % 64) - 32);
    random_binary(c.n, c.k, b, w, false);
    ref_gemm(a8, b, c.m, c.n, c.k, want);
    std::fill(got.begin(), got.end(), 0x7eadbeef);
    if (i8(a8.data(), w.data(), c.m, c.n, c.k, got.data()) != BWQ_OK) { fprintf(stderr, "i8 call failed\n"); ++failures; }
    else failures += compare((std::string(label) + " int8_binary").c_str(), c, got, want);
    ++total;

    if (tt) {
      random_ternary(c.n, c.k, t2, p2, q2, true);
      ref_gemm(t, t2, c.m, c.n, c.k, want);
      std::fill(got.begin(), got.end(), 0x7eadbeef);
      if (tt(p.data(), q.data(), p2.data(), q2.data(), c.m, c.n, c.k, got.data()) != BWQ_OK) {
        fprintf(stderr, "tt call failed\n");
        ++failures;
      } else {
        failures += compare((std::string(label) + " ternary_ternary").c_str(), c, got, want);
      }
      ++total;
    }
  }
  printf("%-12s %d/%d checks passed\n", label, total - failures, total);
  return failures;
}

#ifdef BWQ_DRIVER_CUDA
int bench(bool quick, bool tb_only, const char *json_path) {
  const int ms_full[] = {1, 16, 512, 2048};
  const int ms_quick[] = {1, 2048};
  const int kn[][2] = {{4096, 4096}, {4096, 11008}, {11008, 4096}};
  const int *ms = quick ? ms_quick : ms_full;
  const int nm = quick ? 2 : 4;
  int rc = 0;
  std::string js = "[\n";
  bool first = true;
  for (int kind = 0; kind < (tb_only ? 1 : 2); ++kind)
    for (int s = 0; s < 3; ++s)
      for (int mi = 0; mi < nm; ++mi) {
        const int m = ms[mi], k = kn[s][0], n = kn[s][1];
        if (const char *only_m = getenv("BWQ_BENCH_ONLY_M"))  // dev iterations: one M
          if (atoi(only_m) != m) continue;
        // Ternary x binary: M = 1 the programmatic-dependent GEMV (path 13; the plain GEMV where PDL is
        // unavailable) and the plain GEMV (path 0), M = 16 the skinny MMA, large M the Hopper wgmma kernel
        // (path 10, 16-bit output where the sums fit; the tiled mma.sync kernel v4 where wgmma is unavailable)
        // and for comparison the same kernel with int32 output (path 14) and v4 (path 2). int8 x binary: the
        // automatic choice, and at large M also the mma.sync kernel (path 2) for comparison.
        std::vector<int> paths;
        if (kind == 1) paths = m > 64 ? std::vector<int>{-1, 2} : std::vector<int>{-1};
        else if (m == 1) paths = {13, 0};
        else if (m <= 64) paths = {1};
        else paths = {10, 14, 2};
        if (const char *only = getenv("BWQ_BENCH_PATHS")) {  // dev iterations: these paths only
          paths.clear();
          for (const char *c = only; *c;) {
            char *end;
            const long v = strtol(c, &end, 10);
            if (end == c) break;
            paths.push_back((int)v);
            c = end;
          }
        }
        // M = 1 also with cold weights (BWQ_BENCH_COLD_WEIGHTS: the calls rotate over copies of the weights
        // larger than the L2, for cuBLAS too), as in decoding, where every layer has its own weights.
        std::vector<std::pair<int, bool>> runs;
        for (int path : paths) runs.push_back({path, false});
        if (kind == 0 && m == 1 && !getenv("BWQ_BENCH_PATHS")) runs.push_back({13, true});
        for (const auto &run : runs) {
        const int path = run.first;
        const bool cold = run.second;
        bwq_cuda_set_paths(path, path);
        bwq_bench_result r;
        memset(&r, 0, sizeof r);
        const int reps = m >= 512 ? 50 : 200;
        const int e = bwq_cuda_bench(kind | (cold ? BWQ_BENCH_COLD_WEIGHTS : 0), m, n, k, 10, reps, &r);
        if (e != BWQ_OK && e != BWQ_ECUBLAS) {
          fprintf(stderr, "bench failed (%d): %s\n", e, bwq_cuda_last_error());
          rc = 1;
          continue;
        }
        if (r.mismatches) rc = 1;
        const char *kname = kind == 0 ? "ternary_binary" : "int8_binary";
        const double speedup = r.ms_ours > 0 && r.ms_cublas > 0 ? r.ms_cublas / r.ms_ours : 0;
        const double speedup_graph =
            r.ms_ours_graph > 0 && r.ms_cublas_graph > 0 ? r.ms_cublas_graph / r.ms_ours_graph : 0;
        {
          char line[512];
          snprintf(line, sizeof line, "%s  {\"op\":\"%s\",\"kernel\":\"%s\",\"weights\":\"%s\",\"m\":%d,\"k\":%d,\"n\":%d,\"msOurs\":%.5f,\"msCublasFp16\":%.5f,"
                 "\"topsOurs\":%.2f,\"tflopsCublas\":%.2f,\"speedup\":%.2f,\"msOursGraph\":%.5f,\"msCublasGraph\":%.5f,"
                 "\"speedupGraph\":%.2f,\"checked\":%d,\"mismatches\":%d}",
                 first ? "" : ",\n", kname, r.kernel, cold ? "cold" : "warm", m, k, n, r.ms_ours, r.ms_cublas,
                 r.tops_ours, r.tops_cublas,
                 speedup, r.ms_ours_graph, r.ms_cublas_graph, speedup_graph, r.checked, r.mismatches);
          js += line;
        }
        {
          printf("%-15s %-16s M=%-5d K=%-6d N=%-6d ours %9.4f ms (%7.1f TOPS)  cuBLAS fp16 %9.4f ms (%6.1f TFLOPS)  "
                 "speedup %6.2fx  | graph: ours %9.4f ms cuBLAS %9.4f ms speedup %6.2fx  check %s%s\n",
                 kname, r.kernel, m, k, n, r.ms_ours, r.tops_ours, r.ms_cublas, r.tops_cublas, speedup,
                 r.ms_ours_graph, r.ms_cublas_graph, speedup_graph, r.checked ? (r.mismatches ? "FAIL" : "ok") : "-",
                 cold ? "  (cold weights)" : "");
        }
        first = false;
        fflush(stdout);
        }
        bwq_cuda_set_paths(-1, -1);
      }
  js += "\n]\n";
  if (json_path) {
    FILE *f = fopen(json_path, "w");
    if (f) {
      fputs(js.c_str(), f);
      fclose(f);
    }
  }
  return rc;
}
#endif

}  // namespace

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "test";
  setvbuf(stdout, nullptr, _IOLBF, 0);  // progress stays visible if a run is cut short
  bool quick = false, tb_only = false;
  const char *json = nullptr;
  for (int i = 2; i < argc; ++i) {
    if (!strcmp(argv[i], "--quick")) quick = true;
    if (!strcmp(argv[i], "--tb-only")) tb_only = true;
    if (!strcmp(argv[i], "--json") && i + 1 < argc) json = argv[++i];
  }
  if (!strcmp(mode, "test")) {
    int fails = 0;
    // BWQ_TEST_CUDA_PATHS="10 12": only these CUDA kernel paths, no CPU checks (quick GPU iterations).
    const char *only = getenv("BWQ_TEST_CUDA_PATHS");
    const int best = only ? -1 : bwq_cpu_detect();
    if (!only) printf("cpu: best level %s, %d threads\n", bwq_cpu_level_name(best), bwq_cpu_threads());
    for (int l = 0; l <= best; ++l) {
      bwq_cpu_set_level(l);
      fails += run_checks(bwq_cpu_level_name(l), bwq_cpu_ternary_binary_gemm, bwq_cpu_int8_binary_gemm,
                          bwq_cpu_ternary_ternary_gemm);
    }
    if (!only) {
      bwq_cpu_set_threads(1);
      fails += run_checks("1-thread", bwq_cpu_ternary_binary_gemm, bwq_cpu_int8_binary_gemm, bwq_cpu_ternary_ternary_gemm);
      bwq_cpu_set_threads(0);
    }
#ifdef BWQ_DRIVER_CUDA
    char msg[256];
    const int e = bwq_cuda_init(msg, sizeof msg);
    printf("cuda: %s\n", msg);
    if (e != BWQ_OK) return 1;
    // Paths 3 - 9 (tiled and GEMV variants, now in native/dev/) were removed; they would run path -1 again.
    const char *names[] = {"cuda-auto", "cuda-gemv", "cuda-skinny", "cuda-tiled",
                           nullptr,     nullptr,     nullptr,       nullptr,      nullptr, nullptr, nullptr,  // 3 - 9
                           "cuda-wgmma", "cuda-wgmma-cpasync", "cuda-wgmma-st", "cuda-gemv-pdl", "cuda-wgmma-o32"};
    for (int path = -1; path <= 14; ++path) {
      if (!names[path + 1]) continue;
      if (only) {
        char key[8];
        snprintf(key, sizeof key, "%d", path);
        std::string list = std::string(" ") + only + " ";
        if (list.find(std::string(" ") + key + " ") == std::string::npos) continue;
      }
      bwq_cuda_set_paths(path, path);
      // ternary x ternary runs through the ternary x binary path set here (2n binary rows)
      fails += run_checks(names[path + 1], bwq_cuda_ternary_binary_gemm, bwq_cuda_int8_binary_gemm,
                          bwq_cuda_ternary_ternary_gemm);
    }
    bwq_cuda_set_paths(-1, -1);
    if (!only || strstr(only, "resident")) {
      fails += run_checks("cuda-resident", tb_resident, i8_resident, nullptr);
      // A handle of another shape, and an unknown handle, are refused.
      uint64_t h = 0;
      const uint32_t w1[2] = {1, 0};
      int32_t o[2];
      const uint32_t p1[1] = {1}, q1[1] = {0};
      int bad = bwq_cuda_weights_upload(w1, 2, 1, &h) != BWQ_OK;
      bad += bwq_cuda_ternary_binary_gemm_resident(p1, q1, h, 1, 1, 1, o) != BWQ_EINVAL;
      bad += bwq_cuda_weights_free(h) != BWQ_OK;
      bad += bwq_cuda_weights_free(h) != BWQ_EINVAL;
      bad += bwq_cuda_ternary_binary_gemm_resident(p1, q1, h, 1, 2, 1, o) != BWQ_EINVAL;
      printf("cuda-resident handle checks %s\n", bad ? "FAILED" : "passed");
      fails += bad;
    }
#endif
    printf(fails ? "FAILED (%d)\n" : "ALL PASSED\n", fails);
    return fails ? 1 : 0;
  }
#ifdef BWQ_DRIVER_CUDA
  if (!strcmp(mode, "bench")) {
    char msg[256];
    if (bwq_cuda_init(msg, sizeof msg) != BWQ_OK) {
      fprintf(stderr, "%s\n", msg);
      return 1;
    }
    fprintf(stderr, "cuda: %s\n", msg);
    double b1 = 0, s8 = 0, wg = 0;
    bwq_cuda_mma_peak(0, &b1);
    bwq_cuda_mma_peak(1, &s8);
    const int wrc = bwq_cuda_mma_peak(2, &wg);
    printf("mma.sync peak: b1 and.popc m16n8k256 %.0f TOPS, s8 m16n8k32 %.0f TOPS\n", b1, s8);
    if (wrc == BWQ_OK) printf("wgmma peak: b1 and.popc m64n128k256 %.0f TOPS\n", wg);
    else printf("wgmma peak: not available (%s)\n", bwq_cuda_last_error());
    return bench(quick, tb_only, json);
  }
#endif
  fprintf(stderr, "usage: driver test | driver bench [--quick] [--tb-only] [--json FILE]\n");
  return 2;
}
