// N-API binding of the runtime (native/runtime): models and sessions as JS externals.
#ifndef BWQ_ADDON_RUNTIME_H
#define BWQ_ADDON_RUNTIME_H
#include <node_api.h>

#include <string>

#include "../runtime/backend.h"

// The runtime's CUDA backend from libbwq_cuda.so (addon.cpp), or nullptr with *why set.
bwq::rt::Backend *cuda_runtime_backend(std::string *why);
// Adds rtOpen, rtSetTensor, rtMissing, rtSession, rtForward, rtNll, rtReset, rtPosition, rtInfo, rtFree.
void register_runtime(napi_env env, napi_value exports);
#endif
