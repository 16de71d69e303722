// N-API binding of the runtime. A model is described by one Float64Array (layout in src/runtime/descriptor.ts):
//   [0..12]  hidden, intermediate, layers, heads, kv_heads, head_dim, vocab, max_positions, sliding_window,
//            rope_half, eps, act, qk_norm
//   then     n_inputs, per input (rotation, kind, bits, param); n_rotations, per rotation (a, b, r);
//            per layer: per role (packed, input, rank, has_bias) x 7, then (kind, bits, param) for the
//            attention's query, key, probs, value, and the probs row (1 unmasked keys, 0 whole window).
#include "addon_runtime.h"
#include "addon_common.h"
#include "addon_recon.h"

#ifdef __linux__
#include <sys/mman.h>
#endif

#include <string.h>

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "../include/bwq.h"
#include "../runtime/model.h"
#include "napi_values.h"

using namespace bwq::rt;
using namespace bwq_addon;
using bwq_napi::make_bool;
using bwq_napi::make_double;
using bwq_napi::make_int;
using bwq_napi::make_string;
using bwq_napi::set;

namespace {


struct SessionRef {
  std::unique_ptr<Session> session;
  napi_ref model_ref = nullptr;  // keeps the model alive while the session is
};
// Float32 values in a model's backend memory (rtStateAlloc): the quantize pipeline's calibration hidden states kept
// on the GPU between blocks, and matrices its numerics multiply by many times (rtMatmulT operands).
struct StateRef {
  Backend *be = nullptr;
  float *data = nullptr;
  size_t floats = 0;
  napi_ref model_ref = nullptr;  // keeps the model (and its backend) alive while the state is
  void release() {
    BackendLock lk(g_backend_mu);
    if (data) be->free(data);
    data = nullptr;
  }
};

const napi_type_tag kSessionTag = {0x6277712d736573ULL, 0x73696f6e2d727401ULL};
const napi_type_tag kStateTag = {0x6277712d737461ULL, 0x74652d7275677401ULL};


// A large output array that is about to be written for the first time: its fresh pages fault in 2 MiB at a time
// instead of 4 KiB (Linux transparent huge pages where the system leaves them to madvise). A fresh Float32Array's
// first write ran at 1.8 GB/s against 16.5 GB/s into a reused one on the H100 machine (docs/PERFORMANCE.md).
void huge_pages_for_output(void *p, size_t bytes) {
#ifdef __linux__
  constexpr uintptr_t kHuge = (uintptr_t)2 << 20;
  if (bytes < 4 * kHuge) return;
  const uintptr_t begin = ((uintptr_t)p + kHuge - 1) & ~(kHuge - 1), end = ((uintptr_t)p + bytes) & ~(kHuge - 1);
  if (end > begin) madvise((void *)begin, end - begin, MADV_HUGEPAGE);
#else
  (void)p;
  (void)bytes;
#endif
}


// An asynchronous backend call: run() on the backend thread under the backend lock; the promise resolves with
// finish(env, held) (undefined without finish) or rejects with run()'s error. `holds` keeps the JS objects whose
// memory run() reads or writes (arrays, the model, states) alive until then; finish gets them back, in order.
// The JS side of one environment (the main thread, or a worker thread that loaded the addon): the thread-safe
// function its calls settle through, referenced while any of its calls are pending (so its event loop waits for
// them) and unreferenced otherwise (so it does not keep the thread alive). Its instance data; JS thread only.
struct EnvCalls {
  napi_threadsafe_function settle = nullptr;
  int pending = 0;
};

struct AsyncCall {
  EnvCalls *owner = nullptr;
  napi_deferred deferred = nullptr;
  std::vector<napi_ref> holds;
  std::function<std::string()> run;
  std::function<napi_value(napi_env, const std::vector<napi_value> &)> finish;
  std::string err;
};

// One thread runs every environment's asynchronous backend calls in the order they were made (they take the backend
// lock one at a time anyway; on libuv's pool, calls waiting for the lock would hold the threads onnxruntime's runs
// and file I/O need) and hands each back to its environment's thread-safe function.
struct BackendThread {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<AsyncCall *> queue;
  bool started = false;
};
// never destroyed: the thread waits on its condition variable until the process ends, and destroying a condition
// variable with a waiter blocks (glibc) the static destructors at exit
BackendThread &g_thread = *new BackendThread;

void settle_call(napi_env env, napi_value, void *, void *data) {
  AsyncCall *c = static_cast<AsyncCall *>(data);
  if (env) {
    std::vector<napi_value> held(c->holds.size());
    for (size_t i = 0; i < held.size(); ++i) {
      if (!c->holds[i] || napi_get_reference_value(env, c->holds[i], &held[i]) != napi_ok) napi_get_undefined(env, &held[i]);
      if (c->holds[i]) napi_delete_reference(env, c->holds[i]);
    }
    napi_value v = c->finish && c->err.empty() ? c->finish(env, held) : nullptr;
    if (c->err.empty()) {
      if (!v) napi_get_undefined(env, &v);
      napi_resolve_deferred(env, c->deferred, v);
    } else {
      napi_value code, msg, error;
      napi_create_string_utf8(env, "BWQ_RUNTIME", NAPI_AUTO_LENGTH, &code);
      napi_create_string_utf8(env, c->err.c_str(), NAPI_AUTO_LENGTH, &msg);
      napi_create_error(env, code, msg, &error);
      napi_reject_deferred(env, c->deferred, error);
    }
    if (--c->owner->pending == 0) napi_unref_threadsafe_function(env, c->owner->settle);
  }
  delete c;
}

void backend_loop() {
  for (;;) {
    AsyncCall *c;
    {
      std::unique_lock<std::mutex> lk(g_thread.mu);
      g_thread.cv.wait(lk, [] { return !g_thread.queue.empty(); });
      c = g_thread.queue.front();
      g_thread.queue.pop_front();
    }
    {
      BackendLock lk(g_backend_mu);
      c->err = c->run();
    }
    // an environment that is shutting down refuses the call (its promises go with it)
    if (napi_call_threadsafe_function(c->owner->settle, c, napi_tsfn_blocking) != napi_ok) delete c;
  }
}

// This environment's EnvCalls, made on its first asynchronous call (nullptr and a JS error on failure).
EnvCalls *env_calls(napi_env env) {
  void *data = nullptr;
  if (napi_get_instance_data(env, &data) == napi_ok && data) return static_cast<EnvCalls *>(data);
  EnvCalls *e = new EnvCalls;
  napi_value resource;
  napi_create_string_utf8(env, "bwq.backend", NAPI_AUTO_LENGTH, &resource);
  if (napi_create_threadsafe_function(env, nullptr, nullptr, resource, 0, 1, nullptr, nullptr, nullptr, settle_call,
                                      &e->settle) != napi_ok) {
    delete e;
    throw_error(env, "bwq runtime: napi_create_threadsafe_function failed");
    return nullptr;
  }
  napi_unref_threadsafe_function(env, e->settle);
  // never freed (a few bytes per environment): the backend thread may still hand a call to it while its environment
  // shuts down (the thread-safe function then refuses it)
  napi_set_instance_data(env, e, nullptr, nullptr);
  {
    std::lock_guard<std::mutex> lk(g_thread.mu);
    if (!g_thread.started) {
      g_thread.started = true;
      std::thread(backend_loop).detach();
    }
  }
  return e;
}

napi_value queue_call(napi_env env, const std::vector<napi_value> &holds,
                      std::function<std::string()> run,
                      std::function<napi_value(napi_env, const std::vector<napi_value> &)> finish = nullptr) {
  EnvCalls *owner = env_calls(env);
  if (!owner) return nullptr;
  AsyncCall *c = new AsyncCall;
  c->owner = owner;
  c->run = std::move(run);
  c->finish = std::move(finish);
  napi_value promise;
  if (napi_create_promise(env, &c->deferred, &promise) != napi_ok) {
    delete c;
    throw_error(env, "bwq runtime: napi_create_promise failed");
    return nullptr;
  }
  for (napi_value v : holds) {
    napi_ref r = nullptr;
    napi_create_reference(env, v, 1, &r);
    c->holds.push_back(r);  // finish finds the held values at their indices
  }
  if (owner->pending++ == 0) napi_ref_threadsafe_function(env, owner->settle);
  {
    std::lock_guard<std::mutex> lk(g_thread.mu);
    g_thread.queue.push_back(c);
  }
  g_thread.cv.notify_one();
  return promise;
}


Quantizer quantizer_at(const double *d) {
  Quantizer q;
  q.kind = (QKind)(int)d[0];
  q.bits = (int)d[1];
  q.param = (float)d[2];
  return q;
}

// rtOpen(device 'cpu' | 'cuda', descriptor Float64Array) -> model
napi_value Open(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!args(env, info, 2, argv)) return nullptr;
  const std::string device = string_of(env, argv[0]);
  double *d;
  size_t n;
  if (!typed(env, argv[1], napi_float64_array, (void **)&d, &n, "descriptor")) return nullptr;
  Backend *be = nullptr;
  if (device == "cpu") {
    be = cpu_backend();
  } else if (device == "cuda") {
    std::string why;
    be = cuda_runtime_backend(&why);
    if (!be) {
      throw_error(env, "CUDA unavailable: " + why);
      return nullptr;
    }
  } else {
    throw_error(env, "bwq runtime: device must be cpu or cuda");
    return nullptr;
  }
  auto m = std::make_unique<Model>();
  m->be = be;
  size_t i = 0;
  auto next = [&]() { return i < n ? d[i++] : 0.0; };
  ModelConfig &c = m->cfg;
  c.hidden = (int)next();
  c.intermediate = (int)next();
  c.n_layers = (int)next();
  c.n_heads = (int)next();
  c.n_kv_heads = (int)next();
  c.head_dim = (int)next();
  c.vocab = (int)next();
  c.max_positions = (int)next();
  c.sliding_window = (int)next();
  c.rope_half = (int)next();
  c.eps = (float)next();
  c.act = (Act)(int)next();
  c.qk_norm = next() != 0;
  const int n_inputs = (int)next();
  for (int j = 0; j < n_inputs; ++j) {
    InputPrep p;
    p.rotation = (int)next();
    double q[3] = {next(), next(), next()};
    p.quantizer = quantizer_at(q);
    m->inputs.push_back(p);
  }
  const int n_rot = (int)next();
  for (int j = 0; j < n_rot; ++j) {
    Rotation r;
    r.a = (int)next();
    r.b = (int)next();
    r.r = (int)next();
    m->rotations.push_back(r);
  }
  const int qw = c.n_heads * c.head_dim, kvw = c.n_kv_heads * c.head_dim;
  const int shapes[ROLE_COUNT][2] = {{qw, c.hidden},           {kvw, c.hidden},          {kvw, c.hidden},
                                     {c.hidden, qw},           {c.intermediate, c.hidden}, {c.intermediate, c.hidden},
                                     {c.hidden, c.intermediate}};
  m->layers.resize(c.n_layers);
  for (Layer &l : m->layers) {
    for (int r = 0; r < ROLE_COUNT; ++r) {
      Linear &lin = l.linears[r];
      lin.n = shapes[r][0];
      lin.k = shapes[r][1];
      lin.packed = next() != 0;
      lin.input = (int)next();
      lin.rank = (int)next();
      next();  // has_bias (the bias slot is optional)
      if (lin.input < 0 || lin.input >= n_inputs) {
        throw_error(env, "bwq runtime: descriptor names input " + std::to_string(lin.input));
        return nullptr;
      }
    }
    double q[13];
    for (double &x : q) x = next();
    l.attention.query = quantizer_at(q);
    l.attention.key = quantizer_at(q + 3);
    l.attention.probs = quantizer_at(q + 6);
    l.attention.value = quantizer_at(q + 9);
    l.attention.probs_unmasked = q[12] != 0;
  }
  if (i > n) {
    throw_error(env, "bwq runtime: descriptor too short");
    return nullptr;
  }
  return wrap(env, new ModelRef{std::move(m)}, kModelTag,
              [](napi_env, void *p, void *) { locked([&] { delete static_cast<ModelRef *>(p); }); });
}

