// The packed GEMMs' library state and host side: initialisation (device 0, the Hopper wgmma probe), the
// grow-only device workspace, device-resident weights, the host-pointer entry points bwq_cuda_* of bwq.h (copy
// in, run, copy out; ternary x ternary as one ternary x binary GEMM on 2N rows), and the bwq_cuda:: functions of
// packed_gemm.cuh for the runtime's backend (cublas_api is in bench.cu, beside the dlopen of cuBLAS).
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <unordered_map>

#include "common.cuh"

namespace bwq_gemm {

thread_local char g_err[512] = "";
int g_max_smem_optin = 48 * 1024;
bool g_has_wgmma = false;
int g_num_sms = 1;
int g_l2_bytes = 0;
EncodeTiled_t g_encode_tiled = nullptr;
Workspace g_ws;

namespace {

// ---------------------------------------------------------------------------------------------
// Small kernels of the host-pointer GEMMs
// int16 -> int32 (sums a kernel stored as 16-bit output, for callers that return int32).
__global__ void widen16(const int16_t *__restrict__ in, int32_t *__restrict__ out, size_t count) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x)
    out[i] = in[i];
}

// Clears bits >= k in the last word of each row of an activation plane (caller data may be dirty there).
__global__ void mask_last_word(uint32_t *x, int rows, int ldk, int kw, uint32_t mask) {
  const int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r < rows) x[(size_t)r * ldk + kw - 1] &= mask;
}

// Ternary x ternary through the ternary x binary kernels. A ternary row u (planes p, q) is half the sum of
// two binary rows: s_nonneg (+1 where u >= 0, bits ~q) and s_pos (+1 where u > 0, bits p), u = (s_nonneg +
// s_pos) / 2, so t.u = (t.s_nonneg + t.s_pos) / 2 exactly. These two kernels build the binary rows in place
// and halve the summed pairs.
// Rows of minus-plane bits become the s_nonneg rows: ~q within each row's K bits (padding words stay zero).
__global__ void nonneg_bits_of_minus(uint32_t *x, int rows, int ldk, int kw, uint32_t last_mask) {
  const size_t total = (size_t)rows * kw;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
    const size_t r = i / kw;
    const int w = (int)(i - r * kw);
    uint32_t *v = x + r * ldk + w;
    *v = ~*v & (w == kw - 1 ? last_mask : 0xFFFFFFFFu);
  }
}

// out[i, j] = (y[i, j] + y[i, n + j]) / 2 for y [m, 2n]: y's halves are t.s_pos and t.s_nonneg (above), their
// sum 2 t.u is even.
__global__ void halve_pair_sums(const int32_t *__restrict__ y, int m, int n, int32_t *__restrict__ out) {
  const size_t total = (size_t)m * n;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
    const size_t r = i / n, j = i - r * n;
    out[i] = (y[r * 2 * n + j] + y[r * 2 * n + n + j]) / 2;
  }
}

// 1 in *flag iff this binary carries the sm_90a (wgmma) code for the running device.
__global__ void wgmma_probe(int *flag) {
#ifdef BWQ_HAS_WGMMA
  *flag = 1;
#else
  *flag = 0;
#endif
}

bool g_inited = false;
std::mutex g_init_mu;

}  // namespace

int ensure_init() {
  if (g_inited) return BWQ_OK;
  char msg[256];
  return bwq_cuda_init(msg, sizeof msg);
}

namespace {

// Uploads rows x cols_bytes (host pitch src_pitch) into a zeroed device buffer of pitch dst_pitch and rows_pad rows.
int upload_padded(void *dst, size_t dst_pitch, const void *src, size_t src_pitch, size_t width, int rows, int rows_pad,
                  cudaStream_t st) {
  CK(cudaMemsetAsync(dst, 0, dst_pitch * rows_pad, st));
  CK(cudaMemcpy2DAsync(dst, dst_pitch, src, src_pitch, width, rows, cudaMemcpyHostToDevice, st));
  return BWQ_OK;
}

// Device-resident weights (bwq_cuda_weights_upload): padded device copies of B [roundup(N,128), ldk words],
// by handle. The resident GEMMs take B from here instead of uploading it per call.
struct ResidentWeights {
  void *dev;
  int n, k;
};
std::mutex g_resident_mu;
std::unordered_map<uint64_t, ResidentWeights> g_resident;
uint64_t g_resident_next = 1;

// The device copy of `handle` for an n x k call, or nullptr (with g_err set).
const void *resident_lookup(uint64_t handle, int n, int k) {
  std::lock_guard<std::mutex> lk(g_resident_mu);
  const auto it = g_resident.find(handle);
  if (it == g_resident.end()) {
    snprintf(g_err, sizeof g_err, "unknown resident-weights handle %llu", (unsigned long long)handle);
    return nullptr;
  }
  if (it->second.n != n || it->second.k != k) {
    snprintf(g_err, sizeof g_err, "resident weights are %d x %d, the call needs %d x %d", it->second.n,
             it->second.k, n, k);
    return nullptr;
  }
  return it->second.dev;
}

}  // namespace
}  // namespace bwq_gemm

