// cuBLASLt subset of the CUDA emulation, over OpenBLAS: cublasLtMatmul on fp32 or bf16 matrices with fp32 or TF32
// compute and the bias, ReLU and bias-gradient epilogues. Implements the real prototypes of CUDA 13's cublasLt.h,
// so host code compiles unchanged and nothing links libcublasLt.
//
// The operation (cuBLAS documentation 3.1.4.1: Aux_temp = alpha op(A) op(B) + beta C + bias, D = Epilogue(Aux_temp)),
// column-major; m x n are D's rows x columns, k is op(A)'s columns:
//   1. acc = alpha op(A) op(B) + beta C in fp32: cblas_sgemm on fp32 copies (bf16 is exact in fp32). With
//      CUBLAS_COMPUTE_32F_FAST_TF32, A and B are rounded to TF32 first, as in the emulated cuBLAS
//      (NVIDIA_TF32_OVERRIDE=0 turns that off). beta == 0 never reads C; k == 0 or alpha == 0 never reads A and B.
//   2. the epilogue, in fp32, element (i, j) of acc being x (quotes: cublasLt.h, cublasLtEpilogue_t and
//      cublasLtMatmulDescAttributes_t):
//      BIAS         x += bias[i], bias of length m: "Bias vector length must match matrix D rows ... broadcasted to
//                   all columns and added before applying final postprocessing".
//      RELU         x = max(x, 0) ("x:=max(x, 0)"); a NaN becomes 0. RELU_BIAS: "apply Bias and then ReLu".
//      RELU_AUX(_BIAS)  also sets bit (i, j) of the aux mask to (x > 0), x taken after the bias and before the ReLU
//                   ("ReLu bit-mask"; nvmath-python's RELU_AUX example: "bitflags marking where the input to the RELU
//                   function is positive").
//      DRELU        x = bit(i, j) ? x : 0 ("Apply ReLu gradient to matmul output"), the mask being one a RELU_AUX
//                   or RELU_AUX_BIAS matmul of the same m, n and aux ld wrote.
//      DRELU_BGRAD  DRELU, and bias[i] = sum_j x over D's n columns (length m), x after the mask and before D's
//                   rounding: "Store ReLu gradient in the output matrix, and Bias gradient in the auxiliary output
//                   (see CUBLASLT_MATMUL_DESC_BIAS_POINTER)".
//      BGRADA       D plain; bias[i] = sum_l op(A)(i, l), l < k (length m): "Bias gradient based on the input matrix
//                   A. The bias size corresponds to the number of rows of the matrix D. The reduction happens over
//                   the GEMM's "k" dimension".
//      BGRADB       D plain; bias[j] = sum_l op(B)(l, j), l < k (length n): "... the number of columns of the matrix
//                   D".
//      Bias gradients are fp32 sums in index order. BGRADA/B sum the operand as stored (before TF32); how alpha
//      enters them is not documented, so alpha != 1 with them faults rather than guess.
//   3. D rounded to its type (bf16: round to nearest even, cuvae_bf16_from_float), the bias gradient to the bias's.
// Aux mask: its ld (CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD) counts elements, i.e. bits, and "must be divisible by 128
//   and be no less than the number of rows in the output matrix" (else CUBLAS_STATUS_INVALID_VALUE). Here element
//   (i, j) is bit (j ld + i) % 8 of byte (j ld + i) / 8, and the bits of rows m..ld-1 are left alone; the real layout
//   is undocumented, so the mask is opaque: only a DRELU / DRELU_BGRAD matmul of the same shape may read it.
// Types (cublasLtMatmul's datatype table): compute CUBLAS_COMPUTE_32F with scale type CUDA_R_32F and A, B, C, D all
//   fp32, all bf16, or bf16 A, B with fp32 C, D; CUBLAS_COMPUTE_32F_FAST_TF32 with all fp32. The bias is of D's type
//   (CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE unset, -1) or fp32 with a bf16 D. Anything else: CUBLAS_STATUS_NOT_SUPPORTED.
// Checks, with cuBLASLt's codes: a NULL or destroyed handle is CUBLAS_STATUS_NOT_INITIALIZED; NULL or destroyed
//   descriptors, shapes that do not fit (op(A) m x k, op(B) k x n, C m x n), ld < rows, a bad transpose, a missing
//   bias or aux pointer, a bad aux ld, NULL alpha/beta, a workspace smaller than the algo asks, in-place C == D with
//   ldc != ldd are CUBLAS_STATUS_INVALID_VALUE; attributes, epilogues (GELU) and types outside the subset, and
//   layouts of more than 2^31 - 1 rows, columns or ld, are CUBLAS_STATUS_NOT_SUPPORTED.
// Stream order and capture as in the emulated cuBLAS (emu_cublas.cc): the matmul is enqueued on its stream with
//   alpha and beta read at the call (host pointer mode, the only one) and operands read when it runs; it faults when
//   a handle's first matmul, or the first of a configuration (transposes, m, n, k, leading dimensions, types,
//   epilogue, aux ld, TF32), is issued into a capturing stream: cuBLASLt picks (and may load) a kernel on first use,
//   so the CUDA backend runs every configuration once before it captures. cublasLtMatmulAlgoGetHeuristic returns one
//   algorithm asking for min(the preference's maximum, 1 MiB) of workspace, a stand-in for split-K; cublasLtMatmul
//   checks the workspace it is given against that and that the algo was found for the same types and epilogue, and
//   returns CUBLAS_STATUS_NOT_SUPPORTED for an operand less aligned than the preference's MIN_ALIGNMENT_*_BYTES the
//   heuristic assumed (256 unless set).
#include <cblas.h>
#include <cublasLt.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <set>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "cuvae/bf16.h"
#include "emu_internal.h"