// rtSetTensor(model, slot, dtype 0 f32 | 1 bf16 | 2 f16 | 3 u32, shape number[], data TypedArray)
napi_value SetTensor(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  if (!args(env, info, 5, argv)) return nullptr;
  ModelRef *ref = unwrap<ModelRef>(env, argv[0], kModelTag, "runtime model");
  if (!ref) return nullptr;
  if (!ref->model) {
    throw_error(env, "bwq runtime: model was freed");
    return nullptr;
  }
  const std::string slot = string_of(env, argv[1]);
  const int dt = int_of(env, argv[2]);
  uint32_t rank = 0;
  napi_get_array_length(env, argv[3], &rank);
  std::vector<int64_t> shape(rank);
  for (uint32_t j = 0; j < rank; ++j) {
    napi_value e;
    napi_get_element(env, argv[3], j, &e);
    double x = 0;
    napi_get_value_double(env, e, &x);
    shape[j] = (int64_t)x;
  }
  bool is = false;
  napi_typedarray_type type;
  size_t length;
  void *data;
  napi_value ab;
  size_t off;
  if (napi_is_typedarray(env, argv[4], &is) != napi_ok || !is ||
      napi_get_typedarray_info(env, argv[4], &type, &length, &data, &ab, &off) != napi_ok) {
    napi_throw_type_error(env, "BWQ_ARGS", "bwq runtime: tensor data must be a typed array");
    return nullptr;
  }
  size_t elem = type == napi_uint8_array || type == napi_int8_array ? 1
                : type == napi_uint16_array || type == napi_int16_array ? 2
                : type == napi_float64_array ? 8 : 4;
  const DType dtype = dt == 1 ? DType::BF16 : dt == 2 ? DType::F16 : DType::F32;
  return done(env, locked([&] { return set_tensor(*ref->model, slot, dtype, shape, data, length * elem); }));
}

