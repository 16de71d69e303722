// JS values from C++ for the N-API bindings (addon.cpp, addon_runtime.cpp).
#ifndef BWQ_NAPI_VALUES_H
#define BWQ_NAPI_VALUES_H
#include <node_api.h>

namespace bwq_napi {
inline napi_value make_string(napi_env env, const char *s) {
  napi_value v;
  napi_create_string_utf8(env, s, NAPI_AUTO_LENGTH, &v);
  return v;
}
inline napi_value make_int(napi_env env, int x) {
  napi_value v;
  napi_create_int32(env, x, &v);
  return v;
}
inline napi_value make_double(napi_env env, double x) {
  napi_value v;
  napi_create_double(env, x, &v);
  return v;
}
inline napi_value make_bool(napi_env env, bool b) {
  napi_value v;
  napi_get_boolean(env, b, &v);
  return v;
}
inline void set(napi_env env, napi_value obj, const char *key, napi_value v) { napi_set_named_property(env, obj, key, v); }
/** One exported function of a module's property table. */
inline napi_property_descriptor method(const char *name, napi_callback fn) {
  return {name, nullptr, fn, nullptr, nullptr, nullptr, napi_default, nullptr};
}
}  // namespace bwq_napi
#endif
