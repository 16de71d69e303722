// What the N-API bindings of the runtime share (addon_runtime.cpp: models, sessions, states, products, the OKT;
// addon_recon.cpp: the reconstruction's device trainer): the backend lock, the model handle, argument checks.
#ifndef BWQ_ADDON_COMMON_H
#define BWQ_ADDON_COMMON_H
#include <node_api.h>

#include <memory>
#include <mutex>
#include <string>

#include "../runtime/model.h"

namespace bwq_addon {

using bwq::rt::Model;

// Every backend call of this addon holds this lock: rtMatmulT, rtKronRotate and rtOkt run on the backend thread
// below (their promise settles when they are done) while the JS thread goes on, and the backends (one CUDA stream, their
// scratch and sticky error) take one caller at a time. Locked regions make no N-API call (a finalizer, which locks
// too, may run inside one).
inline std::mutex g_backend_mu;
using BackendLock = std::lock_guard<std::mutex>;
// f() with the backend lock held (what a synchronous entry point does between its argument checks and its result).
template <class F>
auto locked(F &&f) {
  BackendLock lk(g_backend_mu);
  return f();
}

struct ModelRef {
  std::unique_ptr<Model> model;
};

inline const napi_type_tag kModelTag = {0x6277712d6d6f64ULL, 0x656c2d72756e7401ULL};

inline void throw_error(napi_env env, const std::string &msg) { napi_throw_error(env, "BWQ_RUNTIME", msg.c_str()); }

inline bool args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok || argc < want) {
    napi_throw_type_error(env, "BWQ_ARGS", "bwq runtime: too few arguments");
    return false;
  }
  return true;
}

template <class T>
T *unwrap(napi_env env, napi_value v, const napi_type_tag &tag, const char *what) {
  bool ok = false;
  void *data = nullptr;
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_external || napi_check_object_type_tag(env, v, &tag, &ok) != napi_ok ||
      !ok || napi_get_value_external(env, v, &data) != napi_ok || !data) {
    napi_throw_type_error(env, "BWQ_ARGS", (std::string("bwq runtime: expected a ") + what).c_str());
    return nullptr;
  }
  return static_cast<T *>(data);
}

inline bool typed(napi_env env, napi_value v, napi_typedarray_type want, void **data, size_t *length, const char *what) {
  bool is = false;
  napi_typedarray_type type;
  napi_value ab;
  size_t off;
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is ||
      napi_get_typedarray_info(env, v, &type, length, data, &ab, &off) != napi_ok || type != want) {
    napi_throw_type_error(env, "BWQ_ARGS", (std::string("bwq runtime: ") + what + " has the wrong array type").c_str());
    return false;
  }
  return true;
}

inline int int_of(napi_env env, napi_value v) {
  int32_t x = 0;
  napi_get_value_int32(env, v, &x);
  return x;
}

inline std::string string_of(napi_env env, napi_value v) {
  size_t len = 0;
  napi_get_value_string_utf8(env, v, nullptr, 0, &len);
  std::string s(len, '\0');
  napi_get_value_string_utf8(env, v, &s[0], len + 1, &len);
  return s;
}

template <class T>
napi_value wrap(napi_env env, T *obj, const napi_type_tag &tag, napi_finalize fin) {
  napi_value ext;
  if (napi_create_external(env, obj, fin, nullptr, &ext) != napi_ok) {
    delete obj;
    throw_error(env, "bwq runtime: napi_create_external failed");
    return nullptr;
  }
  napi_type_tag_object(env, ext, &tag);
  return ext;
}

// Throws `err` as a JS error when it is not empty; the call's return value either way.
inline napi_value done(napi_env env, const std::string &err, napi_value result = nullptr) {
  if (err.empty()) return result;
  throw_error(env, err);
  return nullptr;
}

// The call's n arguments, the first a live model (nullptr and a JS error otherwise).
inline ModelRef *model_args(napi_env env, napi_callback_info info, size_t n, napi_value *argv) {
  if (!args(env, info, n, argv)) return nullptr;
  ModelRef *m = unwrap<ModelRef>(env, argv[0], kModelTag, "runtime model");
  if (m && !m->model) {
    throw_error(env, "bwq runtime: model was freed");
    return nullptr;
  }
  return m;
}

// A new Float64Array of n values (its data in *data).
inline napi_value new_f64(napi_env env, size_t n, double **data) {
  napi_value ab, arr;
  napi_create_arraybuffer(env, n * sizeof(double), (void **)data, &ab);
  napi_create_typedarray(env, napi_float64_array, n, ab, 0, &arr);
  return arr;
}

}  // namespace bwq_addon

#endif