// rtMissing(model) -> '' or the first slot never set
napi_value Missing(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  ModelRef *ref = model_args(env, info, 1, argv);
  if (!ref) return nullptr;
  return make_string(env, ref->model->missing().c_str());
}

// rtSession(model, batch, maxT, maxChunk) -> session; throws a one-line error when memory is short.
napi_value NewSession(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  ModelRef *ref = model_args(env, info, 4, argv);
  if (!ref) return nullptr;
  Model &m = *ref->model;
  const int batch = int_of(env, argv[1]), max_t = int_of(env, argv[2]), chunk = int_of(env, argv[3]);
  if (batch < 1 || max_t < 1 || chunk < 1) {
    throw_error(env, "bwq runtime: batch, maxT and maxChunk must be >= 1");
    return nullptr;
  }
  std::unique_lock<std::mutex> lk(g_backend_mu);
  const size_t need = Session::estimate_bytes(m, batch, max_t, chunk), have = m.be->free_memory();
  if (need > have) {
    lk.unlock();
    throw_error(env, "not enough memory on " + std::string(m.be->name()) + ": the KV cache and scratch need " +
                         std::to_string(need >> 20) + " MiB beyond the model's " + std::to_string(m.bytes >> 20) +
                         " MiB, " + std::to_string(have >> 20) + " MiB free");
    return nullptr;
  }
  auto s = std::make_unique<Session>(m, batch, max_t, chunk);
  const std::string err = s->init();
  if (!err.empty()) {
    s.reset();  // frees what it allocated
    m.be->clear_error();
    lk.unlock();
    throw_error(env, err);
    return nullptr;
  }
  lk.unlock();
  SessionRef *sr = new SessionRef{std::move(s), nullptr};
  napi_create_reference(env, argv[0], 1, &sr->model_ref);
  return wrap(env, sr, kSessionTag, [](napi_env e, void *p, void *) {
    SessionRef *r = static_cast<SessionRef *>(p);
    locked([&] { r->session.reset(); });
    if (r->model_ref) napi_delete_reference(e, r->model_ref);
    delete r;
  });
}

// A live calibration state (nullptr and a JS error otherwise).
StateRef *state_of(napi_env env, napi_value v) {
  StateRef *st = unwrap<StateRef>(env, v, kStateTag, "calibration state");
  if (st && !st->data) {
    throw_error(env, "bwq runtime: calibration state was freed");
    return nullptr;
  }
  return st;
}

SessionRef *session_of(napi_env env, napi_value v) {
  SessionRef *s = unwrap<SessionRef>(env, v, kSessionTag, "runtime session");
  if (s && !s->session) {
    throw_error(env, "bwq runtime: session was closed");
    return nullptr;
  }
  return s;
}

// The call's n arguments, the first a live session (nullptr and a JS error otherwise).
SessionRef *session_args(napi_env env, napi_callback_info info, size_t n, napi_value *argv) {
  return args(env, info, n, argv) ? session_of(env, argv[0]) : nullptr;
}

// rtForward(session, ids Int32Array, t, mode 0 none | 1 last | 2 all, out Float32Array | null)
napi_value Forward(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  SessionRef *s = session_args(env, info, 5, argv);
  if (!s) return nullptr;
  int32_t *ids;
  size_t n;
  if (!typed(env, argv[1], napi_int32_array, (void **)&ids, &n, "ids")) return nullptr;
  const int t = int_of(env, argv[2]), mode = int_of(env, argv[3]);
  float *out = nullptr;
  size_t out_n = 0;
  if (mode != 0 && !typed(env, argv[4], napi_float32_array, (void **)&out, &out_n, "logits")) return nullptr;
  Session &ss = *s->session;
  (void)out_n;
  return done(env, locked([&] { return ss.forward(ids, t, mode, out, nullptr); }));
}