using namespace bwq_gemm;

// =============================================================================================
extern "C" {

const char *bwq_cuda_last_error(void) { return g_err; }

int bwq_cuda_init(char *msg, size_t msg_len) {
  std::lock_guard<std::mutex> lk(g_init_mu);
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    snprintf(g_err, sizeof g_err, "no CUDA device (%s)", e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    if (msg && msg_len) snprintf(msg, msg_len, "%s", g_err);
    return BWQ_ENODEV;
  }
  cudaDeviceProp prop;
  e = cudaSetDevice(0);
  if (e == cudaSuccess) e = cudaGetDeviceProperties(&prop, 0);
  if (e == cudaSuccess && prop.major < 8) {
    snprintf(g_err, sizeof g_err, "CUDA device %s is sm_%d%d; bwq kernels need sm_80 or newer", prop.name, prop.major,
             prop.minor);
    if (msg && msg_len) snprintf(msg, msg_len, "%s", g_err);
    return BWQ_ENODEV;
  }
  if (e == cudaSuccess && !g_ws.stream) e = cudaStreamCreateWithFlags(&g_ws.stream, cudaStreamNonBlocking);
  if (e != cudaSuccess) {
    snprintf(g_err, sizeof g_err, "CUDA initialisation failed: %s", cudaGetErrorString(e));
    if (msg && msg_len) snprintf(msg, msg_len, "%s", g_err);
    return BWQ_ECUDA;
  }
  g_max_smem_optin = (int)prop.sharedMemPerBlockOptin;
  g_num_sms = prop.multiProcessorCount;
  g_l2_bytes = prop.l2CacheSize;
  if (prop.major == 9 && prop.minor == 0 && getenv("BWQ_CUDA_NO_WGMMA") == nullptr) {
    int *flag = nullptr, h = 0;
    if (cudaMalloc(&flag, sizeof(int)) == cudaSuccess) {
      wgmma_probe<<<1, 1>>>(flag);
      if (cudaMemcpy(&h, flag, sizeof(int), cudaMemcpyDeviceToHost) == cudaSuccess) g_has_wgmma = h == 1;
      cudaFree(flag);
    }
    void *fn = nullptr;
    cudaDriverEntryPointQueryResult q;
    if (g_has_wgmma && cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &q) ==
                           cudaSuccess &&
        q == cudaDriverEntryPointSuccess)
      g_encode_tiled = (EncodeTiled_t)fn;
    cudaGetLastError();
  }
  g_inited = true;
  if (msg && msg_len)
    snprintf(msg, msg_len, "%s (sm_%d%d, %d SMs, %.0f GiB)", prop.name, prop.major, prop.minor,
             prop.multiProcessorCount, prop.totalGlobalMem / 1073741824.0);
  return BWQ_OK;
}

}  // extern "C"

