// The decoder forward, written once over the Backend interface (llm.c style: one function per step, read
// top to bottom). A call appends t tokens to each of the batch sequences, in chunks of at most max_chunk
// positions; each chunk runs every layer, then the final norm and the logits (or NLL) of its rows.
//
//   h = embed(ids)
//   per layer:  x = rms_norm(h)                               attention half
//               q, k, v = linear(x)  (+ q/k norms, RoPE at each row's position)
//               cache <- quantized k, v;  ctx = attention(q, cache)
//               h += o_proj(ctx)
//               x = rms_norm(h)                               MLP half
//               h += down(act(gate(x)) * up(x))
//   logits = lm_head(rms_norm(h))
//
// linear(x) = [rotation ->] quantize -> packed GEMM + scales [+ low-rank] [+ bias], or a float GEMM
// (docs/NATIVE_FORWARD.md, docs/RUNTIME.md).
#include <math.h>
#include <string.h>

#include <algorithm>

#include "model.h"

namespace bwq {
namespace rt {

namespace {
bool int8_codes(const Quantizer &q) {
  return q.kind == QKind::TERNARY || q.kind == QKind::BINARY || (q.kind == QKind::INT && q.bits <= 8);
}
int max_linear_out(const ModelConfig &c) {
  return std::max({c.hidden, c.intermediate, c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim});
}
int max_linear_in(const ModelConfig &c) { return std::max({c.hidden, c.intermediate, c.n_heads * c.head_dim}); }
int max_rank(const Model &m) {
  int r = 0;
  for (const Layer &l : m.layers)
    for (const Linear &lin : l.linears) r = std::max(r, lin.rank);
  return r;
}
// Rows of logits computed at a time: at most 256, and at most ~64 M floats.
int logit_rows(const ModelConfig &c, int max_rows) {
  return std::max(1, std::min({256, max_rows, (int)((64LL << 20) / std::max(1, c.vocab))}));
}
}  // namespace

Session::Session(Model &m, int batch, int max_t, int max_chunk)
    : m_(m), be_(m.be), batch_(batch), max_t_(max_t), max_chunk_(std::min(max_chunk, max_t)),
      max_rows_(batch * std::min(max_chunk, max_t)) {}

Session::~Session() {
  for (void *r : recordings_) be_->free_recording(r);
  for (auto &kv : codes_) be_->free_codes(kv.second);
  for (void *p : owned_) be_->free(p);
}

size_t Session::estimate_bytes(const Model &m, int batch, int max_t, int max_chunk) {
  const ModelConfig &c = m.cfg;
  const size_t rows = (size_t)batch * std::min(max_chunk, max_t);
  const size_t kvw = (size_t)c.n_kv_heads * c.head_dim;
  const size_t cache = (size_t)c.n_layers * batch * max_t * (kvw * 9 + c.n_kv_heads * 4);
  const size_t kin = max_linear_in(m.cfg), nout = max_linear_out(m.cfg);
  const size_t scratch = rows * 4 * (c.hidden + std::max<size_t>(kin, c.hidden) * 4 + 3 * kvw + c.n_heads * c.head_dim +
                                     2 * (size_t)c.intermediate + nout + max_rank(m) + 2 * nout + 8) +
                         rows * kin * 3 +  // codes
                         (size_t)logit_rows(c, (int)rows) * (c.vocab * 4 + 16) + (size_t)batch * c.hidden * 4;
  return cache + scratch;
}

void *Session::take(size_t n) {
  void *p = be_->alloc(n);
  if (p) {
    owned_.push_back(p);
    bytes_ += n;
  }
  return p;
}

std::string Session::init() {
  const ModelConfig &c = m_.cfg;
  const size_t R = max_rows_, kvw = (size_t)c.n_kv_heads * c.head_dim, qw = (size_t)c.n_heads * c.head_dim;
  const size_t kin = max_linear_in(c), nout = max_linear_out(c);
  for (int l = 0; l < c.n_layers; ++l) {
    KvLayer kv;
    kv.batch = batch_;
    kv.max_t = max_t_;
    kv.n_kv_heads = c.n_kv_heads;
    kv.head_dim = c.head_dim;
    const size_t slots = (size_t)batch_ * max_t_;
    kv.k_hat = (float *)take(4 * slots * kvw);
    kv.v_hat = (float *)take(4 * slots * kvw);
    if (int8_codes(m_.layers[l].attention.key)) {
      kv.k_codes = (int8_t *)take(slots * kvw);
      kv.k_scales = (float *)take(4 * slots * c.n_kv_heads);
    }
    kv_.push_back(kv);
  }
  logit_rows_ = logit_rows(c, max_rows_);
  h_ = (float *)take(4 * R * c.hidden);
  x_ = (float *)take(4 * R * std::max(kin, (size_t)c.hidden));
  xr_ = (float *)take(4 * R * kin);
  tmp_ = (float *)take(4 * R * kin);
  xhat_ = (float *)take(4 * R * kin);
  q_ = (float *)take(4 * R * qw);
  k_ = (float *)take(4 * R * kvw);
  v_ = (float *)take(4 * R * kvw);
  gate_ = (float *)take(4 * R * c.intermediate);
  up_ = (float *)take(4 * R * c.intermediate);
  out_ = (float *)take(4 * R * nout);
  lr_ = (float *)take(4 * R * std::max(1, max_rank(m_)));
  acc_ = (int32_t *)take(4 * 2 * R * nout);
  ids_ = (int32_t *)take(4 * R);
  positions_ = (int32_t *)take(4 * R);
  targets_ = (int32_t *)take(4 * (size_t)logit_rows_);
  logits_ = (float *)take(4 * (size_t)logit_rows_ * c.vocab);
  nll_ = (double *)take(8 * (size_t)logit_rows_);
  last_ = (float *)take(4 * (size_t)batch_ * c.hidden);
  if (const char *e = be_->error()) return e;
  return "";
}

Codes &Session::codes_for(CodeForm form, int cols) {
  auto key = std::make_pair((int)form, cols);
  auto it = codes_.find(key);
  if (it == codes_.end()) {
    Codes c;
    be_->alloc_codes(c, form, max_rows_, cols);
    it = codes_.emplace(key, c).first;
  }
  return it->second;
}

// Rotation and quantization of x [rows, cols] for an input recipe: codes in cur_codes_, x_hat in xhat_.
void Session::prepare(int input, const float *x, int rows, int cols) {
  if (prepared_ == input && prepared_x_ == x) return;  // q/k/v and gate/up share one preparation
  const InputPrep &in = m_.inputs[input];
  const float *src = x;
  if (in.rotation >= 0) {
    const Rotation &r = m_.rotations[in.rotation];
    be_->kron_rotate(x, rows, r.a, r.b, r.r, r.r1, r.r2, r.r3, tmp_, xr_);
    src = xr_;
  }
  const CodeForm form = code_form(in.quantizer);
  cur_codes_ = form == CodeForm::FLOAT ? nullptr : &codes_for(form, cols);
  Codes none;
  be_->quantize(src, rows, cols, in.quantizer, cur_codes_ ? *cur_codes_ : none, xhat_);
  prepared_ = input;
  prepared_x_ = x;
}

// y [rows, n] = linear(x [rows, k]).
void Session::linear(const Linear &lin, const float *x, int rows, float *y) {
  prepare(lin.input, x, rows, lin.k);
  if (!lin.packed) {
    be_->gemm(xhat_, rows, lin.k, lin.weight, y, lin.n, false);
  } else {
    if (cur_codes_) be_->packed_linear(*cur_codes_, rows, lin.bits, lin.wscale, acc_, y);
    else be_->float_binary_linear(xhat_, rows, lin.bits, lin.wscale, y);
    if (lin.rank > 0) {  // + (x_hat lr_b^T) lr_a^T
      be_->gemm(xhat_, rows, lin.k, FloatWeights{lin.rank, lin.k, DType::F32, lin.lr_b}, lr_, lin.rank, false);
      be_->gemm(lr_, rows, lin.rank, FloatWeights{lin.n, lin.rank, DType::F32, lin.lr_a}, y, lin.n, true);
    }
  }
  if (lin.bias) be_->add_bias(y, rows, lin.n, lin.bias);
}

// One decoder layer on h_ [rows = batch * chunk_t, hidden], tokens at positions pos .. pos + chunk_t - 1; with
// taps (a block run of t positions per sequence), the intermediate activations are copied out as they appear.
void Session::layer(int l, int rows, int chunk_t, int pos, int probs_len, const BlockTaps *taps, int t) {
  const ModelConfig &c = m_.cfg;
  const Layer &L = m_.layers[l];
  const int qw = c.n_heads * c.head_dim, kvw = c.n_kv_heads * c.head_dim;
  auto tap = [&](float *dst, const float *src, int width) {
    if (taps && dst) scatter_rows(src, width, chunk_t, pos, t, dst);
  };
  // a linear input: its Gram matrix over every token of the chunk, and its rows (all, or the selected ones)
  auto input_tap = [&](GramTap g, float *dst, const float *src, int width) {
    if (!taps) return;
    if (taps->gram[g]) be_->gram(src, rows, width, m_.gram[g]);
    if (!dst) return;
    if (!taps->rows) return scatter_rows(src, width, chunk_t, pos, t, dst);
    for (int i = 0; i < taps->n_rows; ++i) {
      const int b = taps->rows[i] / t, p = taps->rows[i] % t;
      if (p >= pos && p < pos + chunk_t)
        be_->download(dst + (size_t)i * width, src + ((size_t)b * chunk_t + (p - pos)) * width, 4 * (size_t)width);
    }
  };
  if (int8_codes(L.attention.key) && !kv_[l].k_codes) {
    // a recipe set after the session was made (a block being quantized) may quantize the keys to codes
    const size_t slots = (size_t)batch_ * max_t_;
    kv_[l].k_codes = (int8_t *)take(slots * kvw);
    kv_[l].k_scales = (float *)take(4 * slots * c.n_kv_heads);
  }
  // attention
  be_->rms_norm(h_, rows, c.hidden, L.input_norm, c.eps, x_);
  input_tap(GRAM_ATTN_INPUT, taps ? taps->attn_input : nullptr, x_, c.hidden);
  prepared_ = -1;
  linear(L.linears[Q_PROJ], x_, rows, q_);
  linear(L.linears[K_PROJ], x_, rows, k_);
  linear(L.linears[V_PROJ], x_, rows, v_);
  if (L.q_norm) be_->rms_norm(q_, rows * c.n_heads, c.head_dim, L.q_norm, c.eps, q_);
  if (L.k_norm) be_->rms_norm(k_, rows * c.n_kv_heads, c.head_dim, L.k_norm, c.eps, k_);
  if (c.rope_half > 0) {
    be_->rope(q_, rows, c.n_heads, c.head_dim, m_.inv_freq, c.rope_half, positions_);
    be_->rope(k_, rows, c.n_kv_heads, c.head_dim, m_.inv_freq, c.rope_half, positions_);
  }
  if (taps) {
    tap(taps->query, q_, qw);
    tap(taps->key, k_, kvw);
    tap(taps->value, v_, kvw);
  }
  be_->kv_store(kv_[l], k_, v_, batch_, chunk_t, pos, L.attention.key, L.attention.value);
  AttentionShape sh;
  sh.batch = batch_;
  sh.t = chunk_t;
  sh.pos0 = pos;
  sh.n_heads = c.n_heads;
  sh.n_kv_heads = c.n_kv_heads;
  sh.head_dim = c.head_dim;
  sh.sliding_window = c.sliding_window;  // (no-op while the sequence is shorter than the window)
  sh.probs_len = probs_len;
  sh.scaling = 1.0 / sqrt((double)c.head_dim);
  sh.probs_out = taps && taps->probs ? probs_dev_ : nullptr;
  be_->attention(q_, kv_[l], sh, L.attention, x_);
  if (sh.probs_out)  // device [batch, heads, chunk_t, t] -> host [batch, heads, t, t] at rows pos..
    for (int bh = 0; bh < batch_ * c.n_heads; ++bh)
      be_->download(taps->probs + ((size_t)bh * t + pos) * t, probs_dev_ + (size_t)bh * chunk_t * t,
                    4 * (size_t)chunk_t * t);
  input_tap(GRAM_ATTN_CONTEXT, taps ? taps->attn_context : nullptr, x_, qw);
  prepared_ = -1;
  linear(L.linears[O_PROJ], x_, rows, out_);
  be_->add(h_, out_, (size_t)rows * c.hidden);
  // MLP
  be_->rms_norm(h_, rows, c.hidden, L.post_norm, c.eps, x_);
  input_tap(GRAM_MLP_INPUT, taps ? taps->mlp_input : nullptr, x_, c.hidden);
  prepared_ = -1;
  linear(L.linears[GATE_PROJ], x_, rows, gate_);
  linear(L.linears[UP_PROJ], x_, rows, up_);
  be_->gated_act(gate_, up_, (size_t)rows * c.intermediate, c.act);
  input_tap(GRAM_MLP_HIDDEN, taps ? taps->mlp_hidden : nullptr, gate_, c.intermediate);
  prepared_ = -1;
  linear(L.linears[DOWN_PROJ], gate_, rows, out_);
  be_->add(h_, out_, (size_t)rows * c.hidden);
}

void Session::scatter_rows(const float *src, int width, int chunk_t, int c0, int t, float *dst) {
  for (int b = 0; b < batch_; ++b)
    be_->download(dst + ((size_t)b * t + c0) * width, src + (size_t)b * chunk_t * width, 4 * (size_t)chunk_t * width);
}

std::string Session::run_block(int l, const float *hidden, int t, float *out, const BlockTaps &taps, bool hidden_on_device,
                               bool out_on_device) {
  const ModelConfig &c = m_.cfg;
  if (l < 0 || l >= c.n_layers) return "no layer " + std::to_string(l);
  if (t < 1 || t > max_t_) return "block run of " + std::to_string(t) + " positions, the cache holds " + std::to_string(max_t_);
  pos_ = 0;
  const int widths[GRAM_TAPS] = {c.hidden, c.n_heads * c.head_dim, c.hidden, c.intermediate};
  for (int g = 0; g < GRAM_TAPS; ++g) {
    if (!taps.gram[g]) continue;
    if (m_.gram[g] && m_.gram_width[g] != widths[g]) return "Gram accumulator of tap " + std::to_string(g) + " has another width";
    if (!m_.gram[g]) {
      m_.gram[g] = (float *)be_->alloc(4 * (size_t)widths[g] * widths[g]);
      if (!m_.gram[g]) return be_->error() ? be_->error() : "allocation of a Gram matrix failed";
      m_.gram_width[g] = widths[g];
    }
  }
  for (int i = 0; i < taps.n_rows; ++i)
    if (taps.rows[i] < 0 || taps.rows[i] >= batch_ * t || (i > 0 && taps.rows[i] <= taps.rows[i - 1]))
      return "tap rows must ascend within [0, batch x t)";
  if (taps.probs) {
    probs_dev_ = (float *)be_->alloc(4 * (size_t)batch_ * c.n_heads * std::min(max_chunk_, t) * t);
    if (!probs_dev_) return be_->error() ? be_->error() : "allocation failed";
  }
  struct FreeProbs {
    Session *s;
    ~FreeProbs() {
      if (s->probs_dev_) s->be_->free(s->probs_dev_);
      s->probs_dev_ = nullptr;
    }
  } free_probs{this};
  std::vector<int32_t> chunk_pos;
  for (int c0 = 0; c0 < t; c0 += max_chunk_) {
    const int ct = std::min(max_chunk_, t - c0), rows = batch_ * ct;
    chunk_pos.resize(rows);
    for (int b = 0; b < batch_; ++b) {
      for (int i = 0; i < ct; ++i) chunk_pos[b * ct + i] = c0 + i;
      float *dst = h_ + (size_t)b * ct * c.hidden;
      const float *src = hidden + ((size_t)b * t + c0) * c.hidden;
      if (hidden_on_device) be_->copy(dst, src, 4 * (size_t)ct * c.hidden);
      else be_->upload(dst, src, 4 * (size_t)ct * c.hidden);
    }
    be_->upload(positions_, chunk_pos.data(), 4 * (size_t)rows);
    layer(l, rows, ct, c0, t, &taps, t);
    if (out && !out_on_device) scatter_rows(h_, c.hidden, ct, c0, t, out);
    else if (out)  // the chunk's rows of each sequence (the next chunk reads later rows only: out may be hidden)
      for (int b = 0; b < batch_; ++b)
        be_->copy(out + ((size_t)b * t + c0) * c.hidden, h_ + (size_t)b * ct * c.hidden, 4 * (size_t)ct * c.hidden);
    if (const char *e = be_->error()) return e;
  }
  pos_ = 0;
  be_->sync();
  if (const char *e = be_->error()) return e;
  return "";
}

std::string Session::forward(const int32_t *ids, int t, int logits, float *logits_out, double *nll_out) {
  const ModelConfig &c = m_.cfg;
  if (nll_out) {
    pos_ = 0;
    *nll_out = 0;
  }
  if (t < 1) return "no tokens";
  if (pos_ + t > max_t_)
    return "sequence of " + std::to_string(pos_ + t) + " positions exceeds the cache (" + std::to_string(max_t_) + ")";
  for (int i = 0; i < batch_ * t; ++i)
    if (ids[i] < 0 || ids[i] >= c.vocab)
      return "token id " + std::to_string(ids[i]) + " is outside the model's vocabulary (" + std::to_string(c.vocab) + ")";
  if (t == 1 && !nll_out && logits != 2 && be_->is_device()) return decode_step(ids, logits, logits_out);
  const int probs_len = pos_ + t;
  std::vector<int32_t> chunk_ids, chunk_pos, targets;
  std::vector<double> nll_host;
  for (int c0 = 0; c0 < t; c0 += max_chunk_) {
    const int ct = std::min(max_chunk_, t - c0), rows = batch_ * ct, pos = pos_;
    chunk_ids.resize(rows);
    chunk_pos.resize(rows);
    for (int b = 0; b < batch_; ++b)
      for (int i = 0; i < ct; ++i) {
        chunk_ids[b * ct + i] = ids[(size_t)b * t + c0 + i];
        chunk_pos[b * ct + i] = pos + i;
      }
    be_->upload(ids_, chunk_ids.data(), 4 * (size_t)rows);
    be_->upload(positions_, chunk_pos.data(), 4 * (size_t)rows);
    be_->embed(ids_, rows, m_.embed.data, m_.embed.dtype, c.hidden, h_);
    for (int l = 0; l < c.n_layers; ++l) layer(l, rows, ct, pos, probs_len);
    pos_ += ct;
    // final norm, then the logits the caller wants from this chunk
    be_->rms_norm(h_, rows, c.hidden, m_.final_norm, c.eps, x_);
    if (logits == 1 && c0 + ct == t) {
      std::vector<int> last(batch_);
      for (int b = 0; b < batch_; ++b) last[b] = b * ct + ct - 1;
      be_->gather_rows(x_, c.hidden, last.data(), batch_, last_);
      for (int b0 = 0; b0 < batch_; b0 += logit_rows_) {
        const int n = std::min(logit_rows_, batch_ - b0);
        be_->gemm(last_ + (size_t)b0 * c.hidden, n, c.hidden, m_.lm_head, logits_, c.vocab, false);
        be_->download(logits_out + (size_t)b0 * c.vocab, logits_, 4 * (size_t)n * c.vocab);
      }
    } else if (logits == 2 || nll_out) {
      for (int r0 = 0; r0 < rows; r0 += logit_rows_) {
        const int n = std::min(logit_rows_, rows - r0);
        be_->gemm(x_ + (size_t)r0 * c.hidden, n, c.hidden, m_.lm_head, logits_, c.vocab, false);
        if (logits == 2) {
          // row r = (b, i) of the chunk -> output row b * t + c0 + i: one download per run of one sequence's rows
          for (int r = r0; r < r0 + n;) {
            const int b = r / ct, i = r % ct, run = std::min(r0 + n, (b + 1) * ct) - r;
            be_->download(logits_out + ((size_t)b * t + c0 + i) * c.vocab, logits_ + (size_t)(r - r0) * c.vocab,
                          4 * (size_t)run * c.vocab);
            r += run;
          }
        }
        if (nll_out) {
          targets.assign(n, 0);
          for (int r = r0; r < r0 + n; ++r) {
            const int b = r / ct, i = c0 + r % ct;
            if (i + 1 < t) targets[r - r0] = ids[(size_t)b * t + i + 1];
          }
          be_->upload(targets_, targets.data(), 4 * (size_t)n);
          be_->nll_rows(logits_, n, c.vocab, targets_, nll_);
          nll_host.resize(n);
          be_->download(nll_host.data(), nll_, 8 * (size_t)n);
          for (int r = r0; r < r0 + n; ++r)
            if (c0 + r % ct + 1 < t) *nll_out += nll_host[r - r0];
        }
      }
    }
    if (const char *e = be_->error()) return e;
  }
  be_->sync();
  if (const char *e = be_->error()) return e;
  return "";
}

// One token per sequence on a device backend. The step from the embedding to the logits is recorded once per
// logits mode, after one eager step (so every workspace already has its size), and replayed at every later
// position: the positions live on the device (KvLayer::device_pos0), so the recording does not depend on them.
// When recording is not possible the steps run eagerly.
std::string Session::decode_step(const int32_t *ids, int logits, float *logits_out) {
  const ModelConfig &c = m_.cfg;
  const int pos = pos_;
  std::vector<int32_t> positions(batch_, pos);
  be_->upload(ids_, ids, 4 * (size_t)batch_);
  be_->upload(positions_, positions.data(), 4 * (size_t)batch_);
  for (KvLayer &kv : kv_) kv.device_pos0 = positions_;
  auto run = [&]() {
    be_->embed(ids_, batch_, m_.embed.data, m_.embed.dtype, c.hidden, h_);
    for (int l = 0; l < c.n_layers; ++l) layer(l, batch_, 1, pos, pos + 1);
    be_->rms_norm(h_, batch_, c.hidden, m_.final_norm, c.eps, x_);
    if (logits == 1) be_->gemm(x_, batch_, c.hidden, m_.lm_head, logits_, c.vocab, false);
  };
  void *&rec = recordings_[logits == 1 ? 1 : 0];
  if (!rec && replay_ok_ && eager_steps_ > 0 && batch_ <= logit_rows_) {
    if (be_->capture_begin()) {
      run();
      rec = be_->capture_end();
    }
    if (!rec) replay_ok_ = false;
  }
  if (rec) {
    be_->replay(rec);
  } else {
    run();
    ++eager_steps_;
  }
  if (logits == 1) be_->download(logits_out, logits_, 4 * (size_t)batch_ * c.vocab);
  for (KvLayer &kv : kv_) kv.device_pos0 = nullptr;
  pos_ += 1;
  be_->sync();
  if (const char *e = be_->error()) return e;
  return "";
}

}  // namespace rt
}  // namespace bwq
