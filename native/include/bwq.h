/*
 * bwq native kernels: C ABI.
 *
 * Bit layouts (docs/KERNELS.md, docs/FORMATS.md):
 *  - Binary weights B[N,K] (entries +1/-1): per output row n, KW = ceil(K/32) uint32 words;
 *    bit j of word w is 1 iff B[n, 32w+j] = +1 (LSB first). Padding bits (k >= K) should be 0;
 *    the kernels never let them contribute.
 *  - Ternary activations t[M,K] (entries -1/0/+1): two bit-planes plus/minus in the same layout
 *    ([M, KW] words each); plus bit = 1 iff t = +1, minus bit = 1 iff t = -1. A position with both
 *    bits set is invalid. Padding bits are ignored (masked by the kernels).
 *  - int8 activation codes a[M,K], row-major, K bytes per row (no padding).
 *  - Outputs int32 Y[M,N], row-major, exact.
 *
 * CPU entry points live in the addon / libbwq_cpu; CUDA entry points (bwq_cuda_*) live in the
 * separately built shared library libbwq_cuda.so, which the addon opens with dlopen on demand.
 * All functions return 0 on success, a negative BWQ_E* code on failure.
 */
#ifndef BWQ_H
#define BWQ_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BWQ_OK 0
#define BWQ_EINVAL (-1)   /* bad shape or null pointer */
#define BWQ_ENOMEM (-2)   /* allocation failed (host or device) */
#define BWQ_ECUDA (-3)    /* CUDA runtime error; see bwq_cuda_last_error() */
#define BWQ_ENODEV (-4)   /* no CUDA device */
#define BWQ_ECUBLAS (-5)  /* cuBLAS missing or failed (bench only) */

#define BWQ_EXPORT __attribute__((visibility("default")))

/* ---------------- CPU ---------------- */
/* CPU code paths, best available picked at first use by cpuid. */
#define BWQ_CPU_SCALAR 0
#define BWQ_CPU_AVX2 1
#define BWQ_CPU_AVX512 2 /* AVX-512 F/BW/VL + VPOPCNTDQ + VNNI */

/* Best level this CPU supports. */
BWQ_EXPORT int bwq_cpu_detect(void);
/* Level in use (default: bwq_cpu_detect(), or env BWQ_CPU=scalar|avx2|avx512, clamped). */
BWQ_EXPORT int bwq_cpu_level(void);
/* Force a level (clamped to what the CPU supports); returns the level now in use. */
BWQ_EXPORT int bwq_cpu_set_level(int level);
/* "scalar" | "avx2" | "avx512" */
BWQ_EXPORT const char *bwq_cpu_level_name(int level);
/* Worker threads (default: hardware concurrency, or env BWQ_NUM_THREADS). n <= 0 restores the default. */
BWQ_EXPORT void bwq_cpu_set_threads(int n);
BWQ_EXPORT int bwq_cpu_threads(void);

/* Y[m,n] = sum_k t[m,k] * B[n,k]; t given as plus/minus planes [M,KW], weights [N,KW]. */
BWQ_EXPORT int bwq_cpu_ternary_binary_gemm(const uint32_t *plus, const uint32_t *minus, const uint32_t *weights,
                                           int m, int n, int k, int32_t *out);
/* Y[m,n] = sum_k a[m,k] * B[n,k]; a int8 [M,K]. */
BWQ_EXPORT int bwq_cpu_int8_binary_gemm(const int8_t *a, const uint32_t *weights, int m, int n, int k, int32_t *out);
/* Y[m,n] = sum_k t1[m,k] * t2[n,k]; both ternary as plus/minus planes ([M,KW] and [N,KW]). */
BWQ_EXPORT int bwq_cpu_ternary_ternary_gemm(const uint32_t *a_plus, const uint32_t *a_minus, const uint32_t *b_plus,
                                            const uint32_t *b_minus, int m, int n, int k, int32_t *out);