namespace {
// ---------------------------------------------------------------------------------------------
// Host-pointer GEMMs: copy in (the weights only when no device copy is given), run, copy out.

// Argument checks shared by the host-pointer GEMMs (operands: all operand pointers are given): BWQ_OK with
// *done = false when the kernels must run (CUDA is then initialised); with *done = true the call is complete
// (an empty output, or K = 0: zeros).
int host_gemm_prologue(int m, int n, int k, int32_t *out, bool operands, bool *done) {
  *done = true;
  if (m < 0 || n < 0 || k < 0) return BWQ_EINVAL;
  if (m == 0 || n == 0) return BWQ_OK;
  if (!out) return BWQ_EINVAL;
  if (k == 0) {
    memset(out, 0, sizeof(int32_t) * (size_t)m * n);
    return BWQ_OK;
  }
  if (!operands) return BWQ_EINVAL;
  *done = false;
  return ensure_init();
}

// Ternary x binary on the device (the caller holds g_ws.mu): uploads the activation planes from the host,
// takes the weights from dW (row stride roundup(ceil(k/32), 32) words, rows padded to 128, padding zero) and
// leaves the int32 sums [m, n] in a workspace buffer (*dSums). Uses workspaces 0, 1, 3, 4, 5.
int tb_on_device(const uint32_t *plus, const uint32_t *minus, const void *dW, int m, int n, int k, cudaStream_t st,
                 int32_t **dSums) {
  const int kw = kw_of(k), ldk = round_up(kw, 32), mp = round_up(m, 128);
  void *dP, *dQ, *dO, *dNz;
  int rc;
  if ((rc = g_ws.get(0, (size_t)mp * ldk * 4, &dP)) || (rc = g_ws.get(1, (size_t)mp * ldk * 4, &dQ)) ||
      (rc = g_ws.get(3, (size_t)m * n * 4, &dO)) || (rc = g_ws.get(4, (size_t)mp * 4, &dNz)))
    return rc;
  if ((rc = upload_padded(dP, ldk * 4, plus, kw * 4, kw * 4, m, mp, st)) ||
      (rc = upload_padded(dQ, ldk * 4, minus, kw * 4, kw * 4, m, mp, st)))
    return rc;
  const uint32_t lm = last_word_mask(k);
  if (lm != 0xFFFFFFFFu) {
    mask_last_word<<<(m + 255) / 256, 256, 0, st>>>((uint32_t *)dP, m, ldk, kw, lm);
    mask_last_word<<<(m + 255) / 256, 256, 0, st>>>((uint32_t *)dQ, m, ldk, kw, lm);
  }
  bool out16 = false;
  launch_tb((const uint32_t *)dP, (const uint32_t *)dQ, (const uint32_t *)dW, ldk, (int *)dNz, m, n, (int32_t *)dO, st,
            &out16);
  CK(cudaGetLastError());
  if (out16) {  // 16-bit sums: widened on the device into workspace 5
    void *dO32;
    if ((rc = g_ws.get(5, (size_t)m * n * 4, &dO32))) return rc;
    widen16<<<1024, 256, 0, st>>>((const int16_t *)dO, (int32_t *)dO32, (size_t)m * n);
    CK(cudaGetLastError());
    dO = dO32;
  }
  *dSums = (int32_t *)dO;
  return BWQ_OK;
}

int copy_out(int32_t *out, const int32_t *dSums, int m, int n, cudaStream_t st) {
  CK(cudaMemcpyAsync(out, dSums, (size_t)m * n * 4, cudaMemcpyDeviceToHost, st));
  CK(cudaStreamSynchronize(st));
  return BWQ_OK;
}

int tb_host(const uint32_t *plus, const uint32_t *minus, const uint32_t *weights, uint64_t resident, int m, int n,
            int k, int32_t *out) {
  bool done;
  int rc = host_gemm_prologue(m, n, k, out, plus && minus && (weights || resident), &done);
  if (rc || done) return rc;
  const void *dRes = nullptr;
  if (resident && !(dRes = resident_lookup(resident, n, k))) return BWQ_EINVAL;
  std::lock_guard<std::mutex> lk(g_ws.mu);
  cudaStream_t st = g_ws.stream;
  const int kw = kw_of(k), ldk = round_up(kw, 32), np = round_up(n, 128);
  void *dW = const_cast<void *>(dRes);
  if (!dRes && ((rc = g_ws.get(2, (size_t)np * ldk * 4, &dW)) ||
                (rc = upload_padded(dW, ldk * 4, weights, kw * 4, kw * 4, n, np, st))))
    return rc;
  int32_t *dSums;
  if ((rc = tb_on_device(plus, minus, dW, m, n, k, st, &dSums))) return rc;
  return copy_out(out, dSums, m, n, st);
}

// Ternary x ternary: the n rows of the second operand become 2n binary rows (s_pos = its plus planes, then
// s_nonneg = its negated minus planes; nonneg_bits_of_minus), one ternary x binary GEMM gives the [m, 2n] sums
// and halve_pair_sums combines each pair. Rows of the first operand go in chunks whose [rows, 2n] sums stay
// within the int range of the kernels' indices.
int tt_host(const uint32_t *a_plus, const uint32_t *a_minus, const uint32_t *b_plus, const uint32_t *b_minus, int m,
            int n, int k, int32_t *out) {
  bool done;
  int rc = host_gemm_prologue(m, n, k, out, a_plus && a_minus && b_plus && b_minus, &done);
  if (rc || done) return rc;
  if (n > INT_MAX / 2 - 128) {
    snprintf(g_err, sizeof g_err, "ternary x ternary on CUDA takes at most %d rows of the second operand, got %d",
             INT_MAX / 2 - 128, n);
    return BWQ_EINVAL;
  }
  std::lock_guard<std::mutex> lk(g_ws.mu);
  cudaStream_t st = g_ws.stream;
  const int kw = kw_of(k), ldk = round_up(kw, 32), np2 = round_up(2 * n, 128);
  const uint32_t lm = last_word_mask(k);
  void *dW, *dOut;
  if ((rc = g_ws.get(2, (size_t)np2 * ldk * 4, &dW)) || (rc = g_ws.get(6, (size_t)m * n * 4, &dOut)) ||
      (rc = upload_padded(dW, ldk * 4, b_plus, kw * 4, kw * 4, n, np2, st)))
    return rc;
  uint32_t *dMinusRows = (uint32_t *)dW + (size_t)n * ldk;
  CK(cudaMemcpy2DAsync(dMinusRows, ldk * 4, b_minus, kw * 4, kw * 4, n, cudaMemcpyHostToDevice, st));
  nonneg_bits_of_minus<<<(int)std::min<size_t>(1024, ((size_t)n * kw + 255) / 256), 256, 0, st>>>(dMinusRows, n, ldk,
                                                                                                   kw, lm);
  CK(cudaGetLastError());
  const int chunk = std::max(1, INT_MAX / (2 * n));
  for (int r0 = 0; r0 < m; r0 += chunk) {
    const int rows = std::min(chunk, m - r0);
    int32_t *dSums;
    if ((rc = tb_on_device(a_plus + (size_t)r0 * kw, a_minus + (size_t)r0 * kw, dW, rows, 2 * n, k, st, &dSums)))
      return rc;
    halve_pair_sums<<<(int)std::min<size_t>(1024, ((size_t)rows * n + 255) / 256), 256, 0, st>>>(
        dSums, rows, n, (int32_t *)dOut + (size_t)r0 * n);
    CK(cudaGetLastError());
  }
  return copy_out(out, (const int32_t *)dOut, m, n, st);
}

int i8_host(const int8_t *a, const uint32_t *weights, uint64_t resident, int m, int n, int k, int32_t *out) {
  bool done;
  int rc = host_gemm_prologue(m, n, k, out, a && (weights || resident), &done);
  if (rc || done) return rc;
  const void *dRes = nullptr;
  if (resident && !(dRes = resident_lookup(resident, n, k))) return BWQ_EINVAL;
  std::lock_guard<std::mutex> lk(g_ws.mu);
  cudaStream_t st = g_ws.stream;
  const int kw = kw_of(k), ldk = round_up(kw, 32), lda = ldk * 32, mp = round_up(m, 128), np = round_up(n, 128);
  void *dA, *dW = const_cast<void *>(dRes), *dO;
  if ((rc = g_ws.get(0, (size_t)mp * lda, &dA)) || (!dRes && (rc = g_ws.get(2, (size_t)np * ldk * 4, &dW))) ||
      (rc = g_ws.get(3, (size_t)m * n * 4, &dO)))
    return rc;
  if ((rc = upload_padded(dA, lda, a, k, k, m, mp, st)) ||
      (!dRes && (rc = upload_padded(dW, ldk * 4, weights, kw * 4, kw * 4, n, np, st))))
    return rc;
  launch_i8((const int8_t *)dA, lda, (const uint32_t *)dW, ldk, m, n, (int32_t *)dO, st);
  CK(cudaGetLastError());
  return copy_out(out, (const int32_t *)dO, m, n, st);
}
}  // namespace

