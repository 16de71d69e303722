// N-API binding of the quantize numerics' passes on the CPU threads (binarize/, actquant/ in native/ops).
#ifndef BWQ_ADDON_WEIGHT_PASSES_H
#define BWQ_ADDON_WEIGHT_PASSES_H
#include <node_api.h>

// Adds pspBStep, pspResidual, rowSquaredDistance, binaryLowRankWeight, subtractF32, transposeF32, blockErrors,
// actQuantForward, actQuantBackward.
void register_weight_passes(napi_env env, napi_value exports);
#endif
