// N-API binding of the quantize numerics' passes on the CPU threads: PSP's, the column-block compensation's and the
// group statistics' passes over a weight (native/ops/binarize/binarize_cpu.cpp), the calibration's and the
// reconstruction's activation quantizers (native/ops/actquant/actquant_cpu.cpp) and the sketches' Householder QR
// (native/ops/linalg/qr_cpu.cpp):
// host typed arrays in and out, lengths checked here (a short array throws a RangeError naming it).
#include <node_api.h>
#include <stdint.h>

#include <string>

#include "../ops/ops_cpu.h"
#include "addon_weight_passes.h"
#include "napi_values.h"

namespace {

bool args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok || argc < want) {
    napi_throw_type_error(env, "BWQ_ARGS", ("bwq native: expected " + std::to_string(want) + " arguments").c_str());
    return false;
  }
  return true;
}

bool dim(napi_env env, napi_value v, int *out, const char *what) {
  int32_t x = -1;
  if (napi_get_value_int32(env, v, &x) != napi_ok || x < 0) {
    napi_throw_range_error(env, "BWQ_ARGS", (std::string("bwq native: ") + what + " must be a non-negative integer").c_str());
    return false;
  }
  *out = x;
  return true;
}

// A typed array of type `want` with at least `need` elements (its length into *length_out when given).
template <typename T>
bool array(napi_env env, napi_value v, napi_typedarray_type want, size_t need, T **data, const char *what,
           size_t *length_out = nullptr) {
  bool is = false;
  napi_is_typedarray(env, v, &is);
  napi_typedarray_type type;
  size_t length = 0, offset = 0;
  napi_value buffer;
  void *p = nullptr;
  if (!is || napi_get_typedarray_info(env, v, &type, &length, &p, &buffer, &offset) != napi_ok || type != want) {
    napi_throw_type_error(env, "BWQ_ARGS", (std::string("bwq native: ") + what + " has the wrong array type").c_str());
    return false;
  }
  if (length < need) {
    napi_throw_range_error(env, "BWQ_ARGS", (std::string("bwq native: ") + what + " has " + std::to_string(length) +
                                             " elements, needs " + std::to_string(need)).c_str());
    return false;
  }
  *data = (T *)p;
  if (length_out) *length_out = length;
  return true;
}

// pspBStep(w f32 [rows, cols], dense f32, dw f64 [cols], d2 f64 [cols], rows, cols, signs i8 (out), scales f32 [rows] (out))
napi_value PspBStep(napi_env env, napi_callback_info info) {
  napi_value a[8];
  int rows = 0, cols = 0;
  if (!args(env, info, 8, a) || !dim(env, a[4], &rows, "rows") || !dim(env, a[5], &cols, "cols")) return nullptr;
  const size_t n = (size_t)rows * cols;
  float *w, *dense, *scales;
  double *dw, *d2;
  int8_t *signs;
  if (!array(env, a[0], napi_float32_array, n, &w, "w") || !array(env, a[1], napi_float32_array, n, &dense, "dense") ||
      !array(env, a[2], napi_float64_array, cols, &dw, "dw") || !array(env, a[3], napi_float64_array, cols, &d2, "d2") ||
      !array(env, a[6], napi_int8_array, n, &signs, "signs") || !array(env, a[7], napi_float32_array, rows, &scales, "scales"))
    return nullptr;
  bwq::cpu::psp_b_step(w, dense, dw, d2, rows, cols, signs, scales);
  return nullptr;
}

// pspResidual(w, signs, scales, dw, dense, rows, cols, residual f32 (out), rowHalf f64 [rows] (out), rowPlain f64 (out))
napi_value PspResidual(napi_env env, napi_callback_info info) {
  napi_value a[10];
  int rows = 0, cols = 0;
  if (!args(env, info, 10, a) || !dim(env, a[5], &rows, "rows") || !dim(env, a[6], &cols, "cols")) return nullptr;
  const size_t n = (size_t)rows * cols;
  float *w, *scales, *dense, *residual;
  int8_t *signs;
  double *dw, *half, *plain;
  if (!array(env, a[0], napi_float32_array, n, &w, "w") || !array(env, a[1], napi_int8_array, n, &signs, "signs") ||
      !array(env, a[2], napi_float32_array, rows, &scales, "scales") || !array(env, a[3], napi_float64_array, cols, &dw, "dw") ||
      !array(env, a[4], napi_float32_array, n, &dense, "dense") || !array(env, a[7], napi_float32_array, n, &residual, "residual") ||
      !array(env, a[8], napi_float64_array, rows, &half, "rowHalf") || !array(env, a[9], napi_float64_array, rows, &plain, "rowPlain"))
    return nullptr;
  bwq::cpu::psp_residual(w, signs, scales, dw, dense, rows, cols, residual, half, plain);
  return nullptr;
}

