// N-API binding (plain C API from node_api.h; no node-addon-api). Exposes the CPU kernels and, through a
// lazily dlopen'ed libbwq_cuda.so (built next to this addon when nvcc was present), the CUDA kernels.
// The addon itself never links CUDA, so it loads on machines without a GPU or CUDA runtime.
#include <dlfcn.h>
#include <node_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mutex>
#include <string>

#include "../include/bwq.h"
#include "../runtime/backend.h"
#include "addon_runtime.h"
#include "addon_weight_passes.h"
#include "napi_values.h"

namespace {

// ---------------------------------------------------------------- CUDA library (dlopen)
typedef int (*cuda_init_fn)(char *, size_t);
typedef const char *(*cuda_err_fn)(void);
typedef int (*cuda_tb_fn)(const uint32_t *, const uint32_t *, const uint32_t *, int, int, int, int32_t *);
typedef int (*cuda_i8_fn)(const int8_t *, const uint32_t *, int, int, int, int32_t *);
typedef int (*cuda_tt_fn)(const uint32_t *, const uint32_t *, const uint32_t *, const uint32_t *, int, int, int,
                          int32_t *);
typedef int (*cuda_bench_fn)(int, int, int, int, int, int, bwq_bench_result *);
typedef int (*cuda_upload_fn)(const uint32_t *, int, int, uint64_t *);
typedef int (*cuda_free_fn)(uint64_t);
typedef int (*cuda_tb_res_fn)(const uint32_t *, const uint32_t *, uint64_t, int, int, int, int32_t *);
typedef int (*cuda_i8_res_fn)(const int8_t *, uint64_t, int, int, int, int32_t *);
typedef bwq::rt::Backend *(*cuda_backend_fn)(char *, size_t);

struct CudaLib {
  bool tried = false;
  bool ok = false;
  std::string message;  // device description, or why CUDA is unavailable
  std::string path;
  cuda_err_fn last_error = nullptr;
  cuda_tb_fn tb = nullptr;
  cuda_i8_fn i8 = nullptr;
  cuda_tt_fn tt = nullptr;
  cuda_bench_fn bench = nullptr;
  cuda_upload_fn upload = nullptr;
  cuda_free_fn free_weights = nullptr;
  cuda_tb_res_fn tb_resident = nullptr;
  cuda_i8_res_fn i8_resident = nullptr;
  cuda_backend_fn backend_create = nullptr;  // the runtime's CUDA backend (absent in older builds)
  bwq::rt::Backend *backend = nullptr;
  std::string backend_message;
};
CudaLib g_cuda;
std::mutex g_cuda_mu;

std::string addon_dir() {
  Dl_info info;
  if (dladdr((void *)&addon_dir, &info) && info.dli_fname) {
    std::string p(info.dli_fname);
    const size_t slash = p.rfind('/');
    if (slash != std::string::npos) return p.substr(0, slash);
  }
  return ".";
}

void cuda_load() {
  std::lock_guard<std::mutex> lk(g_cuda_mu);
  if (g_cuda.tried) return;
  g_cuda.tried = true;
  const char *env = getenv("BWQ_CUDA_LIB");
  g_cuda.path = env && *env ? env : addon_dir() + "/libbwq_cuda.so";
  FILE *f = fopen(g_cuda.path.c_str(), "rb");
  if (!f) {
    g_cuda.message = "CUDA kernels were not built (nvcc was not found when the package was installed)";
    return;
  }
  fclose(f);
  void *h = dlopen(g_cuda.path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    const char *e = dlerror();
    g_cuda.message = std::string("cannot load ") + g_cuda.path + ": " + (e ? e : "unknown error");
    return;
  }
  cuda_init_fn init = (cuda_init_fn)dlsym(h, "bwq_cuda_init");
  g_cuda.last_error = (cuda_err_fn)dlsym(h, "bwq_cuda_last_error");
  g_cuda.tb = (cuda_tb_fn)dlsym(h, "bwq_cuda_ternary_binary_gemm");
  g_cuda.i8 = (cuda_i8_fn)dlsym(h, "bwq_cuda_int8_binary_gemm");
  g_cuda.tt = (cuda_tt_fn)dlsym(h, "bwq_cuda_ternary_ternary_gemm");
  g_cuda.bench = (cuda_bench_fn)dlsym(h, "bwq_cuda_bench");
  g_cuda.upload = (cuda_upload_fn)dlsym(h, "bwq_cuda_weights_upload");
  g_cuda.free_weights = (cuda_free_fn)dlsym(h, "bwq_cuda_weights_free");
  g_cuda.tb_resident = (cuda_tb_res_fn)dlsym(h, "bwq_cuda_ternary_binary_gemm_resident");
  g_cuda.i8_resident = (cuda_i8_res_fn)dlsym(h, "bwq_cuda_int8_binary_gemm_resident");
  g_cuda.backend_create = (cuda_backend_fn)dlsym(h, "bwq_cuda_backend_create");
  if (!init || !g_cuda.last_error || !g_cuda.tb || !g_cuda.i8 || !g_cuda.tt || !g_cuda.bench || !g_cuda.upload ||
      !g_cuda.free_weights || !g_cuda.tb_resident || !g_cuda.i8_resident) {
    g_cuda.message = g_cuda.path + " lacks the bwq_cuda_* entry points (rebuild with npm rebuild)";
    return;
  }
  char msg[512] = "";
  const int rc = init(msg, sizeof msg);
  g_cuda.message = msg;
  g_cuda.ok = rc == BWQ_OK;
}

}  // namespace

