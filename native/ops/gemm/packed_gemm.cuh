// The packed GEMMs of native/ops/gemm/ (and their initialisation and dlopen'ed cuBLAS), for other translation
// units of libbwq_cuda.so (native/runtime/cuda_backend.cu). Thin wrappers defined in host.cu (cublas_api in
// bench.cu).
//
// Device layouts the GEMMs take (docs/KERNELS.md):
//  - ldk = round_up(ceil(k/32), 32) words per row of every bit matrix; weights [round_up(n,128), ldk],
//    ternary planes P/Q [round_up(m,128), ldk]; all padding zero (plane bits >= k must be 0).
//  - int8 activations [round_up(m,128), lda = 32*ldk bytes], padding zero.
//  - nz: int scratch of round_up(m,128) entries (ternary only).
//  - out: [m, n] int32 row-major (only [m, n] is written); with out16 != nullptr the ternary kernels may write
//    int16 [m, n] instead and then set *out16.
#ifndef BWQ_OPS_GEMM_PACKED_GEMM_CUH
#define BWQ_OPS_GEMM_PACKED_GEMM_CUH

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

namespace bwq_cuda {

inline int packed_ldk(int k) { return ((k + 31) / 32 + 31) / 32 * 32; }
inline int padded_rows(int m) { return (m + 127) / 128 * 128; }

// Initialises the library once (device 0, Hopper wgmma probe). 0 on success, else a BWQ_E* code and a message.
int ensure_ready(char *msg, size_t msg_len);
int num_sms();
int max_smem_optin();  // bytes of dynamic shared memory a block may opt in to

// Ternary x binary: out[m, n] = sum_k t[m,k] B[n,k]; returns the kernel's name.
const char *tb_gemm(const uint32_t *dP, const uint32_t *dQ, const uint32_t *dW, int ldk, int *dNz, int m, int n,
                    int32_t *dOut, cudaStream_t st, bool *out16);
// int8 x binary: out[m, n] = sum_k a[m,k] B[n,k]; returns the kernel's name.
const char *i8_gemm(const int8_t *dA, int lda, const uint32_t *dW, int ldk, int m, int n, int32_t *dOut,
                    cudaStream_t st);
// One activation row (M = 1) with the linear layer's epilogue fused: y[n] = fl(s[0] * wscale[n] * acc[n]) (the
// product in double). Returns the kernel's name, or nullptr when no fused GEMV takes the shape (or a path is
// forced): the caller then runs tb_gemm / i8_gemm and the separate epilogue.
const char *tb_gemv_scaled(const uint32_t *dP, const uint32_t *dQ, const uint32_t *dW, int ldk, int n, const float *ds,
                           const float *dWscale, float *dY, cudaStream_t st);
const char *i8_gemv_scaled(const int8_t *dA, int lda, const uint32_t *dW, int ldk, int n, const float *ds,
                           const float *dWscale, float *dY, cudaStream_t st);

// cuBLAS entry points (dlopen'ed; raw ints for the enums). False when no libcublas could be loaded.
struct CublasApi {
  int (*create)(void **handle);
  int (*destroy)(void *handle);
  int (*set_stream)(void *handle, cudaStream_t st);
  int (*gemm_ex)(void *handle, int transa, int transb, int m, int n, int k, const void *alpha, const void *a,
                 int atype, int lda, const void *b, int btype, int ldb, const void *beta, void *c, int ctype, int ldc,
                 int compute, int algo);
  // cublasGemmStridedBatchedEx (the device OKT's per-row Kronecker products); null when the library lacks it
  int (*gemm_strided_batched_ex)(void *handle, int transa, int transb, int m, int n, int k, const void *alpha,
                                 const void *a, int atype, int lda, long long stride_a, const void *b, int btype,
                                 int ldb, long long stride_b, const void *beta, void *c, int ctype, int ldc,
                                 long long stride_c, int batch, int compute, int algo);
};
bool cublas_api(CublasApi *api);

}  // namespace bwq_cuda

#endif