/* ---------------- CUDA (libbwq_cuda.so) ---------------- */
/* Initialise: picks device 0. Returns BWQ_OK, BWQ_ENODEV or BWQ_ECUDA; msg gets a one-line description. */
BWQ_EXPORT int bwq_cuda_init(char *msg, size_t msg_len);
/* Last CUDA error text (thread-local). */
BWQ_EXPORT const char *bwq_cuda_last_error(void);

/* Host-pointer convenience entry points: copy in, run, copy out (synchronous). Same semantics as CPU. */
BWQ_EXPORT int bwq_cuda_ternary_binary_gemm(const uint32_t *plus, const uint32_t *minus, const uint32_t *weights,
                                            int m, int n, int k, int32_t *out);
BWQ_EXPORT int bwq_cuda_int8_binary_gemm(const int8_t *a, const uint32_t *weights, int m, int n, int k, int32_t *out);
/* Ternary x ternary (attention scores), same semantics as bwq_cpu_ternary_ternary_gemm. Runs as one ternary x
 * binary GEMM against 2n binary rows: a ternary row u is (s_nonneg + s_pos) / 2 with s_nonneg = +1 where u >= 0
 * and s_pos = +1 where u > 0, so each output is half the sum of two exact sums (docs/KERNELS.md).
 * n <= 2^30 - 129 (else BWQ_EINVAL). */
BWQ_EXPORT int bwq_cuda_ternary_ternary_gemm(const uint32_t *a_plus, const uint32_t *a_minus, const uint32_t *b_plus,
                                             const uint32_t *b_minus, int m, int n, int k, int32_t *out);

/* Device-resident binary weights: copies B [N, ceil(K/32)] to the GPU once (*handle > 0 names the copy);
 * the _resident GEMMs then take B from there (n and k must match the upload, else BWQ_EINVAL) and copy only
 * the activations in and the result out. bwq_cuda_weights_free releases the copy (BWQ_EINVAL if unknown). */
BWQ_EXPORT int bwq_cuda_weights_upload(const uint32_t *weights, int n, int k, uint64_t *handle);
BWQ_EXPORT int bwq_cuda_weights_free(uint64_t handle);
BWQ_EXPORT int bwq_cuda_ternary_binary_gemm_resident(const uint32_t *plus, const uint32_t *minus, uint64_t weights,
                                                     int m, int n, int k, int32_t *out);
BWQ_EXPORT int bwq_cuda_int8_binary_gemm_resident(const int8_t *a, uint64_t weights, int m, int n, int k,
                                                  int32_t *out);

/* Forces a kernel family for tests and benchmarks: -1 automatic (default), 0 GEMV, 1 skinny MMA, 2 tiled MMA;
 * for ternary x binary also 10 = the Hopper wgmma tiled kernel (sm_90a code on an sm_90 device; otherwise 2;
 * 16-bit sums on the device where they fit, widened before they are returned), 11, 12, 14 = its fallbacks forced
 * on every shape (11: cp.async loads, used without a tensor-map encoder or PDL; 12: stores from the registers,
 * used when N % 4 != 0; 14: int32 output, used where 16-bit output is not possible), 13 = the M = 1 GEMV as a
 * programmatic dependent launch (Hopper; the automatic choice there); for int8 x binary, 10 = the Hopper wgmma
 * kernel (the automatic choice there for M > 64; otherwise 2) (native/ops/gemm/dispatch.cu). Any other value
 * means automatic, among them 3 - 9, variants removed after their benchmarks (native/dev/); a family that
 * cannot take the shape falls through to the next one. */
BWQ_EXPORT void bwq_cuda_set_paths(int ternary_binary_path, int int8_binary_path);

/* Peak tensor-core rate (kind 0: mma.sync m16n8k256 b1 AND+POPC, 1: mma.sync m16n8k32 s8, register-only
 * chains; 2: wgmma m64n128k256 b1 AND+POPC from shared memory, sm_90a only) in tera-ops/s (2 ops per
 * multiply-add). For the performance notes. */
BWQ_EXPORT int bwq_cuda_mma_peak(int kind, double *tops);

#define BWQ_BENCH_TERNARY_BINARY 0
#define BWQ_BENCH_INT8_BINARY 1
/* OR-ed into the kind: the calls rotate over copies of the weights that together take twice the L2 (ours and
 * cuBLAS alike), so each call reads its weights from memory, as the layers of a model do in decoding; without
 * it every call reuses one copy (cuBLAS's FP16 weights then partly stay in the L2). */