// The runtime's CUDA backend (created once), or nullptr with *why set.
bwq::rt::Backend *cuda_runtime_backend(std::string *why) {
  cuda_load();
  std::lock_guard<std::mutex> lk(g_cuda_mu);
  if (!g_cuda.ok) {
    *why = g_cuda.message;
    return nullptr;
  }
  if (!g_cuda.backend && g_cuda.backend_create) {
    char msg[512] = "";
    g_cuda.backend = g_cuda.backend_create(msg, sizeof msg);
    if (!g_cuda.backend) g_cuda.backend_message = msg;
  }
  if (!g_cuda.backend_create) *why = g_cuda.path + " has no runtime backend (rebuild with npm rebuild)";
  else if (!g_cuda.backend) *why = g_cuda.backend_message;
  return g_cuda.backend;
}

namespace {
// ---------------------------------------------------------------- N-API helpers
#define NAPI_CALL(env, call)                                          \
  do {                                                                \
    if ((call) != napi_ok) {                                          \
      napi_throw_error((env), "BWQ_NAPI", "N-API call failed: " #call); \
      return nullptr;                                                 \
    }                                                                 \
  } while (0)

bool get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok) return false;
  if (argc < want) {
    napi_throw_type_error(env, "BWQ_ARGS", "bwq native: too few arguments");
    return false;
  }
  return true;
}

bool get_int(napi_env env, napi_value v, int *out, const char *what) {
  int32_t x;
  if (napi_get_value_int32(env, v, &x) != napi_ok) {
    napi_throw_type_error(env, "BWQ_ARGS", (std::string("bwq native: ") + what + " must be an integer").c_str());
    return false;
  }
  if (x < 0) {
    napi_throw_range_error(env, "BWQ_ARGS", (std::string("bwq native: ") + what + " must be >= 0").c_str());
    return false;
  }
  *out = x;
  return true;
}

// m, n, k from three consecutive arguments.
bool get_mnk(napi_env env, const napi_value *args, int *m, int *n, int *k) {
  return get_int(env, args[0], m, "m") && get_int(env, args[1], n, "n") && get_int(env, args[2], k, "k");
}