// rtNll(session, ids Int32Array, t) -> sum of the next-token NLL over positions 0..t-2 of every sequence
napi_value Nll(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  SessionRef *s = session_args(env, info, 3, argv);
  if (!s) return nullptr;
  int32_t *ids;
  size_t n;
  if (!typed(env, argv[1], napi_int32_array, (void **)&ids, &n, "ids")) return nullptr;
  double sum = 0;
  const int t = int_of(env, argv[2]);
  const std::string err = locked([&] { return s->session->forward(ids, t, 0, nullptr, &sum); });
  if (!err.empty()) {
    throw_error(env, err);
    return nullptr;
  }
  return make_double(env, sum);
}

napi_value Reset(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (SessionRef *s = session_args(env, info, 1, argv)) locked([&] { s->session->reset(); });
  return nullptr;
}

// rtInfo(session) -> { position, device, sessionBytes, modelBytes, replaying }
napi_value Info(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  SessionRef *s = session_args(env, info, 1, argv);
  if (!s) return nullptr;
  napi_value model_v;
  napi_get_reference_value(env, s->model_ref, &model_v);
  ModelRef *m = unwrap<ModelRef>(env, model_v, kModelTag, "runtime model");
  if (!m) return nullptr;
  napi_value o;
  napi_create_object(env, &o);
  set(env, o, "position", make_int(env, s->session->position()));
  set(env, o, "device", make_string(env, m->model->be->name()));
  set(env, o, "sessionBytes", make_double(env, (double)s->session->bytes()));
  set(env, o, "modelBytes", make_double(env, (double)m->model->bytes));
  set(env, o, "replaying", make_bool(env, s->session->replaying()));
  return o;
}

// rtModelBytes(model) -> bytes of the weights on the device
napi_value ModelBytes(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  ModelRef *m = model_args(env, info, 1, argv);
  if (!m) return nullptr;
  return make_double(env, (double)m->model->bytes);
}

// rtDevice(model) -> { device, freeBytes }: the backend the model lives on and the memory it can still allocate
napi_value Device(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  ModelRef *m = model_args(env, info, 1, argv);
  if (!m) return nullptr;
  napi_value o;
  napi_create_object(env, &o);
  set(env, o, "device", make_string(env, m->model->be->name()));
  const size_t f = locked([&] { return m->model->be->free_memory(); });
  set(env, o, "freeBytes", make_double(env, f == (size_t)-1 ? 1e300 : (double)f));
  return o;
}

// rtSetLayerRecipe(model, layer, Float64Array) -> Int32Array(7): the rotation index each role's factors go to
// (slots "rotations.J.r1|r2|r3"), -1 without one (native/runtime/model.h set_layer_recipe)
napi_value SetLayerRecipe(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  ModelRef *m = model_args(env, info, 3, argv);
  if (!m) return nullptr;
  double *d;
  size_t n;
  if (!typed(env, argv[2], napi_float64_array, (void **)&d, &n, "layer recipe")) return nullptr;
  std::vector<int> rot;
  const int layer = int_of(env, argv[1]);
  const std::string err = locked([&] { return set_layer_recipe(*m->model, layer, d, n, &rot); });
  if (!err.empty()) {
    throw_error(env, err);
    return nullptr;
  }
  napi_value ab, arr;
  void *data;
  napi_create_arraybuffer(env, 4 * rot.size(), &data, &ab);
  memcpy(data, rot.data(), 4 * rot.size());
  napi_create_typedarray(env, napi_int32_array, rot.size(), ab, 0, &arr);
  return arr;
}

// An optional Int32Array property of an options object: true with data/length set (null when absent), false after
// throwing for a wrong type.
bool optional_int32(napi_env env, napi_value obj, const char *name, int32_t **data, size_t *length) {
  *data = nullptr;
  *length = 0;
  napi_valuetype ot;
  if (napi_typeof(env, obj, &ot) != napi_ok || ot != napi_object) return true;
  bool has = false;
  napi_has_named_property(env, obj, name, &has);
  if (!has) return true;
  napi_value v;
  napi_get_named_property(env, obj, name, &v);
  napi_valuetype vt;
  napi_typeof(env, v, &vt);
  if (vt == napi_undefined) return true;
  if (!typed(env, v, napi_int32_array, (void **)data, length, name)) return false;
  // a given but empty array is not an absent one (an empty typed array may have no data pointer): e.g. no row of
  // a batch among the sampled rows
  static int32_t empty = 0;
  if (*length == 0) *data = &empty;
  return true;
}