// rowSquaredDistance(a f32 [rows, cols], b f32, rows, cols, rowSum f64 [rows] (out))
napi_value RowSquaredDistance(napi_env env, napi_callback_info info) {
  napi_value a[5];
  int rows = 0, cols = 0;
  if (!args(env, info, 5, a) || !dim(env, a[2], &rows, "rows") || !dim(env, a[3], &cols, "cols")) return nullptr;
  const size_t n = (size_t)rows * cols;
  float *x, *y;
  double *sum;
  if (!array(env, a[0], napi_float32_array, n, &x, "a") || !array(env, a[1], napi_float32_array, n, &y, "b") ||
      !array(env, a[4], napi_float64_array, rows, &sum, "rowSum"))
    return nullptr;
  bwq::cpu::row_sq_dist(x, y, rows, cols, sum);
  return nullptr;
}

// binaryLowRankWeight(signs i8 [rows, cols], scales f32 [rows], lrA f32 [rows, rank], lrB f32 [rank, cols], rank, rows,
// cols, out f32 [rows, cols])
napi_value BinaryLowRankWeight(napi_env env, napi_callback_info info) {
  napi_value a[8];
  int rank = 0, rows = 0, cols = 0;
  if (!args(env, info, 8, a) || !dim(env, a[4], &rank, "rank") || !dim(env, a[5], &rows, "rows") || !dim(env, a[6], &cols, "cols"))
    return nullptr;
  const size_t n = (size_t)rows * cols;
  int8_t *signs;
  float *scales, *lra, *lrb, *out;
  if (!array(env, a[0], napi_int8_array, n, &signs, "signs") || !array(env, a[1], napi_float32_array, rows, &scales, "scales") ||
      !array(env, a[2], napi_float32_array, (size_t)rows * rank, &lra, "lrA") ||
      !array(env, a[3], napi_float32_array, (size_t)rank * cols, &lrb, "lrB") || !array(env, a[7], napi_float32_array, n, &out, "out"))
    return nullptr;
  bwq::cpu::binary_lowrank_weight(signs, scales, lra, lrb, rank, rows, cols, out);
  return nullptr;
}

// subtractF32(dst f32, src f32, count): dst[i] = fl(dst[i] − src[i]) for i < count
napi_value SubtractF32(napi_env env, napi_callback_info info) {
  napi_value a[3];
  int count = 0;
  if (!args(env, info, 3, a) || !dim(env, a[2], &count, "count")) return nullptr;
  float *dst, *src;
  if (!array(env, a[0], napi_float32_array, count, &dst, "dst") || !array(env, a[1], napi_float32_array, count, &src, "src")) return nullptr;
  bwq::cpu::subtract_f32(dst, src, (size_t)count);
  return nullptr;
}

// transposeF32(x f32 [rows, cols], rows, cols, out f32 [cols, rows])
napi_value TransposeF32(napi_env env, napi_callback_info info) {
  napi_value a[4];
  int rows = 0, cols = 0;
  if (!args(env, info, 4, a) || !dim(env, a[1], &rows, "rows") || !dim(env, a[2], &cols, "cols")) return nullptr;
  const size_t n = (size_t)rows * cols;
  float *x, *out;
  if (!array(env, a[0], napi_float32_array, n, &x, "x") || !array(env, a[3], napi_float32_array, n, &out, "out")) return nullptr;
  bwq::cpu::transpose_f32(x, rows, cols, out);
  return nullptr;
}

