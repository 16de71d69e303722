// N-API binding of the reconstruction's device trainer (addon_recon.cpp).
#ifndef BWQ_ADDON_RECON_H
#define BWQ_ADDON_RECON_H
#include <node_api.h>

// Adds rtReconCreate, rtReconStep, rtReconLoss, rtReconRead.
void register_recon(napi_env env, napi_value exports);
// Frees the trainer `v` refers to and returns true, or returns false when v is no trainer (rtFree's other kinds).
bool free_if_trainer(napi_env env, napi_value v);
#endif