// rtRunBlock(session, layer, hidden Float32Array [batch, t, H], t, out Float32Array, taps { attnInput?, attnContext?,
//   mlpInput?, mlpHidden?, query?, key?, value? } of Float32Arrays [batch, t, width], probs? [batch, heads, t, t]
//   [, options { gram?: Int32Array of GramTap codes (0 attn_input, 1 attn_context, 2 mlp_input, 3 mlp_hidden) whose
//   Gram matrices accumulate on the backend (rtReadGram), rows?: Int32Array of ascending rows b*t + i: the four
//   linear-input taps then hold only these rows, [rows.length, width] }])
napi_value RunBlock(napi_env env, napi_callback_info info) {
  napi_value argv[6];
  SessionRef *s = session_args(env, info, 6, argv);
  if (!s) return nullptr;
  napi_value all[7];
  size_t argc = 7;
  napi_get_cb_info(env, info, &argc, all, nullptr, nullptr);
  int32_t *gram_codes = nullptr, *sel = nullptr;
  size_t n_gram = 0, n_sel = 0;
  if (argc >= 7 && (!optional_int32(env, all[6], "gram", &gram_codes, &n_gram) ||
                    !optional_int32(env, all[6], "rows", &sel, &n_sel)))
    return nullptr;
  const int t = int_of(env, argv[3]);
  const ModelConfig &c = s->session->config();
  const size_t rows = (size_t)s->session->batch() * (t > 0 ? t : 0);
  // options.state (rtStateAlloc) with stateOffset (floats): the input rows are read there; with inPlace the output
  // replaces them, with discard it is dropped (out is then not written either way), else it goes to out
  StateRef *state = nullptr;
  size_t state_offset = 0;
  bool in_place = false, discard = false;
  if (argc >= 7) {
    napi_valuetype ot;
    bool has = false;
    if (napi_typeof(env, all[6], &ot) == napi_ok && ot == napi_object && napi_has_named_property(env, all[6], "state", &has) == napi_ok && has) {
      napi_value v, off, ip, dc;
      napi_get_named_property(env, all[6], "state", &v);
      state = state_of(env, v);
      if (!state) return nullptr;
      double o = 0;
      napi_get_named_property(env, all[6], "stateOffset", &off);
      napi_get_value_double(env, off, &o);
      napi_get_named_property(env, all[6], "inPlace", &ip);
      napi_get_value_bool(env, ip, &in_place);
      napi_get_named_property(env, all[6], "discard", &dc);
      napi_get_value_bool(env, dc, &discard);
      if (!(o >= 0) || (size_t)o + rows * c.hidden > state->floats) {
        throw_error(env, "bwq runtime: the block's rows lie outside the calibration state");
        return nullptr;
      }
      state_offset = (size_t)o;
    }
  }
  float *hidden, *out;
  size_t nh, no;
  if ((!state && !typed(env, argv[2], napi_float32_array, (void **)&hidden, &nh, "hidden")) ||
      !typed(env, argv[4], napi_float32_array, (void **)&out, &no, "out"))
    return nullptr;
  if ((!state && nh < rows * c.hidden) || (!in_place && !discard && no < rows * c.hidden)) {
    throw_error(env, "bwq runtime: hidden and out need batch x t x hidden values");
    return nullptr;
  }
  BlockTaps taps;
  for (size_t i = 0; i < n_gram; ++i) {
    if (gram_codes[i] < 0 || gram_codes[i] >= GRAM_TAPS) {
      throw_error(env, "bwq runtime: unknown Gram tap " + std::to_string(gram_codes[i]));
      return nullptr;
    }
    taps.gram[gram_codes[i]] = true;
  }
  taps.rows = sel;
  taps.n_rows = (int)n_sel;
  const size_t tap_rows = sel ? n_sel : rows;
  const struct {
    const char *name;
    float **dst;
    int width;
  } fields[] = {{"attnInput", &taps.attn_input, c.hidden},
                {"attnContext", &taps.attn_context, c.n_heads * c.head_dim},
                {"mlpInput", &taps.mlp_input, c.hidden},
                {"mlpHidden", &taps.mlp_hidden, c.intermediate},
                {"query", &taps.query, c.n_heads * c.head_dim},
                {"key", &taps.key, c.n_kv_heads * c.head_dim},
                {"value", &taps.value, c.n_kv_heads * c.head_dim},
                {"probs", &taps.probs, c.n_heads * (t > 0 ? t : 0)}};
  for (const auto &f : fields) {
    bool has = false;
    napi_has_named_property(env, argv[5], f.name, &has);
    if (!has) continue;
    napi_value v;
    napi_get_named_property(env, argv[5], f.name, &v);
    napi_valuetype vt;
    napi_typeof(env, v, &vt);
    if (vt == napi_undefined) continue;
    size_t len;
    if (!typed(env, v, napi_float32_array, (void **)f.dst, &len, f.name)) return nullptr;
    const bool selected = sel && (f.dst == &taps.attn_input || f.dst == &taps.attn_context ||
                                  f.dst == &taps.mlp_input || f.dst == &taps.mlp_hidden);
    if (len < (selected ? tap_rows : rows) * f.width) {
      throw_error(env, std::string("bwq runtime: tap ") + f.name + " needs " + (selected ? "rows" : "batch x t") +
                           " x " + std::to_string(f.width) + " values");
      return nullptr;
    }
  }
  const int layer = int_of(env, argv[1]);
  return done(env, locked([&] {
    if (!state) return s->session->run_block(layer, hidden, t, out, taps);
    float *x = state->data + state_offset;  // the output in place, dropped, or to the host array
    return s->session->run_block(layer, x, t, in_place ? x : discard ? nullptr : out, taps, true, in_place);
  }));
}

// rtStateAlloc(model, floats) -> state: float32 calibration hidden states in the model's backend memory (zeroed);
// a one-line error when the backend has not that much free.
napi_value StateAlloc(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  ModelRef *m = model_args(env, info, 2, argv);
  if (!m) return nullptr;
  double floats = 0;
  napi_get_value_double(env, argv[1], &floats);
  if (!(floats >= 1) || floats > 1e15) {
    throw_error(env, "bwq runtime: a calibration state needs a positive size");
    return nullptr;
  }
  Backend *be = m->model->be;
  std::unique_lock<std::mutex> lk(g_backend_mu);
  const size_t bytes = 4 * (size_t)floats, have = be->free_memory();
  if (bytes > have) {
    lk.unlock();
    throw_error(env, "not enough memory on " + std::string(be->name()) + " for the calibration states: " +
                         std::to_string(bytes >> 20) + " MiB needed, " + std::to_string(have >> 20) + " MiB free");
    return nullptr;
  }
  float *data = (float *)be->alloc(bytes);
  if (!data) {
    const std::string msg = be->error() ? be->error() : "allocation failed";
    be->clear_error();
    lk.unlock();
    throw_error(env, "bwq runtime: calibration states: " + msg);
    return nullptr;
  }
  lk.unlock();
  StateRef *st = new StateRef{be, data, (size_t)floats, nullptr};
  napi_create_reference(env, argv[0], 1, &st->model_ref);
  return wrap(env, st, kStateTag, [](napi_env e, void *p, void *) {
    StateRef *r = static_cast<StateRef *>(p);
    r->release();
    if (r->model_ref) napi_delete_reference(e, r->model_ref);
    delete r;
  });
}