// Fetches a typed array of the given type with at least `need` elements.
bool get_typed(napi_env env, napi_value v, napi_typedarray_type want, size_t need, void **data, const char *what) {
  bool is_ta = false;
  napi_is_typedarray(env, v, &is_ta);
  napi_typedarray_type type;
  size_t length = 0;
  napi_value ab;
  size_t off;
  if (!is_ta || napi_get_typedarray_info(env, v, &type, &length, data, &ab, &off) != napi_ok || type != want) {
    napi_throw_type_error(env, "BWQ_ARGS", (std::string("bwq native: ") + what + " has the wrong array type").c_str());
    return false;
  }
  if (length < need) {
    napi_throw_range_error(env, "BWQ_ARGS",
                           (std::string("bwq native: ") + what + " is too short (" + std::to_string(length) +
                            " < " + std::to_string(need) + ")")
                               .c_str());
    return false;
  }
  return true;
}

using bwq_napi::make_bool;
using bwq_napi::make_double;
using bwq_napi::make_int;
using bwq_napi::make_string;
using bwq_napi::set;

bool get_bool(napi_env env, napi_value v) {
  bool b = false;
  napi_get_value_bool(env, v, &b);
  return b;
}

bool check_rc(napi_env env, int rc, bool cuda) {
  if (rc == BWQ_OK) return true;
  std::string msg = "bwq native kernel failed (code " + std::to_string(rc) + ")";
  if (cuda && g_cuda.last_error) msg += std::string(": ") + g_cuda.last_error();
  napi_throw_error(env, "BWQ_KERNEL", msg.c_str());
  return false;
}

// ---------------------------------------------------------------- exported functions
napi_value CpuInfo(napi_env env, napi_callback_info) {
  napi_value o;
  NAPI_CALL(env, napi_create_object(env, &o));
  set(env, o, "level", make_string(env, bwq_cpu_level_name(bwq_cpu_level())));
  set(env, o, "detected", make_string(env, bwq_cpu_level_name(bwq_cpu_detect())));
  set(env, o, "threads", make_int(env, bwq_cpu_threads()));
  return o;
}

napi_value SetCpuLevel(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return nullptr;
  char buf[16] = "";
  size_t len = 0;
  if (napi_get_value_string_utf8(env, argv[0], buf, sizeof buf, &len) != napi_ok) {
    napi_throw_type_error(env, "BWQ_ARGS", "bwq native: level must be a string");
    return nullptr;
  }
  int want = -1;
  if (!strcmp(buf, "scalar")) want = BWQ_CPU_SCALAR;
  else if (!strcmp(buf, "avx2")) want = BWQ_CPU_AVX2;
  else if (!strcmp(buf, "avx512")) want = BWQ_CPU_AVX512;
  else if (strcmp(buf, "auto") != 0) {
    napi_throw_range_error(env, "BWQ_ARGS", "bwq native: level must be auto|scalar|avx2|avx512");
    return nullptr;
  }
  return make_string(env, bwq_cpu_level_name(bwq_cpu_set_level(want)));
}

napi_value SetThreads(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return nullptr;
  int n = 0;
  if (!get_int(env, argv[0], &n, "threads")) return nullptr;
  bwq_cpu_set_threads(n);
  return make_int(env, bwq_cpu_threads());
}

// ---------------------------------------------------------------- device-resident weights
// cudaUploadWeights(weights, n, k) -> an external value owning the GPU copy (freed by cudaFreeWeights or when
// the value is garbage-collected). The resident GEMMs take it in place of the weights array.
struct ResidentRef {
  uint64_t handle;
  int n, k;
};

void resident_finalize(napi_env, void *data, void *) {
  ResidentRef *ref = static_cast<ResidentRef *>(data);
  if (ref->handle && g_cuda.ok) g_cuda.free_weights(ref->handle);
  delete ref;
}

bool cuda_ready(napi_env env) {
  cuda_load();
  if (g_cuda.ok) return true;
  napi_throw_error(env, "BWQ_CUDA", ("bwq: CUDA unavailable: " + g_cuda.message).c_str());
  return false;
}

// Type tag of the externals made by cudaUploadWeights (so no other external passes for one).
const napi_type_tag kResidentTag = {0x62777172657369ULL, 0x64656e7477747301ULL};

