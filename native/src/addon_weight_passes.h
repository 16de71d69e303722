// N-API binding of PSP's passes over a binarized weight (native/ops/binarize/binarize_cpu.cpp).
#ifndef BWQ_ADDON_WEIGHT_PASSES_H
#define BWQ_ADDON_WEIGHT_PASSES_H
#include <node_api.h>

// Adds pspBStep, pspResidual, rowSquaredDistance, binaryLowRankWeight, subtractF32, transposeF32, blockErrors.
void register_weight_passes(napi_env env, napi_value exports);
#endif