// rtStateWrite(state, offset, data Float32Array) / rtStateRead(state, offset, out Float32Array): floats
// [offset, offset + length) of the state from / to the host.
napi_value StateCopy(napi_env env, napi_callback_info info, bool write) {
  napi_value argv[3];
  if (!args(env, info, 3, argv)) return nullptr;
  StateRef *st = state_of(env, argv[0]);
  if (!st) return nullptr;
  double o = -1;
  napi_get_value_double(env, argv[1], &o);
  float *host;
  size_t n;
  if (!typed(env, argv[2], napi_float32_array, (void **)&host, &n, write ? "data" : "out")) return nullptr;
  if (!(o >= 0) || (size_t)o + n > st->floats) {
    throw_error(env, "bwq runtime: the rows lie outside the calibration state");
    return nullptr;
  }
  if (!write) huge_pages_for_output(host, 4 * n);
  return done(env, locked([&] {
    if (write) st->be->upload(st->data + (size_t)o, host, 4 * n);
    else st->be->download(host, st->data + (size_t)o, 4 * n);
    st->be->sync();
    const char *e = st->be->error();
    const std::string msg = e ? std::string("calibration state copy: ") + e : "";
    if (e) st->be->clear_error();
    return msg;
  }));
}
napi_value StateWrite(napi_env env, napi_callback_info info) { return StateCopy(env, info, true); }
napi_value StateRead(napi_env env, napi_callback_info info) { return StateCopy(env, info, false); }

// A product operand: a Float32Array on the host, or a state (rtStateAlloc) already in the model's backend memory.
struct Operand {
  const float *p = nullptr;
  size_t n = 0;
  bool resident = false;
  const Backend *be = nullptr;  // a state's backend
  StateRef *state = nullptr;
  // a state freed since the call was queued (an empty host array may have no data pointer: not freed)
  bool freed() const { return state && !state->data; }
};
bool operand_of(napi_env env, napi_value v, const char *what, Operand &out) {
  bool is_typed = false;
  napi_is_typedarray(env, v, &is_typed);
  if (is_typed) {
    float *p;
    if (!typed(env, v, napi_float32_array, (void **)&p, &out.n, what)) return false;
    out.p = p;
    return true;
  }
  StateRef *st = state_of(env, v);
  if (!st) return false;
  out = Operand{st->data, st->floats, true, st->be, st};
  return true;
}

// rtMatmulT(model, a, transA, b, transB, m, k, n, c Float32Array [m, n]) -> Promise: c = op(a) op(b) on the model's backend,
// op(a) [m, k] (transA: a is [k, m]), op(b) [k, n] (transB: b is [n, k]); a and b are Float32Arrays or states of the
// model (rtStateAlloc: operands kept in the backend's memory across products) (model.h matmul_t_on_device: cuBLAS
// takes the transpositions as flags)
napi_value MatmulT(napi_env env, napi_callback_info info) {
  napi_value argv[9];
  ModelRef *m = model_args(env, info, 9, argv);
  if (!m) return nullptr;
  Operand a, b;
  float *c;
  size_t nc;
  if (!operand_of(env, argv[1], "a", a) || !operand_of(env, argv[3], "b", b) ||
      !typed(env, argv[8], napi_float32_array, (void **)&c, &nc, "c"))
    return nullptr;
  bool ta = false, tb = false;
  if (napi_get_value_bool(env, argv[2], &ta) != napi_ok || napi_get_value_bool(env, argv[4], &tb) != napi_ok) {
    throw_error(env, "bwq runtime: matmul transA and transB must be booleans");
    return nullptr;
  }
  const int rows = int_of(env, argv[5]), k = int_of(env, argv[6]), n = int_of(env, argv[7]);
  if (rows < 0 || k < 0 || n < 0 || a.n < (size_t)rows * k || b.n < (size_t)k * n || nc < (size_t)rows * n) {
    throw_error(env, "bwq runtime: matmul operands are smaller than m x k, k x n and m x n");
    return nullptr;
  }
  if ((c == a.p && rows * k > 0) || (c == b.p && k * n > 0)) {
    throw_error(env, "bwq runtime: matmul needs c distinct from a and b");
    return nullptr;
  }
  if ((a.resident && a.be != m->model->be) || (b.resident && b.be != m->model->be)) {
    throw_error(env, "bwq runtime: a matmul operand is a state of another model");
    return nullptr;
  }
  huge_pages_for_output(c, 4 * nc);
  const Resident resident = a.resident ? (b.resident ? Resident::Both : Resident::A) : (b.resident ? Resident::B : Resident::None);
  return queue_call(env, {argv[0], argv[1], argv[3], argv[8]}, [=]() -> std::string {
    if (!m->model) return "bwq runtime: model was freed";
    if (a.freed() || b.freed()) return "bwq runtime: a matmul operand was freed";
    return matmul_t_on_device(*m->model, ta, tb, a.p, b.p, rows, k, n, c, resident);
  });
}

// rtReadGram(model, tap, out Float32Array [w, w]): the Gram matrix accumulated by block runs with options.gram
// (native/runtime/model.h read_gram); the accumulator is freed.
napi_value ReadGram(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  ModelRef *m = model_args(env, info, 3, argv);
  if (!m) return nullptr;
  float *out;
  size_t n;
  if (!typed(env, argv[2], napi_float32_array, (void **)&out, &n, "out")) return nullptr;
  huge_pages_for_output(out, 4 * n);
  const int tap = int_of(env, argv[1]);
  return done(env, locked([&] { return read_gram(*m->model, tap, out, n); }));
}