// The ResidentRef behind an external made by cudaUploadWeights, or nullptr (TypeError thrown).
ResidentRef *resident_ref(napi_env env, napi_value v, const char *what) {
  napi_valuetype t;
  void *data = nullptr;
  bool tagged = false;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_external ||
      napi_check_object_type_tag(env, v, &kResidentTag, &tagged) != napi_ok || !tagged ||
      napi_get_value_external(env, v, &data) != napi_ok || !data) {
    napi_throw_type_error(env, "BWQ_ARGS", (std::string("bwq native: ") + what + " must come from cudaUploadWeights").c_str());
    return nullptr;
  }
  return static_cast<ResidentRef *>(data);
}

// The live resident copy behind an external made by cudaUploadWeights, checked against the call's n and k.
bool get_resident(napi_env env, napi_value v, int n, int k, uint64_t *handle) {
  const ResidentRef *ref = resident_ref(env, v, "weights");
  if (!ref) return false;
  if (!ref->handle) {
    napi_throw_error(env, "BWQ_ARGS", "bwq native: these resident weights were freed");
    return false;
  }
  if (ref->n != n || ref->k != k) {
    napi_throw_range_error(env, "BWQ_ARGS",
                           ("bwq native: resident weights are " + std::to_string(ref->n) + " x " +
                            std::to_string(ref->k) + ", the call needs " + std::to_string(n) + " x " + std::to_string(k))
                               .c_str());
    return false;
  }
  *handle = ref->handle;
  return true;
}

// Weights argument: a Uint32Array [n, ceil(k/32)] (*w), or a resident copy (*resident; CUDA must be up).
bool get_weights(napi_env env, napi_value v, int n, int k, void **w, uint64_t *resident) {
  napi_valuetype t;
  *resident = 0;
  if (napi_typeof(env, v, &t) == napi_ok && t == napi_external)
    return get_resident(env, v, n, k, resident) && cuda_ready(env);
  return get_typed(env, v, napi_uint32_array, (size_t)n * ((k + 31) / 32), w, "weights");
}

// ternaryBinaryGemm(plus, minus, weights, m, n, k, out, cuda); weights may be a resident copy (runs on CUDA)
napi_value TernaryBinaryGemm(napi_env env, napi_callback_info info) {
  napi_value argv[8];
  if (!get_args(env, info, 8, argv)) return nullptr;
  int m, n, k;
  if (!get_mnk(env, argv + 3, &m, &n, &k)) return nullptr;
  const size_t kw = (size_t)(k + 31) / 32;
  void *p, *q, *w = nullptr, *o;
  uint64_t res = 0;
  if (!get_typed(env, argv[0], napi_uint32_array, (size_t)m * kw, &p, "plus") ||
      !get_typed(env, argv[1], napi_uint32_array, (size_t)m * kw, &q, "minus") ||
      !get_weights(env, argv[2], n, k, &w, &res) || !get_typed(env, argv[6], napi_int32_array, (size_t)m * n, &o, "out"))
    return nullptr;
  const uint32_t *P = (const uint32_t *)p, *Q = (const uint32_t *)q, *W = (const uint32_t *)w;
  const bool cuda = res || (get_bool(env, argv[7]) && g_cuda.ok);
  const int rc = res    ? g_cuda.tb_resident(P, Q, res, m, n, k, (int32_t *)o)
                 : cuda ? g_cuda.tb(P, Q, W, m, n, k, (int32_t *)o)
                        : bwq_cpu_ternary_binary_gemm(P, Q, W, m, n, k, (int32_t *)o);
  if (!check_rc(env, rc, cuda)) return nullptr;
  return argv[6];
}

