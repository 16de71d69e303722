// A decoder model held on one backend (weights in the checkpoint's dtype or packed), and a session on it:
// the KV cache for `batch` sequences of up to `max_t` positions and the scratch of one forward chunk.
// Supported blocks: llama / mistral / qwen2 / qwen3 (RMSNorm, optional q/k norms, RoPE, GQA, sliding window,
// gated MLP, biases), with the per-linear recipe of quantization_config (rotation, activation quantizer) and
// the attention-operand quantizers. docs/RUNTIME.md.
#ifndef BWQ_RUNTIME_MODEL_H
#define BWQ_RUNTIME_MODEL_H

#include <map>
#include <string>
#include <vector>

#include "backend.h"

namespace bwq {
namespace rt {

enum Role { Q_PROJ = 0, K_PROJ, V_PROJ, O_PROJ, GATE_PROJ, UP_PROJ, DOWN_PROJ, ROLE_COUNT };

struct ModelConfig {
  int hidden = 0, intermediate = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0, vocab = 0;
  int max_positions = 0, sliding_window = 0, rope_half = 0;  // rope_half = 0: no RoPE
  float eps = 1e-6f;
  Act act = Act::SILU;
  bool qk_norm = false;
};

// What happens to a linear's input before its matmul; linears with the same input index share it.
struct InputPrep {
  int rotation = -1;  // index into Model::rotations, or -1
  Quantizer quantizer;
};

// x' = x diag(R1 (x) R2, R3) on rows of width a*b + r (r = 0: R1 (x) R2, no r3).
struct Rotation {
  int a = 0, b = 0, r = 0;
  float *r1 = nullptr, *r2 = nullptr, *r3 = nullptr;
};

struct Linear {
  int n = 0, k = 0, input = 0;
  bool packed = false;
  PackedWeights bits;          // packed: B
  float *wscale = nullptr;     // packed: [n]
  FloatWeights weight;         // float: W [n, k] in its dtype (data owned by the model)
  int rank = 0;
  float *lr_a = nullptr;       // [n, rank]
  float *lr_b = nullptr;       // [rank, k]
  float *bias = nullptr;       // [n] or null
};

struct Layer {
  float *input_norm = nullptr, *post_norm = nullptr, *q_norm = nullptr, *k_norm = nullptr;
  Linear linears[ROLE_COUNT];
  AttentionRecipe attention;
};

struct Model {
  Backend *be = nullptr;
  ModelConfig cfg;
  std::vector<InputPrep> inputs;
  std::vector<Rotation> rotations;
  std::vector<Layer> layers;
  FloatWeights embed, lm_head;  // lm_head.data == embed.data when tied
  float *final_norm = nullptr;
  float *inv_freq = nullptr;    // [rope_half]
  std::vector<std::pair<void *, size_t>> owned;  // every allocation and its size, freed by the destructor
  size_t bytes = 0;             // device bytes held by the weights
  // Gram accumulators of the linear-input taps (GramTap order), [width, width] float32 on the backend: allocated
  // (zeroed) by the first block run that asks for them, accumulated by every such run, read back and freed by
  // read_gram; they outlive sessions (the quantize pipeline's last batch may be smaller, a new session).
  float *gram[4] = {nullptr, nullptr, nullptr, nullptr};
  int gram_width[4] = {0, 0, 0, 0};
  // Operand buffers of matmul_on_device / matmul_t_on_device / kron_rotate_on_device on a device backend (a, b, c),
  // grown as needed and kept between calls: the quantize numerics make hundreds of products per block, and a
  // cudaMalloc / cudaFree pair per operand and call cost more than the transfers.
  void *product_buf[3] = {nullptr, nullptr, nullptr};
  size_t product_bytes[3] = {0, 0, 0};