// rtKronRotate(model, x Float32Array [rows, a*b], rows, a, b, r1 Float32Array [a, a], r2 Float32Array [b, b],
// y Float32Array [rows, a*b]) -> Promise: y = x (R1 (x) R2) on the model's backend (model.h kron_rotate_on_device).
napi_value KronRotate(napi_env env, napi_callback_info info) {
  napi_value argv[8];
  ModelRef *m = model_args(env, info, 8, argv);
  if (!m) return nullptr;
  float *x, *r1, *r2, *y;
  size_t nx, n1, n2, ny;
  if (!typed(env, argv[1], napi_float32_array, (void **)&x, &nx, "x") ||
      !typed(env, argv[5], napi_float32_array, (void **)&r1, &n1, "r1") ||
      !typed(env, argv[6], napi_float32_array, (void **)&r2, &n2, "r2") ||
      !typed(env, argv[7], napi_float32_array, (void **)&y, &ny, "y"))
    return nullptr;
  const int rows = int_of(env, argv[2]), a = int_of(env, argv[3]), b = int_of(env, argv[4]);
  const size_t total = (size_t)(rows > 0 ? rows : 0) * (a > 0 ? a : 0) * (b > 0 ? b : 0);
  if (rows < 0 || a <= 0 || b <= 0 || nx < total || ny < total || n1 < (size_t)a * a || n2 < (size_t)b * b) {
    throw_error(env, "bwq runtime: kron_rotate operands are smaller than rows x a*b, a x a and b x b");
    return nullptr;
  }
  if (x == y && total > 0) {
    throw_error(env, "bwq runtime: kron_rotate needs distinct x and y");
    return nullptr;
  }
  huge_pages_for_output(y, 4 * ny);
  return queue_call(env, {argv[0], argv[1], argv[5], argv[6], argv[7]}, [=]() -> std::string {
    if (!m->model) return "bwq runtime: model was freed";
    return kron_rotate_on_device(*m->model, x, rows, a, b, r1, r2, y);
  });
}


// rtOkt(model, weights Float32Array[] (each [rows[i], k]), rows Int32Array, k, a, b, activations Float32Array
//   [tokens, k] | null, tokens, params Float64Array [activationWeight, iterations, tolerance, annealIterations],
//   anneal Float64Array, r1 Float64Array [a*a], r2 Float64Array [b*b] (the initial factors))
//   -> Promise of { r1, r2, history: Float64Array, iterations, converged, weightBefore, weightAfter, tailBefore, tailAfter }:
//   the OKT of BWLA on the model's backend (native/runtime/model.h okt_on_device; bwq.h bwq_okt_problem)
napi_value Okt(napi_env env, napi_callback_info info) {
  napi_value argv[12];
  ModelRef *m = model_args(env, info, 12, argv);
  if (!m) return nullptr;
  bool is_array = false;
  uint32_t n_weights = 0;
  if (napi_is_array(env, argv[1], &is_array) != napi_ok || !is_array ||
      napi_get_array_length(env, argv[1], &n_weights) != napi_ok) {
    napi_throw_type_error(env, "BWQ_ARGS", "bwq runtime: OKT weights must be an array of Float32Arrays");
    return nullptr;
  }
  int32_t *rows;
  size_t n_rows;
  if (!typed(env, argv[2], napi_int32_array, (void **)&rows, &n_rows, "OKT rows")) return nullptr;
  const int k = int_of(env, argv[3]), a = int_of(env, argv[4]), b = int_of(env, argv[5]);
  const int tokens = int_of(env, argv[7]);
  if (n_rows != n_weights || k <= 0 || a <= 0 || b <= 0 || (long long)a * b != k || tokens < 0) {
    throw_error(env, "bwq runtime: OKT needs one row count per weight matrix and k = a x b");
    return nullptr;
  }
  std::vector<const float *> weights(n_weights);
  for (uint32_t i = 0; i < n_weights; ++i) {
    napi_value v;
    napi_get_element(env, argv[1], i, &v);
    float *d;
    size_t len;
    if (!typed(env, v, napi_float32_array, (void **)&d, &len, "an OKT weight matrix")) return nullptr;
    if (rows[i] <= 0 || len < (size_t)rows[i] * k) {
      throw_error(env, "bwq runtime: OKT weight matrix " + std::to_string(i) + " is smaller than its rows x k");
      return nullptr;
    }
    weights[i] = d;
  }
  const float *act = nullptr;
  napi_valuetype at;
  napi_typeof(env, argv[6], &at);
  if (at != napi_null && at != napi_undefined) {
    float *d;
    size_t len;
    if (!typed(env, argv[6], napi_float32_array, (void **)&d, &len, "OKT activations")) return nullptr;
    if (len < (size_t)tokens * k) {
      throw_error(env, "bwq runtime: OKT activations are smaller than tokens x k");
      return nullptr;
    }
    act = d;
  }
  double *params, *anneal, *r1, *r2;
  size_t n_params, n_anneal, n_r1, n_r2;
  if (!typed(env, argv[8], napi_float64_array, (void **)&params, &n_params, "OKT params") ||
      !typed(env, argv[9], napi_float64_array, (void **)&anneal, &n_anneal, "OKT anneal") ||
      !typed(env, argv[10], napi_float64_array, (void **)&r1, &n_r1, "OKT r1") ||
      !typed(env, argv[11], napi_float64_array, (void **)&r2, &n_r2, "OKT r2"))
    return nullptr;
  if (n_params < 4 || n_r1 != (size_t)a * a || n_r2 != (size_t)b * b || !(params[1] >= 0 && params[1] < 1e9) ||
      !(params[3] >= 0 && params[3] < 1e9)) {
    throw_error(env, "bwq runtime: OKT params need 4 values, r1 a x a and r2 b x b");
    return nullptr;
  }
  bwq_okt_problem p{};
  p.weights = weights.data();
  p.rows = rows;
  p.n_weights = (int)n_weights;
  p.k = k;
  p.a = a;
  p.b = b;
  p.activations = act;
  p.tokens = act ? tokens : 0;
  p.activation_weight = params[0];
  p.iterations = (int)params[1];
  p.tolerance = params[2];
  p.anneal_iterations = (int)params[3];
  p.anneal = anneal;
  p.n_anneal = (int)n_anneal;
  p.r1_init = r1;
  p.r2_init = r2;
  // the call's state lives until its promise settles: the problem (pointers into held arrays), the result, and the
  // output arrays (held, filled by the call, put into the result object on the JS thread)
  struct OktCall {
    bwq_okt_problem p;
    bwq_okt_result r;
    std::vector<const float *> weights;
  };
  auto call = std::make_shared<OktCall>();
  call->weights = std::move(weights);
  call->p = p;
  call->p.weights = call->weights.data();
  double *hist;
  // the arguments and then the outputs r1, r2 and the history's buffer, held until the call settles
  std::vector<napi_value> holds(argv, argv + 12);
  holds.push_back(new_f64(env, (size_t)a * a, &call->r.r1));
  holds.push_back(new_f64(env, (size_t)b * b, &call->r.r2));
  holds.push_back(new_f64(env, (size_t)p.iterations + 1, &hist));
  call->r.history = hist;
  return queue_call(
      env, holds,
      [m, call]() -> std::string {
        if (!m->model) return "bwq runtime: model was freed";
        return okt_on_device(*m->model, call->p, call->r);
      },
      [call](napi_env e, const std::vector<napi_value> &held) -> napi_value {
        napi_value ab, history, o;
        const bwq_okt_result &r = call->r;
        napi_get_typedarray_info(e, held[14], nullptr, nullptr, nullptr, &ab, nullptr);
        napi_create_typedarray(e, napi_float64_array, (size_t)r.history_len, ab, 0, &history);
        napi_create_object(e, &o);
        set(e, o, "r1", held[12]);
        set(e, o, "r2", held[13]);
        set(e, o, "history", history);
        set(e, o, "iterations", make_int(e, r.iterations));
        set(e, o, "converged", make_bool(e, r.converged != 0));
        set(e, o, "weightBefore", make_double(e, r.weight_error_before));
        set(e, o, "weightAfter", make_double(e, r.weight_error_after));
        set(e, o, "tailBefore", make_double(e, r.tail_before));
        set(e, o, "tailAfter", make_double(e, r.tail_after));
        return o;
      });
}