// int8BinaryGemm(a, weights, m, n, k, out, cuda); weights may be a resident copy (runs on CUDA)
napi_value Int8BinaryGemm(napi_env env, napi_callback_info info) {
  napi_value argv[7];
  if (!get_args(env, info, 7, argv)) return nullptr;
  int m, n, k;
  if (!get_mnk(env, argv + 2, &m, &n, &k)) return nullptr;
  void *a, *w = nullptr, *o;
  uint64_t res = 0;
  if (!get_typed(env, argv[0], napi_int8_array, (size_t)m * k, &a, "a") || !get_weights(env, argv[1], n, k, &w, &res) ||
      !get_typed(env, argv[5], napi_int32_array, (size_t)m * n, &o, "out"))
    return nullptr;
  const int8_t *A = (const int8_t *)a;
  const uint32_t *W = (const uint32_t *)w;
  const bool cuda = res || (get_bool(env, argv[6]) && g_cuda.ok);
  const int rc = res    ? g_cuda.i8_resident(A, res, m, n, k, (int32_t *)o)
                 : cuda ? g_cuda.i8(A, W, m, n, k, (int32_t *)o)
                        : bwq_cpu_int8_binary_gemm(A, W, m, n, k, (int32_t *)o);
  if (!check_rc(env, rc, cuda)) return nullptr;
  return argv[5];
}

// ternaryTernaryGemm(aPlus, aMinus, bPlus, bMinus, m, n, k, out, cuda)
napi_value TernaryTernaryGemm(napi_env env, napi_callback_info info) {
  napi_value argv[9];
  if (!get_args(env, info, 9, argv)) return nullptr;
  int m, n, k;
  if (!get_mnk(env, argv + 4, &m, &n, &k)) return nullptr;
  const size_t kw = (size_t)(k + 31) / 32;
  void *ap, *am, *bp, *bm, *o;
  if (!get_typed(env, argv[0], napi_uint32_array, (size_t)m * kw, &ap, "aPlus") ||
      !get_typed(env, argv[1], napi_uint32_array, (size_t)m * kw, &am, "aMinus") ||
      !get_typed(env, argv[2], napi_uint32_array, (size_t)n * kw, &bp, "bPlus") ||
      !get_typed(env, argv[3], napi_uint32_array, (size_t)n * kw, &bm, "bMinus") ||
      !get_typed(env, argv[7], napi_int32_array, (size_t)m * n, &o, "out"))
    return nullptr;
  const uint32_t *AP = (const uint32_t *)ap, *AM = (const uint32_t *)am, *BP = (const uint32_t *)bp,
                 *BM = (const uint32_t *)bm;
  const bool cuda = get_bool(env, argv[8]) && g_cuda.ok;
  const int rc = cuda ? g_cuda.tt(AP, AM, BP, BM, m, n, k, (int32_t *)o)
                      : bwq_cpu_ternary_ternary_gemm(AP, AM, BP, BM, m, n, k, (int32_t *)o);
  if (!check_rc(env, rc, cuda)) return nullptr;
  return argv[7];
}

napi_value CudaUploadWeights(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  if (!get_args(env, info, 3, argv)) return nullptr;
  int n, k;
  if (!get_int(env, argv[1], &n, "n") || !get_int(env, argv[2], &k, "k")) return nullptr;
  if (n == 0 || k == 0) {
    napi_throw_range_error(env, "BWQ_ARGS", "bwq native: resident weights need n > 0 and k > 0");
    return nullptr;
  }
  void *w;
  if (!get_typed(env, argv[0], napi_uint32_array, (size_t)n * ((k + 31) / 32), &w, "weights")) return nullptr;
  if (!cuda_ready(env)) return nullptr;
  uint64_t handle = 0;
  if (!check_rc(env, g_cuda.upload((const uint32_t *)w, n, k, &handle), true)) return nullptr;
  ResidentRef *ref = new ResidentRef{handle, n, k};
  napi_value ext;
  if (napi_create_external(env, ref, resident_finalize, nullptr, &ext) != napi_ok) {
    g_cuda.free_weights(handle);
    delete ref;
    napi_throw_error(env, "BWQ_NAPI", "N-API call failed: napi_create_external");
    return nullptr;
  }
  if (napi_type_tag_object(env, ext, &kResidentTag) != napi_ok) {  // the external owns ref from here on
    g_cuda.free_weights(handle);
    ref->handle = 0;
    napi_throw_error(env, "BWQ_NAPI", "N-API call failed: napi_type_tag_object");
    return nullptr;
  }
  return ext;
}