  ~Model();
  void *take(size_t bytes);     // backend allocation owned by the model (nullptr on failure)
  void release(void *p);        // frees an allocation made by take (a replaced tensor)
  // Checks that every tensor the config needs was set; "" when complete, else what is missing.
  std::string missing() const;
};

// c [m, n] = a [m, k] W^T with W [n, k], all float32 host arrays, computed on the model's backend (cuBLAS FP32 on
// CUDA): the quantize pipeline's large products on the device its blocks run on. The operands are uploaded to
// scratch that lives for the call. "" on success, else a one-line message (nothing stays allocated).
std::string matmul_on_device(Model &m, const float *a, int rows, int k, const float *w, int n, float *c);

// The OKT of BWLA (bwq.h bwq_okt_problem / bwq_okt_result, native/ops/okt/) on the model's backend, its stream and
// cuBLAS handle: "" on success, else a one-line message (also when the backend has no device OKT: the CPU's).
std::string okt_on_device(Model &m, const bwq_okt_problem &p, bwq_okt_result &r);

// c [rows, n] = op(A) op(B) for float32 host arrays (the reconstruction's three layouts, the quantize numerics): op(A) = a [rows, k] or, with
// trans_a, a^T (a stored [k, rows]); op(B) = b [k, n] or, with trans_b, b^T (b stored [n, k]). On a device whose
// backend has gemm_t (cuBLAS) the flags go to it; elsewhere the operands are rearranged on the host for
// matmul_on_device. An operand named by `resident` is already in the backend's memory (a state buffer, rtStateAlloc:
// a matrix the quantize numerics multiply by many times) and is used in place. "" on success, else a one-line
// message (nothing stays allocated).
enum class Resident { None, A, B, Both };
std::string matmul_t_on_device(Model &m, bool trans_a, bool trans_b, const float *a, const float *b, int rows, int k,
                               int n, float *c, Resident resident = Resident::None);

// y [rows, a*b] = x (R1 (x) R2) for float32 host arrays, on the model's backend (Backend::kron_rotate: threads on
// the CPU, kernels on CUDA with the operands uploaded in chunks of rows): the quantize numerics' rotations of
// weights, calibration rows and Gram matrices. "" on success, else a one-line message (nothing stays allocated).
std::string kron_rotate_on_device(Model &m, const float *x, int rows, int a, int b, const float *r1, const float *r2,
                                  float *y);

// The linear-input taps whose Gram matrices a block run can accumulate (BlockTaps::gram).
enum GramTap { GRAM_ATTN_INPUT = 0, GRAM_ATTN_CONTEXT, GRAM_MLP_INPUT, GRAM_MLP_HIDDEN, GRAM_TAPS };
// out [w, w] = the accumulated Gram matrix of tap `tap` (w = m.gram_width[tap]); the accumulator is freed (the next
// run that asks for it starts from zero). "" on success, else a one-line message (also when nothing was accumulated).
std::string read_gram(Model &m, int tap, float *out, size_t out_len);

// Sets one tensor by its slot name (docs/RUNTIME.md lists them): "embed", "lm_head" (or "tie_lm_head", no data:
// lm_head is the embedding), "final_norm", "inv_freq",
// "rotations.J.r1|r2|r3", "layers.I.input_norm|post_norm|q_norm|k_norm", "layers.I.ROLE.qweight|wscale|lr_a|lr_b|
// bias|weight". Float data is float32 except for "embed", "lm_head" and "...weight" (dtype kept). Returns "" or
// a one-line error.
std::string set_tensor(Model &m, const std::string &slot, DType dtype, const std::vector<int64_t> &shape,
                       const void *data, size_t bytes);

// Replaces layer l's recipe (a block being quantized): per role (packed, rank, has_bias, rotation group (-1 none;
// roles of one group share the rotation), rotation a, rotation b, quantizer kind, bits, param, rotation r) x 7, then (kind, bits, param) of the attention's query, key, probs, value and the probs row (1 unmasked keys, 0 whole window). The
// layer's linear tensors are dropped and must be set again ("layers.L.ROLE...."); a role with a rotation gets a
// new rotation entry whose factors must be set ("rotations.J.r1|r2", "r3" when r > 0): rotation_of_role[r] = J, or -1.
// Rotations no layer uses any more are freed. Returns "" or a one-line error.
std::string set_layer_recipe(Model &m, int l, const double *d, size_t n, std::vector<int> *rotation_of_role);

// Host buffers for a block run's intermediate activations (null: not wanted), [batch, t, features] token-major;
// query / key / value are after RoPE and before the attention's quantizers; probs is [batch, heads, t, t].
struct BlockTaps {
  float *attn_input = nullptr, *attn_context = nullptr, *mlp_input = nullptr, *mlp_hidden = nullptr;
  float *query = nullptr, *key = nullptr, *value = nullptr;
  float *probs = nullptr;  // [batch, n_heads, t, t], the softmax before the probs quantizer
  // When set: only these rows (ascending indices b*t + i into [batch, t]) of attn_input, attn_context, mlp_input and
  // mlp_hidden are copied out, to [n_rows, features] (the other taps stay whole).
  const int32_t *rows = nullptr;
  int n_rows = 0;
  // Gram matrices (GramTap order) accumulated over every token of the run into Model::gram (on the backend).
  bool gram[GRAM_TAPS] = {false, false, false, false};
};

class Session {
 public:
  // batch sequences of up to max_t positions, forwards in chunks of at most max_chunk positions.
  Session(Model &m, int batch, int max_t, int max_chunk);
  ~Session();
  // Bytes this session will allocate (cache + scratch), before it does.
  static size_t estimate_bytes(const Model &m, int batch, int max_t, int max_chunk);
  std::string init();  // allocates; "" or a one-line error (everything freed on failure)