// oktPolar(m Float64Array [n, n], n) -> Float64Array: the OKT's host polar factor U V^T (bwq.h bwq_okt_polar)
napi_value OktPolar(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!args(env, info, 2, argv)) return nullptr;
  double *mat;
  size_t len;
  if (!typed(env, argv[0], napi_float64_array, (void **)&mat, &len, "polar input")) return nullptr;
  const int n = int_of(env, argv[1]);
  if (n < 1 || len != (size_t)n * n) {
    throw_error(env, "bwq runtime: oktPolar needs an n x n matrix");
    return nullptr;
  }
  double *out;
  napi_value arr = new_f64(env, (size_t)n * n, &out);
  bwq_okt_polar(mat, n, out);
  return arr;
}

// rtFree(modelOrSession): frees the native memory now (later calls with it throw).
napi_value Free(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!args(env, info, 1, argv)) return nullptr;
  bool is_state = false;
  napi_check_object_type_tag(env, argv[0], &kStateTag, &is_state);
  if (is_state) {
    StateRef *st = unwrap<StateRef>(env, argv[0], kStateTag, "calibration state");
    if (st) st->release();
    return nullptr;
  }
  if (free_if_trainer(env, argv[0])) return nullptr;
  bool is_session = false;
  napi_check_object_type_tag(env, argv[0], &kSessionTag, &is_session);
  if (is_session) {
    SessionRef *s = unwrap<SessionRef>(env, argv[0], kSessionTag, "runtime session");
    if (s) locked([&] { s->session.reset(); });
    return nullptr;
  }
  ModelRef *m = unwrap<ModelRef>(env, argv[0], kModelTag, "runtime model or session");
  if (m) locked([&] { m->model.reset(); });
  return nullptr;
}

}  // namespace

void register_runtime(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {
      bwq_napi::method("rtOpen", Open),
      bwq_napi::method("rtSetTensor", SetTensor),
      bwq_napi::method("rtMissing", Missing),
      bwq_napi::method("rtSession", NewSession),
      bwq_napi::method("rtStateAlloc", StateAlloc),
      bwq_napi::method("rtStateWrite", StateWrite),
      bwq_napi::method("rtStateRead", StateRead),
      bwq_napi::method("rtForward", Forward),
      bwq_napi::method("rtNll", Nll),
      bwq_napi::method("rtReset", Reset),
      bwq_napi::method("rtInfo", Info),
      bwq_napi::method("rtFree", Free),
      bwq_napi::method("rtModelBytes", ModelBytes),
      bwq_napi::method("rtDevice", Device),
      bwq_napi::method("rtSetLayerRecipe", SetLayerRecipe),
      bwq_napi::method("rtRunBlock", RunBlock),
      bwq_napi::method("rtOkt", Okt),
      bwq_napi::method("oktPolar", OktPolar),
      bwq_napi::method("rtMatmulT", MatmulT),
      bwq_napi::method("rtReadGram", ReadGram),
      bwq_napi::method("rtKronRotate", KronRotate),
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  register_recon(env, exports);
}