// blockErrors(bt f32 [width, rows], qb f32 [rows, width], diag f64 [width], rows, width, q f32 (row stride ldq), ldq,
// et f32 [width, rows] (out))
napi_value BlockErrors(napi_env env, napi_callback_info info) {
  napi_value a[8];
  int rows = 0, width = 0, ldq = 0;
  if (!args(env, info, 8, a) || !dim(env, a[3], &rows, "rows") || !dim(env, a[4], &width, "width") || !dim(env, a[6], &ldq, "ldq"))
    return nullptr;
  if (width > ldq) {
    napi_throw_range_error(env, "BWQ_ARGS", "bwq native: width exceeds ldq");
    return nullptr;
  }
  const size_t n = (size_t)rows * width;
  float *bt, *qb, *q, *et;
  double *diag;
  if (!array(env, a[0], napi_float32_array, n, &bt, "bt") || !array(env, a[1], napi_float32_array, n, &qb, "qb") ||
      !array(env, a[2], napi_float64_array, width, &diag, "diag") ||
      !array(env, a[5], napi_float32_array, rows == 0 ? 0 : (size_t)(rows - 1) * ldq + width, &q, "q") ||
      !array(env, a[7], napi_float32_array, n, &et, "et"))
    return nullptr;
  bwq::cpu::block_errors(bt, qb, diag, rows, width, q, ldq, et);
  return nullptr;
}

// signBlock(block f32 [rows, width], rows, width, scales f32 [rows], signs i8 (row stride ld, out), ld, start,
// out f32 [rows, width] (out))
napi_value SignBlock(napi_env env, napi_callback_info info) {
  napi_value a[8];
  int rows = 0, width = 0, ld = 0, start = 0;
  if (!args(env, info, 8, a) || !dim(env, a[1], &rows, "rows") || !dim(env, a[2], &width, "width") ||
      !dim(env, a[5], &ld, "ld") || !dim(env, a[6], &start, "start"))
    return nullptr;
  if (start + width > ld) {
    napi_throw_range_error(env, "BWQ_ARGS", "bwq native: start + width exceeds ld");
    return nullptr;
  }
  const size_t n = (size_t)rows * width;
  float *block, *scales, *out;
  int8_t *signs;
  if (!array(env, a[0], napi_float32_array, n, &block, "block") || !array(env, a[3], napi_float32_array, rows, &scales, "scales") ||
      !array(env, a[4], napi_int8_array, rows == 0 ? 0 : (size_t)(rows - 1) * ld + start + width, &signs, "signs") ||
      !array(env, a[7], napi_float32_array, n, &out, "out"))
    return nullptr;
  bwq::cpu::sign_block(block, rows, width, scales, signs, ld, start, out);
  return nullptr;
}

// scaleFit(bh f32 [rows, cols], w f32, low f32 (empty: none), signs i8, rows, cols, num f64 [rows] (out), den f64 (out))
napi_value ScaleFit(napi_env env, napi_callback_info info) {
  napi_value a[8];
  int rows = 0, cols = 0;
  if (!args(env, info, 8, a) || !dim(env, a[4], &rows, "rows") || !dim(env, a[5], &cols, "cols")) return nullptr;
  const size_t n = (size_t)rows * cols;
  float *bh, *w, *low;
  int8_t *signs;
  double *num, *den;
  size_t low_len = 0;  // empty: no low-rank term
  if (!array(env, a[2], napi_float32_array, 0, &low, "low", &low_len)) return nullptr;
  if (!array(env, a[0], napi_float32_array, n, &bh, "bh") || !array(env, a[1], napi_float32_array, n, &w, "w") ||
      (low_len > 0 && !array(env, a[2], napi_float32_array, n, &low, "low")) ||
      !array(env, a[3], napi_int8_array, n, &signs, "signs") || !array(env, a[6], napi_float64_array, rows, &num, "num") ||
      !array(env, a[7], napi_float64_array, rows, &den, "den"))
    return nullptr;
  bwq::cpu::scale_fit(bh, w, low_len > 0 ? low : nullptr, signs, rows, cols, num, den);
  return nullptr;
}

