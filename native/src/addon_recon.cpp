// N-API binding of the block-wise reconstruction's device trainer (native/runtime/recon_trainer.h; the TypeScript
// side is src/runtime/device-recon.ts): rtReconCreate, rtReconStep, rtReconLoss, rtReconRead; rtFree frees a trainer.
#include "addon_recon.h"

#include <string>
#include <vector>

#include "addon_common.h"
#include "napi_values.h"

using namespace bwq::rt;
using namespace bwq_addon;
using bwq_napi::make_double;

namespace {

const napi_type_tag kTrainerTag = {0x6277712d747261ULL, 0x696e65722d727401ULL};
struct TrainerRef {
  ReconTrainer *trainer = nullptr;
  napi_ref model_ref = nullptr;  // keeps the model (and its backend) alive while the trainer is
  size_t window_floats = 0;      // seq * hidden: one window of a step's inputs
  void release() {
    BackendLock lk(g_backend_mu);
    delete trainer;
    trainer = nullptr;
  }
};

// A Float32Array of at least `want` values, or null/undefined (nullptr) when `optional`.
bool f32_arg(napi_env env, napi_value v, size_t want, bool optional, const float **out, const char *what) {
  napi_valuetype t;
  napi_typeof(env, v, &t);
  if (optional && (t == napi_null || t == napi_undefined)) return *out = nullptr, true;
  float *d;
  size_t n;
  if (!typed(env, v, napi_float32_array, (void **)&d, &n, what)) return false;
  if (n < want) {
    throw_error(env, std::string("bwq runtime: ") + what + " has " + std::to_string(n) + " values, " + std::to_string(want) + " needed");
    return false;
  }
  *out = d;
  return true;
}
napi_value element(napi_env env, napi_value arr, uint32_t i) {
  napi_value v;
  napi_get_element(env, arr, i, &v);
  return v;
}

// rtReconCreate(model, dims Float64Array [hidden, intermediate, heads, kvHeads, headDim, eps, slidingWindow, ropeHalf,
//   probsUnmasked, maxBatch, seq], fixed [inputNorm, postNorm, qNorm|null, kNorm|null, ropeCos|null, ropeSin|null],
//   linears (7 x [latent, alpha, lrA, lrB, bias|null]), linearDims Int32Array (7 x [rows, cols, rank]), rates
//   Float64Array (7 x [latent, alpha, a, b]), rotations (4 x null | [r1, r2, r3|null]), rotationDims Int32Array
//   (4 x [a, b, rem])) -> trainer: the block's student on the model's backend (a one-line error when the backend has
//   none or not the memory).
napi_value ReconCreate(napi_env env, napi_callback_info info) {
  napi_value argv[8];
  ModelRef *m = model_args(env, info, 8, argv);
  if (!m) return nullptr;
  double *dims, *rates;
  int32_t *ldims, *rdims;
  size_t n_dims, n_rates, n_ldims, n_rdims;
  if (!typed(env, argv[1], napi_float64_array, (void **)&dims, &n_dims, "reconstruction dims") ||
      !typed(env, argv[4], napi_int32_array, (void **)&ldims, &n_ldims, "linear dims") ||
      !typed(env, argv[5], napi_float64_array, (void **)&rates, &n_rates, "learning rates") ||
      !typed(env, argv[7], napi_int32_array, (void **)&rdims, &n_rdims, "rotation dims"))
    return nullptr;
  if (n_dims < 11 || n_ldims < 3 * RECON_LINEARS || n_rates < 4 * RECON_LINEARS || n_rdims < 12) {
    throw_error(env, "bwq runtime: reconstruction arguments are too short");
    return nullptr;
  }
  ReconSpec s;
  s.hidden = (int)dims[0], s.intermediate = (int)dims[1], s.heads = (int)dims[2], s.kv_heads = (int)dims[3];
  s.head_dim = (int)dims[4], s.eps = dims[5], s.sliding_window = (int)dims[6], s.rope_half = (int)dims[7];
  s.probs_unmasked = dims[8] != 0, s.max_batch = (int)dims[9], s.seq = (int)dims[10];
  if (s.hidden <= 0 || s.intermediate <= 0 || s.heads <= 0 || s.kv_heads <= 0 || s.head_dim <= 0 || s.seq <= 0 ||
      s.max_batch <= 0 || s.rope_half < 0 || 2 * s.rope_half > s.head_dim) {
    throw_error(env, "bwq runtime: reconstruction dims out of range");
    return nullptr;
  }
  const size_t rope = (size_t)s.seq * s.rope_half;
  if (!f32_arg(env, element(env, argv[2], 0), s.hidden, false, &s.input_norm, "input norm") ||
      !f32_arg(env, element(env, argv[2], 1), s.hidden, false, &s.post_norm, "post-attention norm") ||
      !f32_arg(env, element(env, argv[2], 2), s.head_dim, true, &s.q_norm, "q norm") ||
      !f32_arg(env, element(env, argv[2], 3), s.head_dim, true, &s.k_norm, "k norm") ||
      !f32_arg(env, element(env, argv[2], 4), rope, s.rope_half == 0, &s.rope_cos, "rope cos") ||
      !f32_arg(env, element(env, argv[2], 5), rope, s.rope_half == 0, &s.rope_sin, "rope sin"))
    return nullptr;
  if ((s.q_norm == nullptr) != (s.k_norm == nullptr)) {
    throw_error(env, "bwq runtime: q and k norms come together");
    return nullptr;
  }
  for (int i = 0; i < RECON_LINEARS; ++i) {
    ReconLinearSpec &l = s.linears[i];
    l.rows = ldims[3 * i], l.cols = ldims[3 * i + 1], l.rank = ldims[3 * i + 2];
    if (l.rows <= 0 || l.cols <= 0 || l.rank < 0) {
      throw_error(env, "bwq runtime: linear " + std::to_string(i) + " has bad dimensions");
      return nullptr;
    }
    const napi_value arr = element(env, argv[3], (uint32_t)i);
    const size_t nk = (size_t)l.rows * l.cols;
    if (!f32_arg(env, element(env, arr, 0), nk, false, &l.latent, "latent weights") ||
        !f32_arg(env, element(env, arr, 1), l.rows, false, &l.alpha, "weight scales") ||
        !f32_arg(env, element(env, arr, 2), (size_t)l.rows * l.rank, l.rank == 0, &l.lr_a, "low-rank A") ||
        !f32_arg(env, element(env, arr, 3), (size_t)l.rank * l.cols, l.rank == 0, &l.lr_b, "low-rank B") ||
        !f32_arg(env, element(env, arr, 4), l.rows, true, &l.bias, "bias"))
      return nullptr;
    l.lr_latent = rates[4 * i], l.lr_alpha = rates[4 * i + 1], l.lr_lowrank_a = rates[4 * i + 2], l.lr_lowrank_b = rates[4 * i + 3];
  }
  for (int i = 0; i < 4; ++i) {
    ReconRotationSpec &r = s.rotations[i];
    r.a = rdims[3 * i], r.b = rdims[3 * i + 1], r.rem = rdims[3 * i + 2];
    if (r.a <= 0) continue;
    const napi_value arr = element(env, argv[6], (uint32_t)i);
    if (r.b <= 0 || r.rem < 0 || !f32_arg(env, element(env, arr, 0), (size_t)r.a * r.a, false, &r.r1, "rotation R1") ||
        !f32_arg(env, element(env, arr, 1), (size_t)r.b * r.b, false, &r.r2, "rotation R2") ||
        !f32_arg(env, element(env, arr, 2), (size_t)r.rem * r.rem, r.rem == 0, &r.r3, "rotation R3")) {
      if (r.b <= 0 || r.rem < 0) throw_error(env, "bwq runtime: rotation dims out of range");
      return nullptr;
    }
  }
  std::string err;
  ReconTrainer *t = locked([&] { return m->model->be->recon_trainer(s, err); });
  if (!t) {
    throw_error(env, "bwq runtime: " + err);
    return nullptr;
  }
  TrainerRef *ref = new TrainerRef{t, nullptr, (size_t)s.seq * s.hidden};
  napi_create_reference(env, argv[0], 1, &ref->model_ref);
  return wrap(env, ref, kTrainerTag, [](napi_env e, void *p, void *) {
    TrainerRef *r = static_cast<TrainerRef *>(p);
    r->release();
    if (r->model_ref) napi_delete_reference(e, r->model_ref);
    delete r;
  });
}

// 13 values per site (recon_trainer.h ReconSitePoint): present, curKind, curArg, blend, prevKind, prevArg, lambda,
// param, align, lastKind, lastArg, pCur (NaN: computed), pPrev; kinds as TrainQKind.
constexpr int kSiteValues = 13;
bool site_points(napi_env env, napi_value v, ReconSitePoint *pts) {
  double *d;
  size_t n;
  if (!typed(env, v, napi_float64_array, (void **)&d, &n, "site points")) return false;
  if (n < (size_t)kSiteValues * RECON_SITES) {
    throw_error(env, "bwq runtime: site points need 13 values per site");
    return false;
  }
  for (int s = 0; s < RECON_SITES; ++s, d += kSiteValues) {
    ReconSitePoint &p = pts[s];
    p.present = d[0] != 0;
    p.cur = TrainQ{(TrainQKind)(int)d[1], (int32_t)d[2]};
    p.blend = d[3] != 0;
    p.prev = TrainQ{(TrainQKind)(int)d[4], (int32_t)d[5]};
    p.lambda = d[6], p.param = d[7], p.align = d[8] != 0;
    p.last = TrainQ{(TrainQKind)(int)d[9], (int32_t)d[10]};
    p.cur_is_last = p.cur.kind == p.last.kind && p.cur.arg == p.last.arg;
    p.p_cur = d[11], p.p_prev = d[12];
    for (const TrainQ &q : {p.cur, p.prev, p.last}) {
      const int k = (int)q.kind;
      if (k < 0 || k > 3 || (q.kind == TrainQKind::INT && (q.arg < 2 || q.arg > 16)) ||
          (q.kind == TrainQKind::LEVELS && (q.arg < 3 || q.arg % 2 == 0))) {
        throw_error(env, "bwq runtime: site " + std::to_string(s) + " has a bad quantizer");
        return false;
      }
    }
  }
  return true;
}

TrainerRef *trainer_args(napi_env env, napi_callback_info info, size_t n, napi_value *argv) {
  if (!args(env, info, n, argv)) return nullptr;
  TrainerRef *t = unwrap<TrainerRef>(env, argv[0], kTrainerTag, "reconstruction trainer");
  if (t && !t->trainer) {
    throw_error(env, "bwq runtime: the reconstruction trainer was freed");
    return nullptr;
  }
  return t;
}

// The arguments a step and a loss call share: (trainer, x, y, batch, sites, ...) with x / y Float32Arrays of
// batch * seq * hidden values and 13 values per site. False (and a JS error) when they are not that.
struct WindowCall {
  TrainerRef *t = nullptr;
  const float *x = nullptr, *y = nullptr;
  int batch = 0;
  ReconSitePoint pts[RECON_SITES];
};
bool window_call(napi_env env, napi_callback_info info, size_t n, napi_value *argv, WindowCall &c) {
  c.t = trainer_args(env, info, n, argv);
  if (!c.t) return false;
  c.batch = int_of(env, argv[3]);
  if (c.batch < 1) {
    throw_error(env, "bwq runtime: batch must be positive");
    return false;
  }
  const size_t floats = (size_t)c.batch * c.t->window_floats;
  return f32_arg(env, argv[1], floats, false, &c.x, "inputs") && f32_arg(env, argv[2], floats, false, &c.y, "targets") &&
         site_points(env, argv[4], c.pts);
}

// rtReconStep(trainer, x, y, batch, sites Float64Array, lrScale) -> Float64Array [loss, grads[8], pCur[8], pPrev[8]]
napi_value ReconStep(napi_env env, napi_callback_info info) {
  napi_value argv[6];
  WindowCall c;
  if (!window_call(env, info, 6, argv, c)) return nullptr;
  double lr_scale = 1;
  napi_get_value_double(env, argv[5], &lr_scale);
  double *out;
  napi_value result = new_f64(env, RECON_STEP_OUT, &out);
  return done(env, locked([&] { return c.t->trainer->step(c.x, c.y, c.batch, c.pts, lr_scale, out); }), result);
}

// rtReconLoss(trainer, x, y, batch, sites Float64Array) -> sum of squared output errors
napi_value ReconLoss(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  WindowCall c;
  if (!window_call(env, info, 5, argv, c)) return nullptr;
  double sum = 0;
  const std::string err = locked([&] { return c.t->trainer->loss(c.x, c.y, c.batch, c.pts, &sum); });
  return done(env, err, make_double(env, sum));
}

// rtReconRead(trainer, linear, what (0 parameters, 1 gradients), latent, alpha, a|null, b|null)
napi_value ReconRead(napi_env env, napi_callback_info info) {
  napi_value argv[7];
  TrainerRef *t = trainer_args(env, info, 7, argv);
  if (!t) return nullptr;
  const int linear = int_of(env, argv[1]), what = int_of(env, argv[2]);
  const float *p[4];
  const char *names[4] = {"latent weights", "weight scales", "low-rank A", "low-rank B"};
  for (int i = 0; i < 4; ++i)
    if (!f32_arg(env, argv[3 + i], 0, i >= 2, &p[i], names[i])) return nullptr;
  return done(env, locked([&] {
    return t->trainer->read(linear, what, (float *)p[0], (float *)p[1], (float *)p[2], (float *)p[3]);
  }));
}

}  // namespace

bool free_if_trainer(napi_env env, napi_value v) {
  bool is_trainer = false;
  napi_check_object_type_tag(env, v, &kTrainerTag, &is_trainer);
  if (!is_trainer) return false;
  TrainerRef *t = unwrap<TrainerRef>(env, v, kTrainerTag, "reconstruction trainer");
  if (t) t->release();
  return true;
}

void register_recon(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {
      bwq_napi::method("rtReconCreate", ReconCreate),
      bwq_napi::method("rtReconStep", ReconStep),
      bwq_napi::method("rtReconLoss", ReconLoss),
      bwq_napi::method("rtReconRead", ReconRead),
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