extern "C" {

int bwq_cuda_ternary_binary_gemm(const uint32_t *plus, const uint32_t *minus, const uint32_t *weights, int m, int n,
                                 int k, int32_t *out) {
  return tb_host(plus, minus, weights, 0, m, n, k, out);
}

int bwq_cuda_int8_binary_gemm(const int8_t *a, const uint32_t *weights, int m, int n, int k, int32_t *out) {
  return i8_host(a, weights, 0, m, n, k, out);
}

int bwq_cuda_ternary_ternary_gemm(const uint32_t *a_plus, const uint32_t *a_minus, const uint32_t *b_plus,
                                  const uint32_t *b_minus, int m, int n, int k, int32_t *out) {
  return tt_host(a_plus, a_minus, b_plus, b_minus, m, n, k, out);
}

int bwq_cuda_weights_upload(const uint32_t *weights, int n, int k, uint64_t *handle) {
  if (!weights || !handle || n <= 0 || k <= 0) return BWQ_EINVAL;
  int rc = ensure_init();
  if (rc) return rc;
  const int kw = kw_of(k), ldk = round_up(kw, 32), np = round_up(n, 128);
  void *dev = nullptr;
  {
    std::lock_guard<std::mutex> lk(g_ws.mu);
    CK(cudaMalloc(&dev, (size_t)np * ldk * 4));
    if ((rc = upload_padded(dev, ldk * 4, weights, kw * 4, kw * 4, n, np, g_ws.stream)) ||
        cudaStreamSynchronize(g_ws.stream) != cudaSuccess) {
      cudaFree(dev);
      return rc ? rc : BWQ_ECUDA;
    }
  }
  std::lock_guard<std::mutex> lk(g_resident_mu);
  *handle = g_resident_next++;
  g_resident[*handle] = ResidentWeights{dev, n, k};
  return BWQ_OK;
}

int bwq_cuda_weights_free(uint64_t handle) {
  void *dev = nullptr;
  {
    std::lock_guard<std::mutex> lk(g_resident_mu);
    const auto it = g_resident.find(handle);
    if (it == g_resident.end()) return BWQ_EINVAL;
    dev = it->second.dev;
    g_resident.erase(it);
  }
  std::lock_guard<std::mutex> lk(g_ws.mu);  // no call is using it: calls hold the workspace lock while they run
  CK(cudaFree(dev));
  return BWQ_OK;
}

int bwq_cuda_ternary_binary_gemm_resident(const uint32_t *plus, const uint32_t *minus, uint64_t weights, int m, int n,
                                          int k, int32_t *out) {
  if (!weights) return BWQ_EINVAL;
  return tb_host(plus, minus, nullptr, weights, m, n, k, out);
}

int bwq_cuda_int8_binary_gemm_resident(const int8_t *a, uint64_t weights, int m, int n, int k, int32_t *out) {
  if (!weights) return BWQ_EINVAL;
  return i8_host(a, nullptr, weights, m, n, k, out);
}

}  // extern "C"