// binarizationRows(w f32 [rows, cols], rows, cols, err f64 [rows] (out), energy f64 [rows] (out))
napi_value BinarizationRows(napi_env env, napi_callback_info info) {
  napi_value a[5];
  int rows = 0, cols = 0;
  if (!args(env, info, 5, a) || !dim(env, a[1], &rows, "rows") || !dim(env, a[2], &cols, "cols")) return nullptr;
  float *w;
  double *err, *energy;
  if (!array(env, a[0], napi_float32_array, (size_t)rows * cols, &w, "w") ||
      !array(env, a[3], napi_float64_array, rows, &err, "err") || !array(env, a[4], napi_float64_array, rows, &energy, "energy"))
    return nullptr;
  if (cols == 0) {
    napi_throw_range_error(env, "BWQ_ARGS", "bwq native: binarization of rows with no columns");
    return nullptr;
  }
  bwq::cpu::binarization_rows(w, rows, cols, err, energy);
  return nullptr;
}

// packSigns(signs i8 [rows, cols], rows, cols, out u32 [rows, ceil(cols / 32)] (out))
napi_value PackSigns(napi_env env, napi_callback_info info) {
  napi_value a[4];
  int rows = 0, cols = 0;
  if (!args(env, info, 4, a) || !dim(env, a[1], &rows, "rows") || !dim(env, a[2], &cols, "cols")) return nullptr;
  int8_t *signs;
  uint32_t *out;
  if (!array(env, a[0], napi_int8_array, (size_t)rows * cols, &signs, "signs") ||
      !array(env, a[3], napi_uint32_array, (size_t)rows * ((cols + 31) / 32), &out, "out"))
    return nullptr;
  bwq::cpu::pack_signs(signs, rows, cols, out);
  return nullptr;
}

// quantizeRows(kind 0 none | 1 int | 2 ternary | 3 binary, bits, param, x f32 [rows, cols], rows, cols, out f32 (out,
// may be x)): the calibration's fake activation quantizers
napi_value QuantizeRows(napi_env env, napi_callback_info info) {
  napi_value a[7];
  int kind = 0, bits = 0, rows = 0, cols = 0;
  if (!args(env, info, 7, a) || !dim(env, a[0], &kind, "kind") || !dim(env, a[1], &bits, "bits") ||
      !dim(env, a[4], &rows, "rows") || !dim(env, a[5], &cols, "cols"))
    return nullptr;
  if (kind > 3 || (kind == 1 && (bits < 2 || bits > 24))) {
    napi_throw_range_error(env, "BWQ_ARGS", "bwq native: quantizeRows takes kind 0..3 and int bits 2..24");
    return nullptr;
  }
  double param = 0;
  napi_get_value_double(env, a[2], &param);
  float *x, *out;
  const size_t n = (size_t)rows * cols;
  if (!array(env, a[3], napi_float32_array, n, &x, "x") || !array(env, a[6], napi_float32_array, n, &out, "out")) return nullptr;
  bwq::cpu::quantize_rows(kind, bits, param, x, rows, cols, out);
  return nullptr;
}

// householderQr(a f64 [m, n], m, n, q f64 [m, n] (out), r f64 [n, n] (out)), m ≥ n
napi_value HouseholderQr(napi_env env, napi_callback_info info) {
  napi_value a[5];
  int m = 0, n = 0;
  if (!args(env, info, 5, a) || !dim(env, a[1], &m, "m") || !dim(env, a[2], &n, "n")) return nullptr;
  if (m < n) {
    napi_throw_range_error(env, "BWQ_ARGS", ("bwq native: qr needs rows >= cols, got " + std::to_string(m) + "x" + std::to_string(n)).c_str());
    return nullptr;
  }
  double *x, *q, *r;
  if (!array(env, a[0], napi_float64_array, (size_t)m * n, &x, "a") || !array(env, a[3], napi_float64_array, (size_t)m * n, &q, "q") ||
      !array(env, a[4], napi_float64_array, (size_t)n * n, &r, "r"))
    return nullptr;
  bwq::cpu::householder_qr(x, m, n, q, r);
  return nullptr;
}