  int position() const { return pos_; }
  int batch() const { return batch_; }
  const ModelConfig &config() const { return m_.cfg; }
  void reset() { pos_ = 0; }
  // Appends t tokens per sequence (ids [batch*t], sequence-major). logits: 0 none, 1 last [batch, V],
  // 2 all [batch*t, V] (host buffer). With nll_out: the cache is reset first and the next-token NLL of
  // positions 0..t-2 is summed into *nll_out (count batch*(t-1)). Returns "" or a one-line error.
  std::string forward(const int32_t *ids, int t, int logits, float *logits_out, double *nll_out);

  // One decoder layer on given hidden states (batch sequences of t tokens from position 0; the cache is reset):
  // out = layer l (hidden), both [batch, t, hidden], with the taps asked for. "" or an error. hidden and out are
  // host buffers, or the backend's memory with hidden_on_device / out_on_device (calibration states kept there; out
  // may then equal hidden). out may be null: the output is not wanted, only the taps.
  std::string run_block(int l, const float *hidden, int t, float *out, const BlockTaps &taps, bool hidden_on_device = false,
                        bool out_on_device = false);

  size_t bytes() const { return bytes_; }
  // True once decoding steps returning the last logits run from a recording (CUDA graph).
  bool replaying() const { return recordings_[1] != nullptr; }

 private:
  void layer(int l, int rows, int chunk_t, int pos, int probs_len, const BlockTaps *taps = nullptr, int t = 0);
  // copies rows [batch, chunk_t] of a device buffer into a host [batch, t, width] buffer at positions c0..
  void scatter_rows(const float *src, int width, int chunk_t, int c0, int t, float *dst);
  std::string decode_step(const int32_t *ids, int logits, float *logits_out);
  void linear(const Linear &lin, const float *x, int rows, float *y);
  void prepare(int input, const float *x, int rows, int cols);
  Codes &codes_for(CodeForm form, int cols);
  void *take(size_t bytes);

  Model &m_;
  Backend *be_;
  int batch_, max_t_, max_chunk_, max_rows_;
  int pos_ = 0;
  size_t bytes_ = 0;
  std::vector<void *> owned_;
  std::vector<KvLayer> kv_;
  std::map<std::pair<int, int>, Codes> codes_;
  int prepared_ = -1;        // input index whose codes / x_hat are current
  const float *prepared_x_ = nullptr;
  Codes *cur_codes_ = nullptr;
  // scratch (device)
  float *h_ = nullptr, *x_ = nullptr, *xr_ = nullptr, *tmp_ = nullptr, *xhat_ = nullptr, *q_ = nullptr,
        *k_ = nullptr, *v_ = nullptr, *gate_ = nullptr, *up_ = nullptr, *out_ = nullptr, *lr_ = nullptr,
        *logits_ = nullptr, *last_ = nullptr;
  int32_t *acc_ = nullptr, *ids_ = nullptr, *positions_ = nullptr, *targets_ = nullptr;
  double *nll_ = nullptr;
  int logit_rows_ = 1;
  // recorded decoding steps by logits mode (0 none, 1 last); eager steps run so far; false once recording failed
  void *recordings_[2] = {nullptr, nullptr};
  int eager_steps_ = 0;
  float *probs_dev_ = nullptr;  // device buffer of a block run's probs tap
  bool replay_ok_ = true;
};

}  // namespace rt
}  // namespace bwq

#endif