#define BWQ_BENCH_COLD_WEIGHTS 4

typedef struct bwq_bench_result {
  double ms_ours;      /* mean time per call of our kernel (ms), cudaEvent timing over `reps` calls */
  double ms_cublas;    /* mean time per call of cuBLAS FP16 GEMM (cublasGemmEx, fp32 accumulate), same timing */
  double tops_ours;    /* 2*M*N*K / time, in tera-ops per second */
  double tops_cublas;
  int checked;         /* 1 if the output was compared with a CPU reference on sampled entries */
  int mismatches;      /* number of sampled entries that differed */
  char kernel[48];     /* which kernel variant ran (e.g. "tb_gemv", "tb_mma_b1") */
  double ms_ours_graph;   /* the same `reps` calls captured into one CUDA graph, mean per call (0: not measured) */
  double ms_cublas_graph; /* cuBLAS likewise */
} bwq_bench_result;

/* Times our kernel (on device-resident random operands, M x K activations, N x K packed weights)
 * and cuBLAS FP16 GEMM of the same shape, each `warmup` + `reps` launches between two cudaEvents.
 * cuBLAS is opened with dlopen (libcublas.so.13/.12/.so); if missing, ms_cublas = 0 and BWQ_ECUBLAS. */
BWQ_EXPORT int bwq_cuda_bench(int kind, int m, int n, int k, int warmup, int reps, bwq_bench_result *result);

/* ---------------- OKT of BWLA (native/ops/okt/, docs/ALGORITHMS.md §OKT) ----------------
 * The EM of src/quant/okt.ts learnOkt in one call: R = R1 (x) R2 (R1 [a, a], R2 [b, b], k = a*b) for the
 * weight matrices of one group (each scaled by 1/rms(W) and stacked) and optional calibration rows. */
typedef struct bwq_okt_problem {
  const float *const *weights; /* n_weights matrices, row-major [rows[i], k] (host memory) */
  const int *rows;
  int n_weights;
  int k, a, b;                   /* k = a*b */
  const float *activations;      /* [tokens, k] unrotated, or NULL */
  int tokens;
  double activation_weight;      /* lambda (the activation term is used when > 0 and activations are given) */
  const double *r1_init;         /* [a*a] row-major */
  const double *r2_init;         /* [b*b] */
  int iterations;                /* cap of the exact stage */
  double tolerance;              /* a stage stops when prev - J <= tolerance * prev */
  const double *anneal;          /* smoothing schedule sigma (n_anneal stages before the exact one) */
  int n_anneal;
  int anneal_iterations;         /* cap of each smoothing stage */
} bwq_okt_problem;

typedef struct bwq_okt_result {
  double *r1, *r2;               /* caller's [a*a], [b*b]: the learned factors */
  double *history;               /* caller's [iterations + 1]: J of the exact stage, before and after each iteration */
  int history_len;
  int iterations;                /* iterations of the exact stage */
  int converged;                 /* 1 when the exact stage stopped on the tolerance */
  double weight_error_before, weight_error_after;
  double tail_before, tail_after; /* NaN without the activation term's rows */
} bwq_okt_result;

/* Orthogonal polar factor R = U V^T of M = U S V^T [n, n] (row-major, double) by one-sided Jacobi, as
 * src/linalg/procrustes.ts. In the addon (CPU); libbwq_cuda.so carries its own copy for the device OKT. */
BWQ_EXPORT int bwq_okt_polar(const double *m, int n, double *r);
/* The device OKT on a CUDA device of its own (a fresh stream and cuBLAS handle; the runtime's models use their
 * backend's, native/runtime/model.h okt_on_device). BWQ_OK, or an error code with a one-line message. */
BWQ_EXPORT int bwq_cuda_okt(const bwq_okt_problem *problem, bwq_okt_result *result, char *msg, size_t msg_len);

#ifdef __cplusplus
}
#endif
#endif /* BWQ_H */