// The act-quant calls' common arguments: kind (1 int, 2 ternary, 3 levels), bits or levels, param, x f32 [rows, cols],
// rows, cols, period, window, unmasked.
bool act_args(napi_env env, const napi_value *a, bwq::cpu::ActQuant *q, double *param, float **x, int *rows, int *cols,
              bwq::cpu::ActRows *causal) {
  int kind = 0, bl = 0, period = 0, window = 0;
  if (!dim(env, a[0], &kind, "kind") || !dim(env, a[1], &bl, "bits") || !dim(env, a[4], rows, "rows") ||
      !dim(env, a[5], cols, "cols") || !dim(env, a[6], &period, "period") || !dim(env, a[7], &window, "window"))
    return false;
  if (kind < 1 || kind > 3) {
    napi_throw_range_error(env, "BWQ_ARGS", "bwq native: act-quant kind must be 1 (int), 2 (ternary) or 3 (levels)");
    return false;
  }
  q->kind = (bwq::cpu::ActQuant::Kind)kind;
  q->bits = kind == 1 ? bl : 0;
  q->levels = kind == 3 ? bl : 0;
  napi_get_value_double(env, a[2], param);
  bool unmasked = false;
  napi_get_value_bool(env, a[8], &unmasked);
  causal->period = period;
  causal->window = window;
  causal->unmasked = unmasked;
  return array(env, a[3], napi_float32_array, (size_t)*rows * *cols, x, "x");
}

// actQuantForward(kind, bits, param, x, rows, cols, period, window, unmasked, out f32 (zeroed), stat f64 [rows],
// scale f64 [rows])
napi_value ActQuantForward(napi_env env, napi_callback_info info) {
  napi_value a[12];
  if (!args(env, info, 12, a)) return nullptr;
  bwq::cpu::ActQuant q;
  bwq::cpu::ActRows causal;
  double param = 0;
  float *x, *out;
  double *stat, *scale;
  int rows = 0, cols = 0;
  if (!act_args(env, a, &q, &param, &x, &rows, &cols, &causal) ||
      !array(env, a[9], napi_float32_array, (size_t)rows * cols, &out, "out") ||
      !array(env, a[10], napi_float64_array, rows, &stat, "stat") || !array(env, a[11], napi_float64_array, rows, &scale, "scale"))
    return nullptr;
  bwq::cpu::act_quant_forward(q, param, x, rows, cols, causal, out, stat, scale);
  return nullptr;
}

// actQuantBackward(kind, bits, param, x, rows, cols, period, window, unmasked, g f32, stat, scale, weight, dx f32,
// rowGrad f64 [rows] (out))
napi_value ActQuantBackward(napi_env env, napi_callback_info info) {
  napi_value a[15];
  if (!args(env, info, 15, a)) return nullptr;
  bwq::cpu::ActQuant q;
  bwq::cpu::ActRows causal;
  double param = 0, weight = 0;
  float *x, *g, *dx;
  double *stat, *scale, *row_grad;
  int rows = 0, cols = 0;
  if (!act_args(env, a, &q, &param, &x, &rows, &cols, &causal) ||
      !array(env, a[9], napi_float32_array, (size_t)rows * cols, &g, "g") ||
      !array(env, a[10], napi_float64_array, rows, &stat, "stat") || !array(env, a[11], napi_float64_array, rows, &scale, "scale") ||
      !array(env, a[13], napi_float32_array, (size_t)rows * cols, &dx, "dx") ||
      !array(env, a[14], napi_float64_array, rows, &row_grad, "rowGrad"))
    return nullptr;
  napi_get_value_double(env, a[12], &weight);
  bwq::cpu::act_quant_backward(q, param, x, g, rows, cols, causal, stat, scale, weight, dx, row_grad);
  return nullptr;
}

}  // namespace

void register_weight_passes(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {
      bwq_napi::method("pspBStep", PspBStep),
      bwq_napi::method("pspResidual", PspResidual),
      bwq_napi::method("rowSquaredDistance", RowSquaredDistance),
      bwq_napi::method("binaryLowRankWeight", BinaryLowRankWeight),
      bwq_napi::method("subtractF32", SubtractF32),
      bwq_napi::method("transposeF32", TransposeF32),
      bwq_napi::method("blockErrors", BlockErrors),
      bwq_napi::method("signBlock", SignBlock),
      bwq_napi::method("scaleFit", ScaleFit),
      bwq_napi::method("binarizationRows", BinarizationRows),
      bwq_napi::method("packSigns", PackSigns),
      bwq_napi::method("quantizeRows", QuantizeRows),
      bwq_napi::method("householderQr", HouseholderQr),
      bwq_napi::method("actQuantForward", ActQuantForward),
      bwq_napi::method("actQuantBackward", ActQuantBackward),
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