// cudaFreeWeights(resident): releases the GPU copy now (later calls with it throw).
napi_value CudaFreeWeights(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return nullptr;
  ResidentRef *ref = resident_ref(env, argv[0], "the argument of cudaFreeWeights");
  if (!ref) return nullptr;
  if (ref->handle && g_cuda.ok) g_cuda.free_weights(ref->handle);
  ref->handle = 0;
  return nullptr;
}

// cudaInit() -> { ok, message, library }
napi_value CudaInit(napi_env env, napi_callback_info) {
  cuda_load();
  napi_value o;
  NAPI_CALL(env, napi_create_object(env, &o));
  set(env, o, "ok", make_bool(env, g_cuda.ok));
  set(env, o, "message", make_string(env, g_cuda.message.c_str()));
  set(env, o, "library", make_string(env, g_cuda.path.c_str()));
  return o;
}

// cudaBench(kind, m, n, k, warmup, reps) -> { msOurs, msCublas, msOursGraph, msCublasGraph, topsOurs, tflopsCublas,
//   kernel, checked, mismatches, cublas }
napi_value CudaBench(napi_env env, napi_callback_info info) {
  napi_value argv[6];
  if (!get_args(env, info, 6, argv)) return nullptr;
  int kind, m, n, k, warmup, reps;
  if (!get_int(env, argv[0], &kind, "kind") || !get_int(env, argv[1], &m, "m") || !get_int(env, argv[2], &n, "n") ||
      !get_int(env, argv[3], &k, "k") || !get_int(env, argv[4], &warmup, "warmup") ||
      !get_int(env, argv[5], &reps, "reps"))
    return nullptr;
  if (!cuda_ready(env)) return nullptr;
  bwq_bench_result r;
  memset(&r, 0, sizeof r);
  const int rc = g_cuda.bench(kind, m, n, k, warmup, reps, &r);
  if (rc != BWQ_OK && rc != BWQ_ECUBLAS) {
    check_rc(env, rc, true);
    return nullptr;
  }
  napi_value o;
  NAPI_CALL(env, napi_create_object(env, &o));
  set(env, o, "msOurs", make_double(env, r.ms_ours));
  set(env, o, "msCublas", make_double(env, r.ms_cublas));
  set(env, o, "msOursGraph", make_double(env, r.ms_ours_graph));
  set(env, o, "msCublasGraph", make_double(env, r.ms_cublas_graph));
  set(env, o, "topsOurs", make_double(env, r.tops_ours));
  set(env, o, "tflopsCublas", make_double(env, r.tops_cublas));
  set(env, o, "kernel", make_string(env, r.kernel));
  set(env, o, "checked", make_bool(env, r.checked != 0));
  set(env, o, "mismatches", make_int(env, r.mismatches));
  set(env, o, "cublas", make_bool(env, rc == BWQ_OK));
  return o;
}

napi_value Init(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {
      bwq_napi::method("cpuInfo", CpuInfo),
      bwq_napi::method("setCpuLevel", SetCpuLevel),
      bwq_napi::method("setThreads", SetThreads),
      bwq_napi::method("ternaryBinaryGemm", TernaryBinaryGemm),
      bwq_napi::method("int8BinaryGemm", Int8BinaryGemm),
      bwq_napi::method("ternaryTernaryGemm", TernaryTernaryGemm),
      bwq_napi::method("cudaInit", CudaInit),
      bwq_napi::method("cudaBench", CudaBench),
      bwq_napi::method("cudaUploadWeights", CudaUploadWeights),
      bwq_napi::method("cudaFreeWeights", CudaFreeWeights),
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  register_runtime(env, exports);
  register_weight_passes(env, exports);
  return exports;
}

}  // namespace

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
