// Model weights on a backend: set_tensor places each tensor by slot name, checking its shape against the
// config; Model::missing() names what was never set.
#include <stdlib.h>
#include <string.h>

#include <algorithm>

#include "model.h"

namespace bwq {
namespace rt {

namespace {
const char *kRoles[ROLE_COUNT] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};

std::string shape_str(const std::vector<int64_t> &s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

bool same(const std::vector<int64_t> &s, std::initializer_list<int64_t> want) {
  return s.size() == want.size() && std::equal(s.begin(), s.end(), want.begin());
}

// Splits "a.b.c" at dots.
std::vector<std::string> split(const std::string &s) {
  std::vector<std::string> parts;
  size_t start = 0;
  for (size_t i = 0; i <= s.size(); ++i)
    if (i == s.size() || s[i] == '.') {
      parts.push_back(s.substr(start, i - start));
      start = i + 1;
    }
  return parts;
}
}  // namespace

Model::~Model() {
  for (Layer &l : layers)
    for (Linear &lin : l.linears)
      if (lin.bits.data) be->free_packed(lin.bits);
  for (auto &o : owned) be->free(o.first);
  for (float *g : gram)
    if (g) be->free(g);
  for (void *p : product_buf)
    if (p) be->free(p);
}

// Buffer `slot` of the products' operands with room for `bytes` (the old one freed when it is too small).
static void *product_buffer(Model &m, int slot, size_t bytes) {
  if (m.product_bytes[slot] < bytes) {
    if (m.product_buf[slot]) m.be->free(m.product_buf[slot]);
    m.product_bytes[slot] = 0;
    m.product_buf[slot] = m.be->alloc(bytes);
    if (m.product_buf[slot]) m.product_bytes[slot] = bytes;
  }
  return m.product_buf[slot];
}

void *Model::take(size_t n) {
  void *p = be->alloc(n);
  if (p) {
    owned.emplace_back(p, n);
    bytes += n;
  }
  return p;
}

void Model::release(void *p) {
  if (!p) return;
  for (size_t i = 0; i < owned.size(); ++i)
    if (owned[i].first == p) {
      bytes -= owned[i].second;
      be->free(p);
      owned.erase(owned.begin() + (long)i);
      return;
    }
}

namespace {
int packed_words(const Linear &lin) { return lin.n * ((lin.k + 31) / 32); }
}  // namespace

std::string set_layer_recipe(Model &m, int l, const double *d, size_t n, std::vector<int> *rotation_of_role) {
  if (l < 0 || l >= (int)m.layers.size()) return "no layer " + std::to_string(l);
  if (n < ROLE_COUNT * 10 + 13) return "layer recipe too short";
  Layer &L = m.layers[l];
  rotation_of_role->assign(ROLE_COUNT, -1);
  std::vector<int> rotation_of_group;  // the layer's rotation groups (same tensors) -> rotation index
  for (int r = 0; r < ROLE_COUNT; ++r, d += 10) {
    Linear &lin = L.linears[r];
    // drop the tensors: the caller sets them again for the new recipe
    if (lin.bits.data) {
      m.bytes -= 4 * (size_t)packed_words(lin);
      m.be->free_packed(lin.bits);
    }
    m.release(lin.wscale);
    m.release(const_cast<void *>(lin.weight.data));
    m.release(lin.lr_a);
    m.release(lin.lr_b);
    m.release(lin.bias);
    lin.bits = PackedWeights{};
    lin.wscale = lin.lr_a = lin.lr_b = lin.bias = nullptr;
    lin.weight = FloatWeights{};
    lin.packed = d[0] != 0;
    lin.rank = (int)d[1];
    InputPrep in;
    in.quantizer.kind = (QKind)(int)d[6];
    in.quantizer.bits = (int)d[7];
    in.quantizer.param = (float)d[8];
    const int group = (int)d[3], a = (int)d[4], b = (int)d[5], rem = (int)d[9];
    if (group >= 0) {
      if (rem < 0 || a * b + rem != lin.k)
        return "rotation " + std::to_string(a) + "x" + std::to_string(b) + " + " + std::to_string(rem) + " does not fit " + std::to_string(lin.k) + " inputs";
      if ((int)rotation_of_group.size() <= group) rotation_of_group.resize(group + 1, -1);
      int &j = rotation_of_group[group];
      if (j < 0) {
        m.rotations.push_back(Rotation{a, b, rem, nullptr, nullptr, nullptr});
        j = (int)m.rotations.size() - 1;
      } else if (m.rotations[j].a != a || m.rotations[j].b != b || m.rotations[j].r != rem) {
        return "rotation group " + std::to_string(group) + " has two sizes";
      }
      in.rotation = j;
      (*rotation_of_role)[r] = j;
    }
    // linears with the same rotation and quantizer share one input preparation (q/k/v, gate/up)
    int idx = -1;
    for (int s = 0; s < r && idx < 0; ++s) {
      const InputPrep &prev = m.inputs[L.linears[s].input];
      if (prev.rotation == in.rotation && prev.quantizer.kind == in.quantizer.kind &&
          prev.quantizer.bits == in.quantizer.bits && prev.quantizer.param == in.quantizer.param)
        idx = L.linears[s].input;
    }
    if (idx < 0) {
      m.inputs.push_back(in);
      idx = (int)m.inputs.size() - 1;
    }
    lin.input = idx;
  }
  auto q = [](const double *x) {
    Quantizer z;
    z.kind = (QKind)(int)x[0];
    z.bits = (int)x[1];
    z.param = (float)x[2];
    return z;
  };
  L.attention.query = q(d);
  L.attention.key = q(d + 3);
  L.attention.probs = q(d + 6);
  L.attention.value = q(d + 9);
  L.attention.probs_unmasked = d[12] != 0;
  // free the factors of rotations no layer uses any more (their entries stay, empty)
  std::vector<bool> used(m.rotations.size(), false);
  for (const Layer &ly : m.layers)
    for (const Linear &lin : ly.linears) {
      const int rot = m.inputs[lin.input].rotation;
      if (rot >= 0) used[rot] = true;
    }
  for (size_t j = 0; j < m.rotations.size(); ++j)
    if (!used[j] && (m.rotations[j].r1 || m.rotations[j].r2 || m.rotations[j].r3)) {
      m.release(m.rotations[j].r1);
      m.release(m.rotations[j].r2);
      m.release(m.rotations[j].r3);
      m.rotations[j].r1 = m.rotations[j].r2 = m.rotations[j].r3 = nullptr;
    }
  return "";
}

std::string Model::missing() const {
  if (!embed.data) return "embed";
  if (!lm_head.data) return "lm_head";
  if (!final_norm) return "final_norm";
  if (cfg.rope_half > 0 && !inv_freq) return "inv_freq";
  for (const Layer &l : layers)
    for (const Linear &lin : l.linears) {
      const int j = inputs[lin.input].rotation;
      if (j >= 0 && (!rotations[j].r1 || !rotations[j].r2 || (rotations[j].r > 0 && !rotations[j].r3)))
        return "rotations." + std::to_string(j);
    }
  for (size_t i = 0; i < layers.size(); ++i) {
    const Layer &l = layers[i];
    const std::string p = "layers." + std::to_string(i) + ".";
    if (!l.input_norm) return p + "input_norm";
    if (!l.post_norm) return p + "post_norm";
    if (cfg.qk_norm && (!l.q_norm || !l.k_norm)) return p + "q_norm/k_norm";
    for (int r = 0; r < ROLE_COUNT; ++r) {
      const Linear &lin = l.linears[r];
      if (lin.packed ? !lin.bits.data || !lin.wscale : !lin.weight.data) return p + kRoles[r];
      if (lin.rank > 0 && (!lin.lr_a || !lin.lr_b)) return p + kRoles[r] + ".lr_a/lr_b";
    }
  }
  return "";
}

std::string set_tensor(Model &m, const std::string &slot, DType dtype, const std::vector<int64_t> &shape,
                       const void *data, size_t bytes) {
  const ModelConfig &c = m.cfg;
  size_t elems = 1;
  for (int64_t d : shape) elems *= (size_t)d;
  auto bad_shape = [&](std::initializer_list<int64_t> want) {
    return "tensor for " + slot + " has shape " + shape_str(shape) + ", expected " + shape_str(std::vector<int64_t>(want));
  };
  // float32 copy on the backend
  auto f32 = [&](float **dst, std::initializer_list<int64_t> want) -> std::string {
    if (!same(shape, want)) return bad_shape(want);
    if (dtype != DType::F32 || bytes != 4 * elems) return "tensor for " + slot + " must be float32";
    m.release(*dst);  // a tensor set again replaces the old one
    *dst = (float *)m.take(bytes);
    if (!*dst) return m.be->error() ? m.be->error() : "allocation failed";
    m.be->upload(*dst, data, bytes);
    return "";
  };
  // a float matrix kept in its dtype
  auto matrix = [&](FloatWeights &w, int64_t n, int64_t k) -> std::string {
    if (!same(shape, {n, k})) return bad_shape({n, k});
    if (bytes != dtype_size(dtype) * elems) return "tensor for " + slot + ": byte size does not match its dtype";
    if (&w != &m.lm_head || m.lm_head.data != m.embed.data) m.release(const_cast<void *>(w.data));
    void *p = m.take(bytes);
    if (!p) return m.be->error() ? m.be->error() : "allocation failed";
    m.be->upload(p, data, bytes);
    w = FloatWeights{(int)n, (int)k, dtype, p};
    return "";
  };
  if (slot == "embed") return matrix(m.embed, c.vocab, c.hidden);
  if (slot == "lm_head") return matrix(m.lm_head, c.vocab, c.hidden);
  if (slot == "tie_lm_head") {  // tied embeddings: lm_head is the embedding table (one copy on the device)
    if (!m.embed.data) return "tie_lm_head before embed";
    m.lm_head = m.embed;
    return "";
  }
  if (slot == "final_norm") return f32(&m.final_norm, {c.hidden});
  if (slot == "inv_freq") return f32(&m.inv_freq, {c.rope_half});
  const std::vector<std::string> p = split(slot);
  if (p.size() == 3 && p[0] == "rotations") {
    const int j = atoi(p[1].c_str());
    if (j < 0 || j >= (int)m.rotations.size()) return "no rotation " + p[1];
    Rotation &r = m.rotations[j];
    if (p[2] == "r1") return f32(&r.r1, {r.a, r.a});
    if (p[2] == "r2") return f32(&r.r2, {r.b, r.b});
    if (p[2] == "r3" && r.r > 0) return f32(&r.r3, {r.r, r.r});
  }
  if ((p.size() == 3 || p.size() == 4) && p[0] == "layers") {
    const int i = atoi(p[1].c_str());
    if (i < 0 || i >= (int)m.layers.size()) return "no layer " + p[1];
    Layer &l = m.layers[i];
    if (p.size() == 3) {
      if (p[2] == "input_norm") return f32(&l.input_norm, {c.hidden});
      if (p[2] == "post_norm") return f32(&l.post_norm, {c.hidden});
      if (p[2] == "q_norm") return f32(&l.q_norm, {c.head_dim});
      if (p[2] == "k_norm") return f32(&l.k_norm, {c.head_dim});
    } else {
      int role = -1;
      for (int r = 0; r < ROLE_COUNT; ++r)
        if (p[2] == kRoles[r]) role = r;
      if (role < 0) return "unknown slot " + slot;
      Linear &lin = l.linears[role];
      const std::string &what = p[3];
      if (what == "weight") return matrix(lin.weight, lin.n, lin.k);
      if (what == "wscale") return f32(&lin.wscale, {lin.n});
      if (what == "bias") return f32(&lin.bias, {lin.n});
      if (what == "lr_a") return f32(&lin.lr_a, {lin.n, lin.rank});
      if (what == "lr_b") return f32(&lin.lr_b, {lin.rank, lin.k});
      if (what == "qweight") {
        const int64_t kw = (lin.k + 31) / 32;
        if (!same(shape, {lin.n, kw})) return bad_shape({lin.n, kw});
        if (bytes != 4 * elems) return "tensor for " + slot + " must be 32-bit words";
        if (lin.bits.data) {
          m.bytes -= 4 * elems;
          m.be->free_packed(lin.bits);
        }
        if (!m.be->upload_packed(lin.bits, (const uint32_t *)data, lin.n, lin.k))
          return m.be->error() ? m.be->error() : "allocation failed";
        m.bytes += 4 * elems;
        return "";
      }
    }
  }
  return "unknown slot " + slot;
}

// The backend's pending error as "WHAT on BACKEND: ERROR" (cleared), or "" when there is none.
static std::string take_error(Backend *be, const char *what) {
  const char *e = be->error();
  if (!e) return "";
  std::string msg = std::string(what) + " on " + be->name() + ": " + e;
  be->clear_error();
  return msg;
}

std::string matmul_on_device(Model &m, const float *a, int rows, int k, const float *w, int n, float *c) {
  if (rows <= 0 || k <= 0 || n <= 0) return "";
  Backend *be = m.be;
  const size_t na = (size_t)rows * k * 4, nw = (size_t)n * k * 4, nc = (size_t)rows * n * 4;
  if (!be->is_device()) {  // host memory: no copies
    be->gemm(a, rows, k, FloatWeights{n, k, DType::F32, w}, c, n, false);
    be->sync();
  } else {
    void *da = product_buffer(m, 0, na), *dw = product_buffer(m, 1, nw), *dc = product_buffer(m, 2, nc);
    if (da && dw && dc) {
      be->upload(da, a, na);
      be->upload(dw, w, nw);
      be->gemm((const float *)da, rows, k, FloatWeights{n, k, DType::F32, dw}, (float *)dc, n, false);
      be->download(c, dc, nc);
    }
  }
  return take_error(be, "matmul");
}

// [rows, cols] -> [cols, rows]
static std::vector<float> transposed(const float *x, int rows, int cols) {
  std::vector<float> out((size_t)rows * cols);
  for (int r = 0; r < rows; r++)
    for (int c = 0; c < cols; c++) out[(size_t)c * rows + r] = x[(size_t)r * cols + c];
  return out;
}

std::string matmul_t_on_device(Model &m, bool trans_a, bool trans_b, const float *a, const float *b, int rows, int k,
                               int n, float *c, Resident resident) {
  if (rows <= 0 || k <= 0 || n <= 0) return "";
  const bool a_res = resident == Resident::A || resident == Resident::Both;
  const bool b_res = resident == Resident::B || resident == Resident::Both;
  Backend *be = m.be;
  if (be->is_device()) {
    const size_t na = (size_t)rows * k * 4, nb = (size_t)k * n * 4, nc = (size_t)rows * n * 4;
    void *da = a_res ? (void *)a : product_buffer(m, 0, na), *db = b_res ? (void *)b : product_buffer(m, 1, nb),
         *dc = product_buffer(m, 2, nc);
    bool ran = false;
    if (da && db && dc) {
      if (!a_res) be->upload(da, a, na);
      if (!b_res) be->upload(db, b, nb);
      ran = be->gemm_t(trans_a, trans_b, (const float *)da, (const float *)db, rows, k, n, (float *)dc);
      if (ran) be->download(c, dc, nc);
    }
    if (std::string msg = take_error(be, "matmul"); !msg.empty()) return msg;
    if (ran) return "";
    // no device gemm_t (CUDA without cuBLAS): resident operands come back to the host for the plain form below
    std::vector<float> ha, hb;
    if (a_res) {
      ha.resize((size_t)rows * k);
      be->download(ha.data(), a, na);
      a = ha.data();
    }
    if (b_res) {
      hb.resize((size_t)k * n);
      be->download(hb.data(), b, nb);
      b = hb.data();
    }
    if (std::string msg = take_error(be, "matmul"); !msg.empty()) return msg;
    return matmul_t_on_device(m, trans_a, trans_b, a, b, rows, k, n, c, Resident::None);
  }
  // host memory (resident operands are host arrays too): c = a' w^T with a' = op(A) [rows, k], w = op(B)^T [n, k]
  if (!trans_a && trans_b) return matmul_on_device(m, a, rows, k, b, n, c);
  std::vector<float> at, bt;
  if (trans_a) at = transposed(a, k, rows);
  if (!trans_b) bt = transposed(b, k, n);
  return matmul_on_device(m, trans_a ? at.data() : a, rows, k, trans_b ? b : bt.data(), n, c);
}

std::string kron_rotate_on_device(Model &m, const float *x, int rows, int a, int b, const float *r1, const float *r2,
                                  float *y) {
  if (rows <= 0 || a <= 0 || b <= 0) return "";
  Backend *be = m.be;
  const size_t k = (size_t)a * b;
  if (!be->is_device()) {  // host memory: in place of the arrays, a host scratch for X R2
    std::vector<float> tmp((size_t)rows * k);
    be->kron_rotate(x, rows, a, b, 0, r1, r2, nullptr, tmp.data(), y);
    be->sync();
  } else {
    // chunks of at most 2^26 floats (256 MiB) per buffer (at least one row)
    const int chunk = (int)std::max<size_t>(1, std::min<size_t>((size_t)rows, ((size_t)1 << 26) / k));
    const size_t nb = (size_t)chunk * k * 4;
    void *dx = product_buffer(m, 0, nb), *dt = product_buffer(m, 1, nb), *dy = product_buffer(m, 2, nb),
         *d1 = be->alloc((size_t)a * a * 4), *d2 = be->alloc((size_t)b * b * 4);
    if (dx && dt && dy && d1 && d2) {
      be->upload(d1, r1, (size_t)a * a * 4);
      be->upload(d2, r2, (size_t)b * b * 4);
      for (int r0 = 0; r0 < rows && !be->error(); r0 += chunk) {
        const int n = std::min(chunk, rows - r0);
        be->upload(dx, x + (size_t)r0 * k, (size_t)n * k * 4);
        be->kron_rotate((const float *)dx, n, a, b, 0, (const float *)d1, (const float *)d2, nullptr, (float *)dt,
                        (float *)dy);
        be->download(y + (size_t)r0 * k, dy, (size_t)n * k * 4);
      }
    }
    for (void *p : {d1, d2})
      if (p) be->free(p);
  }
  return take_error(be, "kron_rotate");
}

std::string read_gram(Model &m, int tap, float *out, size_t out_len) {
  if (tap < 0 || tap >= GRAM_TAPS) return "no Gram tap " + std::to_string(tap);
  if (!m.gram[tap]) return "no Gram matrix was accumulated for tap " + std::to_string(tap);
  const size_t w = (size_t)m.gram_width[tap];
  if (out_len < w * w) return "the Gram output needs " + std::to_string(w * w) + " values";
  m.be->download(out, m.gram[tap], 4 * w * w);
  m.be->free(m.gram[tap]);
  m.gram[tap] = nullptr;
  m.gram_width[tap] = 0;
  return take_error(m.be, "Gram read-back");
}

std::string okt_on_device(Model &m, const bwq_okt_problem &p, bwq_okt_result &r) {
  Backend *be = m.be;
  if (be->learn_okt(p, r)) return "";
  std::string msg = be->error() ? std::string(be->error()) : std::string(be->name()) + " has no device OKT";
  be->clear_error();
  return msg;
}

}  // namespace rt
}  // namespace bwq