// ---------------------------------------------------------------------------------------------
// The packed GEMM launchers and initialisation for the other translation units (packed_gemm.cuh).
namespace bwq_cuda {

int ensure_ready(char *msg, size_t msg_len) {
  if (g_inited) return BWQ_OK;
  return bwq_cuda_init(msg, msg_len);
}
int num_sms() { return g_num_sms; }
int max_smem_optin() { return g_max_smem_optin; }

const char *tb_gemm(const uint32_t *dP, const uint32_t *dQ, const uint32_t *dW, int ldk, int *dNz, int m, int n,
                    int32_t *dOut, cudaStream_t st, bool *out16) {
  return launch_tb(dP, dQ, dW, ldk, dNz, m, n, dOut, st, out16);
}

const char *i8_gemm(const int8_t *dA, int lda, const uint32_t *dW, int ldk, int m, int n, int32_t *dOut,
                    cudaStream_t st) {
  return launch_i8(dA, lda, dW, ldk, m, n, dOut, st);
}

const char *tb_gemv_scaled(const uint32_t *dP, const uint32_t *dQ, const uint32_t *dW, int ldk, int n, const float *ds,
                           const float *dWscale, float *dY, cudaStream_t st) {
  GemvEpilogue e;
  e.s = ds, e.wscale = dWscale, e.y = dY;
  return launch_tb_scaled(dP, dQ, dW, ldk, n, e, st);
}

const char *i8_gemv_scaled(const int8_t *dA, int lda, const uint32_t *dW, int ldk, int n, const float *ds,
                           const float *dWscale, float *dY, cudaStream_t st) {
  GemvEpilogue e;
  e.s = ds, e.wscale = dWscale, e.y = dY;
  return launch_i8_scaled(dA, lda, dW, ldk, n, e, st);
}

}  // namespace bwq_cuda