// What cuBLASLt picks a kernel for: transposes, m, n, k, lda, ldb, ldc, ldd, A/B type, C/D type, bias type,
// epilogue, aux ld, TF32.
using LtShape = std::tuple<int, int, int, int, int, int, int, int, int, int, int, int, unsigned, long long, bool>;

// The opaque context behind a cublasLtHandle_t.
struct cublasLtContext {
  bool used = false;        // a matmul has been issued outside capture
  std::set<LtShape> warm;   // configurations issued outside capture
};

namespace {

using cuda_emu::blas::recheck;
using cuda_emu::blas::require_device;

constexpr size_t kAlgoWorkspace = 1 << 20;
std::atomic<uint32_t> g_refused_epilogue{0};  // cuda_emu_cublaslt_refuse_epilogue's; 0: none
constexpr uint64_t kAlgoMagic = 0x656d752d616c676full;  // "emu-algo"

// The objects behind the opaque pointers (never dereferenced by callers); each is registered while alive.
struct Desc {
  int32_t compute_type, scale_type;
  int32_t pointer_mode = CUBLASLT_POINTER_MODE_HOST;
  int32_t transa = CUBLAS_OP_N, transb = CUBLAS_OP_N;
  uint32_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  const void *bias = nullptr;
  int32_t bias_type = -1;  // -1: D's type
  const void *aux = nullptr;
  int64_t aux_ld = 0;
};
struct Layout {
  int32_t type;
  uint64_t rows, cols;
  int64_t ld;
};
struct Pref {
  uint64_t max_workspace = 0;
  uint32_t min_align[4] = {256, 256, 256, 256};  // CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_{A,B,C,D}_BYTES (default 256)
};

enum class Kind { kHandle, kDesc, kLayout, kPref };
std::mutex g_mutex;
std::unordered_map<const void *, Kind> g_live;

template <class T>
T *remember(T *p, Kind kind) {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_live[p] = kind;
  return p;
}
// False when p is not a live object of that kind (NULL, destroyed, or another kind).
bool forget(const void *p, Kind kind) {
  std::lock_guard<std::mutex> lock(g_mutex);
  auto it = g_live.find(p);
  if (it == g_live.end() || it->second != kind) return false;
  g_live.erase(it);
  return true;
}
template <class T>
T *find(const void *p, Kind kind) {
  std::lock_guard<std::mutex> lock(g_mutex);
  auto it = g_live.find(p);
  return it != g_live.end() && it->second == kind ? (T *)p : nullptr;
}

// ---- attributes: (attribute, offset, size) tables read and written by memcpy ------------------------------------

struct Field {
  int attr;
  size_t offset, size;
};
#define CUVAE_FIELD(attr, type, member) {attr, offsetof(type, member), sizeof(((type *)nullptr)->member)}
const Field kDescFields[] = {
    CUVAE_FIELD(CUBLASLT_MATMUL_DESC_COMPUTE_TYPE, Desc, compute_type),
    CUVAE_FIELD(CUBLASLT_MATMUL_DESC_SCALE_TYPE, Desc, scale_type),
    CUVAE_FIELD(CUBLASLT_MATMUL_DESC_POINTER_MODE, Desc, pointer_mode),
    CUVAE_FIELD(CUBLASLT_MATMUL_DESC_TRANSA, Desc, transa),
    CUVAE_FIELD(CUBLASLT_MATMUL_DESC_TRANSB, Desc, transb),
    CUVAE_FIELD(CUBLASLT_MATMUL_DESC_EPILOGUE, Desc, epilogue),
    CUVAE_FIELD(CUBLASLT_MATMUL_DESC_BIAS_POINTER, Desc, bias),
    CUVAE_FIELD(CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, Desc, bias_type),
    CUVAE_FIELD(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, Desc, aux),
    CUVAE_FIELD(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, Desc, aux_ld),
};
const Field kPrefFields[] = {
    CUVAE_FIELD(CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, Pref, max_workspace),
    CUVAE_FIELD(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, Pref, min_align[0]),
    CUVAE_FIELD(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, Pref, min_align[1]),
    CUVAE_FIELD(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, Pref, min_align[2]),
    CUVAE_FIELD(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, Pref, min_align[3]),
};
#undef CUVAE_FIELD

// An attribute enum as an int, whatever integer the caller passed (memcpy: no load of an out-of-range enum).
template <class E>
int as_int(const E &e) {
  int v;
  static_assert(sizeof v == sizeof e, "enum size");
  memcpy(&v, &e, sizeof v);
  return v;
}

template <size_t N>
const Field *field(const Field (&table)[N], int attr) {
  for (const Field &f : table)
    if (f.attr == attr) return &f;
  return nullptr;
}

// SetAttribute: "CUBLAS_STATUS_INVALID_VALUE if buf is NULL or sizeInBytes doesn't match size of internal storage".
cublasStatus_t set_field(void *obj, const Field *f, const void *buf, size_t size) {
  if (f == nullptr) return CUBLAS_STATUS_NOT_SUPPORTED;  // an attribute outside the subset
  if (buf == nullptr || size != f->size) return CUBLAS_STATUS_INVALID_VALUE;
  memcpy((char *)obj + f->offset, buf, size);
  return CUBLAS_STATUS_SUCCESS;
}

// GetAttribute: size 0 asks for the size (into *written, which must not be NULL then); otherwise as set_field.
cublasStatus_t get_field(const void *obj, const Field *f, void *buf, size_t size, size_t *written) {
  if (f == nullptr) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (size == 0) {
    if (written == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
    *written = f->size;
    return CUBLAS_STATUS_SUCCESS;
  }
  if (buf == nullptr || size != f->size) return CUBLAS_STATUS_INVALID_VALUE;
  memcpy(buf, (const char *)obj + f->offset, size);
  if (written != nullptr) *written = size;
  return CUBLAS_STATUS_SUCCESS;
}

// ---- the problem ---------------------------------------------------------------------------------------------------

// The steps of an epilogue (see the top of the file).
struct Steps {
  bool bias, relu, aux_out, drelu, bgrad_d, bgrad_a, bgrad_b;
  bool needs_bias() const { return bias || bgrad_d || bgrad_a || bgrad_b; }
  bool needs_aux() const { return aux_out || drelu; }
};

bool steps_of(uint32_t e, Steps *s) {
  *s = Steps{};
  switch (e) {
    case CUBLASLT_EPILOGUE_DEFAULT: return true;
    case CUBLASLT_EPILOGUE_BIAS: s->bias = true; return true;
    case CUBLASLT_EPILOGUE_RELU: s->relu = true; return true;
    case CUBLASLT_EPILOGUE_RELU_BIAS: s->bias = s->relu = true; return true;
    case CUBLASLT_EPILOGUE_RELU_AUX: s->relu = s->aux_out = true; return true;
    case CUBLASLT_EPILOGUE_RELU_AUX_BIAS: s->bias = s->relu = s->aux_out = true; return true;
    case CUBLASLT_EPILOGUE_DRELU: s->drelu = true; return true;
    case CUBLASLT_EPILOGUE_DRELU_BGRAD: s->drelu = s->bgrad_d = true; return true;
    case CUBLASLT_EPILOGUE_BGRADA: s->bgrad_a = true; return true;
    case CUBLASLT_EPILOGUE_BGRADB: s->bgrad_b = true; return true;
    default: return false;  // GELU and the rest: not emulated
  }
}

struct Problem {
  int m, n, k, lda, ldb, ldc, ldd;
  cublasOperation_t ta, tb;
  cudaDataType ab, cd, bias_type;
  uint32_t epilogue;
  Steps steps;
  int64_t aux_ld;
  bool tf32;
  LtShape shape() const {
    return LtShape{ta, tb, m, n, k, lda, ldb, ldc, ldd, ab, cd, bias_type, epilogue, (long long)aux_ld, tf32};
  }
  uint64_t algo_key() const {  // what an algorithm is specific to: types and epilogue
    return (uint64_t)ab | (uint64_t)cd << 8 | (uint64_t)bias_type << 16 | (uint64_t)epilogue << 24 |
           (uint64_t)tf32 << 48;
  }
};

bool types_supported(const Layout &a, const Layout &b, const Layout &c, const Layout &d, bool fast_tf32) {
  if (a.type != b.type || c.type != d.type) return false;
  if (fast_tf32) return a.type == CUDA_R_32F && d.type == CUDA_R_32F;
  return (a.type == CUDA_R_32F && d.type == CUDA_R_32F) || (a.type == CUDA_R_16BF && d.type == CUDA_R_16BF) ||
         (a.type == CUDA_R_16BF && d.type == CUDA_R_32F);
}

bool fits_int(const Layout &l) { return l.rows <= INT32_MAX && l.cols <= INT32_MAX && l.ld >= 0 && l.ld <= INT32_MAX; }

bool valid_op(int32_t op) { return op == CUBLAS_OP_N || op == CUBLAS_OP_T || op == CUBLAS_OP_C; }

// Checks what cublasLtMatmulAlgoGetHeuristic and cublasLtMatmul share (not the data pointers) and fills *p.
cublasStatus_t validate(cublasLtHandle_t h, cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t adesc,
                        cublasLtMatrixLayout_t bdesc, cublasLtMatrixLayout_t cdesc, cublasLtMatrixLayout_t ddesc,
                        Problem *p) {
  if (find<cublasLtContext>(h, Kind::kHandle) == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  const Desc *o = find<Desc>(desc, Kind::kDesc);
  const Layout *a = find<Layout>(adesc, Kind::kLayout), *b = find<Layout>(bdesc, Kind::kLayout);
  const Layout *c = find<Layout>(cdesc, Kind::kLayout), *d = find<Layout>(ddesc, Kind::kLayout);
  if (o == nullptr || a == nullptr || b == nullptr || c == nullptr || d == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  const bool fast_tf32 = o->compute_type == CUBLAS_COMPUTE_32F_FAST_TF32;
  const int32_t bias_type = o->bias_type == -1 ? d->type : o->bias_type;
  if ((o->compute_type != CUBLAS_COMPUTE_32F && !fast_tf32) || o->scale_type != CUDA_R_32F ||
      o->pointer_mode != CUBLASLT_POINTER_MODE_HOST || !types_supported(*a, *b, *c, *d, fast_tf32) ||
      !steps_of(o->epilogue, &p->steps) ||
      (bias_type != d->type && !(bias_type == CUDA_R_32F && d->type == CUDA_R_16BF)) ||
      o->epilogue == g_refused_epilogue.load())
    return CUBLAS_STATUS_NOT_SUPPORTED;
  if (!fits_int(*a) || !fits_int(*b) || !fits_int(*c) || !fits_int(*d)) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (!valid_op(o->transa) || !valid_op(o->transb)) return CUBLAS_STATUS_INVALID_VALUE;
  p->ta = (cublasOperation_t)o->transa, p->tb = (cublasOperation_t)o->transb;
  p->m = (int)d->rows, p->n = (int)d->cols;
  p->k = p->ta == CUBLAS_OP_N ? (int)a->cols : (int)a->rows;
  const uint64_t a_m = p->ta == CUBLAS_OP_N ? a->rows : a->cols;
  const uint64_t b_k = p->tb == CUBLAS_OP_N ? b->rows : b->cols, b_n = p->tb == CUBLAS_OP_N ? b->cols : b->rows;
  if (a_m != d->rows || b_k != (uint64_t)p->k || b_n != d->cols || c->rows != d->rows || c->cols != d->cols)
    return CUBLAS_STATUS_INVALID_VALUE;
  for (const Layout *l : {a, b, c, d})
    if (l->ld < std::max<int64_t>(1, (int64_t)l->rows)) return CUBLAS_STATUS_INVALID_VALUE;
  if (p->steps.needs_aux() && (o->aux_ld < p->m || o->aux_ld <= 0 || o->aux_ld % 128 != 0))
    return CUBLAS_STATUS_INVALID_VALUE;
  p->lda = (int)a->ld, p->ldb = (int)b->ld, p->ldc = (int)c->ld, p->ldd = (int)d->ld;
  p->ab = (cudaDataType)a->type, p->cd = (cudaDataType)d->type, p->bias_type = (cudaDataType)bias_type;
  p->epilogue = o->epilogue;
  p->aux_ld = o->aux_ld;
  p->tf32 = fast_tf32 && !cuda_emu::blas::tf32_disabled_by_env();
  return CUBLAS_STATUS_SUCCESS;
}

// ---- element access -----------------------------------------------------------------------------------------------

size_t elem_bytes(cudaDataType t) { return t == CUDA_R_16BF ? 2 : 4; }

// Bytes spanned by a column-major rows x cols matrix with leading dimension ld (0 when empty).
size_t span(int rows, int cols, int ld, cudaDataType t) {
  if (rows <= 0 || cols <= 0) return 0;
  return ((size_t)(cols - 1) * (size_t)ld + (size_t)rows) * elem_bytes(t);
}

float load(const void *p, size_t i, cudaDataType t) {
  if (t == CUDA_R_16BF) {
    uint16_t h;
    memcpy(&h, (const char *)p + 2 * i, sizeof h);
    return cuvae_bf16_to_float(h);
  }
  float f;
  memcpy(&f, (const char *)p + 4 * i, sizeof f);
  return f;
}

void store(void *p, size_t i, cudaDataType t, float x) {
  if (t == CUDA_R_16BF) {
    const uint16_t h = cuvae_bf16_from_float(x);
    memcpy((char *)p + 2 * i, &h, sizeof h);
  } else {
    memcpy((char *)p + 4 * i, &x, sizeof x);
  }
}

// A packed (ld = rows) fp32 copy of a column-major matrix, TF32-rounded when asked.
std::vector<float> packed(const void *x, int rows, int cols, int ld, cudaDataType t, bool tf32) {
  std::vector<float> out((size_t)rows * cols);
  for (int j = 0; j < cols; ++j)
    for (int i = 0; i < rows; ++i) {
      const float v = load(x, (size_t)j * ld + i, t);
      out[(size_t)j * rows + i] = tf32 ? cuda_emu::blas::to_tf32(v) : v;
    }
  return out;
}

// ---- the enqueued operation ----------------------------------------------------------------------------------------

struct Matmul {
  Problem p;
  float alpha, beta;
  const void *a, *b, *c;
  void *d;
  void *bias;  // read (BIAS) or written (bias gradients)
  unsigned char *aux;

  int a_rows() const { return p.ta == CUBLAS_OP_N ? p.m : p.k; }
  int a_cols() const { return p.ta == CUBLAS_OP_N ? p.k : p.m; }
  int b_rows() const { return p.tb == CUBLAS_OP_N ? p.k : p.n; }
  int b_cols() const { return p.tb == CUBLAS_OP_N ? p.n : p.k; }
  bool reads_ab() const { return (p.k > 0 && alpha != 0.0f) || p.steps.bgrad_a || p.steps.bgrad_b; }
  size_t bias_bytes() const { return (size_t)(p.steps.bgrad_b ? p.n : p.m) * elem_bytes(p.bias_type); }
  size_t aux_bytes() const { return ((size_t)(p.n - 1) * (size_t)p.aux_ld + (size_t)p.m + 7) / 8; }

  // Calls `check` (require_device or recheck) on every range the operation touches.
  template <class F>
  void ranges(F check) const {
    const char *fn = "cublasLtMatmul";
    if (reads_ab()) {
      check(fn, "A", a, span(a_rows(), a_cols(), p.lda, p.ab));
      check(fn, "B", b, span(b_rows(), b_cols(), p.ldb, p.ab));
    }
    if (beta != 0.0f) check(fn, "C", c, span(p.m, p.n, p.ldc, p.cd));
    check(fn, "D", d, span(p.m, p.n, p.ldd, p.cd));
    if (p.steps.needs_bias()) check(fn, "the bias (CUBLASLT_MATMUL_DESC_BIAS_POINTER)", bias, bias_bytes());
    if (p.steps.needs_aux()) check(fn, "the aux mask (CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER)", aux, aux_bytes());
  }

  void operator()() const {
    ranges(recheck);
    std::vector<float> acc = beta != 0.0f ? packed(c, p.m, p.n, p.ldc, p.cd, false)
                                          : std::vector<float>((size_t)p.m * p.n, 0.0f);
    if (p.k > 0 && alpha != 0.0f) {
      const std::vector<float> fa = packed(a, a_rows(), a_cols(), p.lda, p.ab, p.tf32);
      const std::vector<float> fb = packed(b, b_rows(), b_cols(), p.ldb, p.ab, p.tf32);
      cblas_sgemm(CblasColMajor, p.ta == CUBLAS_OP_N ? CblasNoTrans : CblasTrans,
                  p.tb == CUBLAS_OP_N ? CblasNoTrans : CblasTrans, p.m, p.n, p.k, alpha, fa.data(),
                  std::max(1, a_rows()), fb.data(), std::max(1, b_rows()), beta, acc.data(), p.m);
    } else if (beta != 0.0f) {
      for (float &x : acc) x *= beta;
    }
    epilogue(acc);
    if (p.steps.bgrad_a) operand_sums(a, p.m, p.ta != CUBLAS_OP_N, p.lda);  // op(A)(i, l), l < k
    if (p.steps.bgrad_b) operand_sums(b, p.n, p.tb == CUBLAS_OP_N, p.ldb);  // op(B)(l, j), l < k
  }

  // Bias, ReLU, mask and DRELU on each element, then D (and the DRELU_BGRAD row sums) rounded to their types.
  void epilogue(const std::vector<float> &acc) const {
    const Steps &s = p.steps;
    std::vector<float> bias_in(s.bias ? p.m : 0), grad(s.bgrad_d ? p.m : 0, 0.0f);
    for (int i = 0; i < (int)bias_in.size(); ++i) bias_in[i] = load(bias, i, p.bias_type);
    for (int j = 0; j < p.n; ++j)
      for (int i = 0; i < p.m; ++i) {
        float x = acc[(size_t)j * p.m + i];
        if (s.bias) x += bias_in[i];
        const size_t bit = (size_t)j * (size_t)p.aux_ld + (size_t)i;
        const unsigned char flag = (unsigned char)(1u << (bit % 8));
        if (s.aux_out) aux[bit / 8] = x > 0.0f ? (aux[bit / 8] | flag) : (aux[bit / 8] & ~flag);
        if (s.relu) x = fmaxf(x, 0.0f);
        if (s.drelu && !(aux[bit / 8] & flag)) x = 0.0f;
        if (s.bgrad_d) grad[i] += x;
        store(d, (size_t)j * p.ldd + i, p.cd, x);
      }
    for (int i = 0; i < (int)grad.size(); ++i) store(bias, i, p.bias_type, grad[i]);
  }

  // BGRADA / BGRADB: out[r] = sum over l < k of the operand's elements (r, l) of op(A) or (l, r) of op(B); they lie
  // down column r of the stored matrix (k_down_column: op(A) = A^T, op(B) = B) or along its row r.
  void operand_sums(const void *x, int len, bool k_down_column, int ld) const {
    for (int r = 0; r < len; ++r) {
      float sum = 0.0f;
      for (int l = 0; l < p.k; ++l)
        sum += load(x, k_down_column ? (size_t)r * ld + l : (size_t)l * ld + r, p.ab);
      store(bias, r, p.bias_type, sum);
    }
  }
};

bool capturing(cudaStream_t stream) {
  cudaStream_t s;
  unsigned flags;
  return cuda_emu::streams::lookup(stream, &s, &flags) == cudaSuccess && cuda_emu::capture::active(s);
}

const char *type_name(cudaDataType t) { return t == CUDA_R_16BF ? "bf16" : "fp32"; }

// The lazy-initialisation rule (see the top of the file).
void check_warm(cublasLtContext *h, const Problem &p, cudaStream_t stream) {
  if (!capturing(stream)) {
    h->used = true;
    h->warm.insert(p.shape());
    return;
  }
  if (!h->used)
    cuda_emu::fault("cublasLtMatmul: the first matmul on cuBLASLt handle %p is issued during stream capture; "
                    "cuBLASLt picks and loads kernels on first use: run each configuration once outside the capture "
                    "first", (void *)h);
  if (!h->warm.count(p.shape()))
    cuda_emu::fault("cublasLtMatmul: first call of this configuration on handle %p (op %c%c, m %d, n %d, k %d, "
                    "lda %d, ldb %d, ldc %d, ldd %d, %s x %s -> %s, epilogue %u, aux ld %lld, %s) is issued during "
                    "stream capture; cuBLASLt picks a kernel on a configuration's first call: run it once outside "
                    "the capture first", (void *)h, p.ta == CUBLAS_OP_N ? 'N' : 'T', p.tb == CUBLAS_OP_N ? 'N' : 'T',
                    p.m, p.n, p.k, p.lda, p.ldb, p.ldc, p.ldd, type_name(p.ab), type_name(p.ab), type_name(p.cd),
                    p.epilogue, (long long)p.aux_ld, p.tf32 ? "TF32" : "FP32");
}

// The alignments an algorithm was chosen for, packed into its data[3]: log2 of each of A, B, C, D's in 4 bits.
uint64_t pack_alignments(const uint32_t (&align)[4]) {
  uint64_t packed = 0;
  for (int i = 0; i < 4; i++) {
    int log2 = 0;
    while (log2 < 15 && (2u << log2) <= align[i]) log2++;
    packed |= (uint64_t)log2 << (4 * i);
  }
  return packed;
}

// The byte alignment of an address (up to 256).
uint32_t alignment_of(const void *ptr) {
  const uintptr_t a = (uintptr_t)ptr;
  return a % 256 == 0 ? 256u : (uint32_t)(a & (~a + 1));
}

// The algorithm, workspace and alpha rules of cublasLtMatmul. An algorithm comes from a heuristic that assumed each
// operand at least as aligned as the preference's CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_*_BYTES (256 unless set: "Selecting
// a smaller value will exclude algorithms that can not work with matrix A, which is not as strictly aligned as the
// algorithms need"); an operand less aligned than that may be outside what the algorithm can read, so it is
// CUBLAS_STATUS_NOT_SUPPORTED here, whatever a GPU would do with it.
cublasStatus_t check_algo(const Problem &p, const cublasLtMatmulAlgo_t *algo, const void *workspace, size_t ws,
                          const void *const (&operands)[4]) {
  if (algo != nullptr) {
    if (algo->data[0] != kAlgoMagic) return CUBLAS_STATUS_INVALID_VALUE;  // not from the heuristic
    if (algo->data[1] != p.algo_key()) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (ws < algo->data[2]) return CUBLAS_STATUS_INVALID_VALUE;  // "less than workspace required by configured algo"
    for (int i = 0; i < 4; i++)
      if (alignment_of(operands[i]) < (1u << ((algo->data[3] >> (4 * i)) & 15))) return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  return ws > 0 && workspace == nullptr ? CUBLAS_STATUS_INVALID_VALUE : CUBLAS_STATUS_SUCCESS;
}

}  // namespace

extern "C" {

// ---- handle ------------------------------------------------------------------------------------------------------

cublasStatus_t cublasLtCreate(cublasLtHandle_t *lightHandle) {
  if (lightHandle == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  *lightHandle = remember(new cublasLtContext(), Kind::kHandle);
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtDestroy(cublasLtHandle_t lightHandle) {
  if (!forget(lightHandle, Kind::kHandle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  delete lightHandle;
  return CUBLAS_STATUS_SUCCESS;
}

const char *cublasLtGetStatusName(cublasStatus_t status) { return cublasGetStatusName(status); }
const char *cublasLtGetStatusString(cublasStatus_t status) { return cublasGetStatusString(status); }

// ---- descriptors: Destroy of NULL succeeds; of anything not live, CUBLAS_STATUS_INVALID_VALUE ---------------------

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *matmulDesc, cublasComputeType_t computeType,
                                        cudaDataType_t scaleType) {
  if (matmulDesc == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  Desc *d = new Desc();
  d->compute_type = as_int(computeType), d->scale_type = as_int(scaleType);
  *matmulDesc = reinterpret_cast<cublasLtMatmulDesc_t>(remember(d, Kind::kDesc));
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t matmulDesc) {
  if (matmulDesc == nullptr) return CUBLAS_STATUS_SUCCESS;
  if (!forget(matmulDesc, Kind::kDesc)) return CUBLAS_STATUS_INVALID_VALUE;
  delete reinterpret_cast<Desc *>(matmulDesc);
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t matmulDesc, cublasLtMatmulDescAttributes_t attr,
                                              const void *buf, size_t sizeInBytes) {
  Desc *d = find<Desc>(matmulDesc, Kind::kDesc);
  if (d == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  return set_field(d, field(kDescFields, as_int(attr)), buf, sizeInBytes);
}

cublasStatus_t cublasLtMatmulDescGetAttribute(cublasLtMatmulDesc_t matmulDesc, cublasLtMatmulDescAttributes_t attr,
                                              void *buf, size_t sizeInBytes, size_t *sizeWritten) {
  const Desc *d = find<Desc>(matmulDesc, Kind::kDesc);
  if (d == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  return get_field(d, field(kDescFields, as_int(attr)), buf, sizeInBytes, sizeWritten);
}

// Column-major (CUBLASLT_ORDER_COL, the default order) with batch count 1: the only layouts emulated.
cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *matLayout, cudaDataType type, uint64_t rows,
                                          uint64_t cols, int64_t ld) {
  if (matLayout == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  Layout *l = new Layout{as_int(type), rows, cols, ld};
  *matLayout = reinterpret_cast<cublasLtMatrixLayout_t>(remember(l, Kind::kLayout));
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t matLayout) {
  if (matLayout == nullptr) return CUBLAS_STATUS_SUCCESS;
  if (!forget(matLayout, Kind::kLayout)) return CUBLAS_STATUS_INVALID_VALUE;
  delete reinterpret_cast<Layout *>(matLayout);
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *pref) {
  if (pref == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  *pref = reinterpret_cast<cublasLtMatmulPreference_t>(remember(new Pref(), Kind::kPref));
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref) {
  if (pref == nullptr) return CUBLAS_STATUS_SUCCESS;
  if (!forget(pref, Kind::kPref)) return CUBLAS_STATUS_INVALID_VALUE;
  delete reinterpret_cast<Pref *>(pref);
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t pref,
                                                    cublasLtMatmulPreferenceAttributes_t attr, const void *buf,
                                                    size_t sizeInBytes) {
  Pref *p = find<Pref>(pref, Kind::kPref);
  if (p == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  return set_field(p, field(kPrefFields, as_int(attr)), buf, sizeInBytes);
}

cublasStatus_t cublasLtMatmulPreferenceGetAttribute(cublasLtMatmulPreference_t pref,
                                                    cublasLtMatmulPreferenceAttributes_t attr, void *buf,
                                                    size_t sizeInBytes, size_t *sizeWritten) {
  const Pref *p = find<Pref>(pref, Kind::kPref);
  if (p == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  return get_field(p, field(kPrefFields, as_int(attr)), buf, sizeInBytes, sizeWritten);
}

// ---- heuristic and matmul ----------------------------------------------------------------------------------------

// One algorithm for any supported problem ("CUBLAS_STATUS_INVALID_VALUE if requestedAlgoCount is less or equal to
// zero"; an unsupported configuration is CUBLAS_STATUS_NOT_SUPPORTED with no result).
cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t lightHandle, cublasLtMatmulDesc_t operationDesc,
                                              cublasLtMatrixLayout_t Adesc, cublasLtMatrixLayout_t Bdesc,
                                              cublasLtMatrixLayout_t Cdesc, cublasLtMatrixLayout_t Ddesc,
                                              cublasLtMatmulPreference_t preference, int requestedAlgoCount,
                                              cublasLtMatmulHeuristicResult_t heuristicResultsArray[],
                                              int *returnAlgoCount) {
  Problem p;
  const cublasStatus_t s = validate(lightHandle, operationDesc, Adesc, Bdesc, Cdesc, Ddesc, &p);
  if (s == CUBLAS_STATUS_NOT_SUPPORTED && returnAlgoCount != nullptr) *returnAlgoCount = 0;
  if (s != CUBLAS_STATUS_SUCCESS) return s;
  const Pref *pref = find<Pref>(preference, Kind::kPref);
  if (pref == nullptr || requestedAlgoCount <= 0 || heuristicResultsArray == nullptr || returnAlgoCount == nullptr)
    return CUBLAS_STATUS_INVALID_VALUE;
  cublasLtMatmulHeuristicResult_t &r = heuristicResultsArray[0];
  memset(&r, 0, sizeof r);
  r.workspaceSize = std::min<uint64_t>(pref->max_workspace, kAlgoWorkspace);
  r.algo.data[0] = kAlgoMagic, r.algo.data[1] = p.algo_key(), r.algo.data[2] = r.workspaceSize;
  r.algo.data[3] = pack_alignments(pref->min_align);
  r.state = CUBLAS_STATUS_SUCCESS;
  r.wavesCount = 1.0f;
  *returnAlgoCount = 1;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t lightHandle, cublasLtMatmulDesc_t computeDesc, const void *alpha,
                              const void *A, cublasLtMatrixLayout_t Adesc, const void *B, cublasLtMatrixLayout_t Bdesc,
                              const void *beta, const void *C, cublasLtMatrixLayout_t Cdesc, void *D,
                              cublasLtMatrixLayout_t Ddesc, const cublasLtMatmulAlgo_t *algo, void *workspace,
                              size_t workspaceSizeInBytes, cudaStream_t stream) {
  Problem p;
  cublasStatus_t s = validate(lightHandle, computeDesc, Adesc, Bdesc, Cdesc, Ddesc, &p);
  if (s != CUBLAS_STATUS_SUCCESS) return s;
  const Desc *o = find<Desc>(computeDesc, Kind::kDesc);
  if (alpha == nullptr || beta == nullptr || (p.steps.needs_bias() && o->bias == nullptr) ||
      (p.steps.needs_aux() && o->aux == nullptr) || (C == D && p.ldc != p.ldd))
    return CUBLAS_STATUS_INVALID_VALUE;
  const void *const operands[4] = {A, B, C, D};
  if ((s = check_algo(p, algo, workspace, workspaceSizeInBytes, operands)) != CUBLAS_STATUS_SUCCESS) return s;
  const Matmul op{p, *(const float *)alpha, *(const float *)beta, A, B, C, D, const_cast<void *>(o->bias),
                  (unsigned char *)const_cast<void *>(o->aux)};
  if ((p.steps.bgrad_a || p.steps.bgrad_b) && op.alpha != 1.0f)
    cuda_emu::fault("cublasLtMatmul: epilogue %s with alpha = %g: how alpha scales the bias gradient is not "
                    "documented (the emulation sums op(%c) unscaled); use alpha = 1",
                    p.steps.bgrad_a ? "BGRADA" : "BGRADB", (double)op.alpha, p.steps.bgrad_a ? 'A' : 'B');
  if (p.m == 0 || p.n == 0) return CUBLAS_STATUS_SUCCESS;
  op.ranges(require_device);
  if (workspaceSizeInBytes > 0) require_device("cublasLtMatmul", "workspace", workspace, workspaceSizeInBytes);
  check_warm(lightHandle, p, stream);
  // A launch into a destroyed stream fails like a failed kernel launch.
  return cuda_emu::enqueue(stream, "cublasLtMatmul", op) == cudaSuccess ? CUBLAS_STATUS_SUCCESS
                                                                        : CUBLAS_STATUS_EXECUTION_FAILED;
}

uint32_t cuda_emu_cublaslt_refuse_epilogue(uint32_t epilogue) { return g_refused_epilogue.exchange(epilogue); }

}  // extern "C"
