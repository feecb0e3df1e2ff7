// cuBLAS subset of the CUDA emulation, over OpenBLAS. Implements the real prototypes of cublas_v2.h /
// cublas_api.h (the `_v2` symbols the header's macros map to), so host code compiles unchanged.
//
// What is reproduced from cuBLAS:
// - column-major storage; op(X) = X for CUBLAS_OP_N, X^T for CUBLAS_OP_T and CUBLAS_OP_C (real data);
// - argument validation with cuBLAS's status codes: a NULL or destroyed handle is CUBLAS_STATUS_NOT_INITIALIZED;
//   negative sizes, too small leading dimensions, bad enums and NULL scalars are CUBLAS_STATUS_INVALID_VALUE;
//   data/compute types other than fp32 in cublasGemmEx are CUBLAS_STATUS_NOT_SUPPORTED;
// - BLAS quick returns and scalar rules: m == 0 or n == 0 does nothing; alpha == 0 or k == 0 computes
//   C = beta * C without reading A or B; beta == 0 never reads C (NaN in C cannot leak into the result);
// - the work is ordered on the handle's stream (cuda_emu::enqueue), so it is ordered with kernels and recorded
//   into a graph while the stream is being captured; every operation captures its arguments by value;
// - pointer modes: CUBLAS_POINTER_MODE_HOST reads alpha/beta when the function is called, as cuBLAS does;
//   CUBLAS_POINTER_MODE_DEVICE reads them when the operation executes (at graph launch, under capture);
// - TF32: with CUBLAS_TF32_TENSOR_OP_MATH (cublasSgemm*) or CUBLAS_COMPUTE_32F_FAST_TF32 (cublasGemmEx) the
//   inputs A and B are rounded to TF32 (10 explicit mantissa bits, round to nearest even) before an fp32
//   multiply-accumulate, so results carry the ~2^-11 relative error a tensor core gives. NVIDIA_TF32_OVERRIDE=0
//   disables TF32 as it does for the real library.
// - operands must be device memory (cudaMalloc): a host pointer would fault on a GPU, so it is reported here
//   with cuda_emu::fault. Scalars are checked only in device pointer mode.
// - lazy initialisation: cuBLAS sets a handle up on its first use and picks a GEMM's algorithm (and may allocate)
//   on the first call of each shape, which must not happen inside stream capture. The emulation faults when a
//   handle's first operation, or a GEMM shape (entry point, transposes, m, n, k, leading dimensions, batch count,
//   TF32 or not) never run on that handle outside capture, is issued into a capturing stream: warm up first.
//
// Where the emulation differs: results are OpenBLAS's (its summation order, not cuBLAS's; both are fp32 with
// fp32 accumulation, so they agree to within k * 2^-23 * sum|a||b| per element); CUBLAS_TENSOR_OP_MATH (fp16
// down-conversion) and the BF16x9 mode compute in plain fp32; the algorithm argument of cublasGemmEx is only
// validated; pinned host memory (cudaMallocHost), which a GPU could read through unified addressing, is reported
// as not device memory (cuda_emu::is_device_range covers cudaMalloc only); there is no workspace; cublasSdot in
// host pointer mode writes its result in stream order (real cuBLAS synchronises, illegal during stream capture).
#include <cblas.h>
#include <cublas_v2.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <mutex>
#include <set>
#include <string>
#include <tuple>
#include <unordered_set>
#include <vector>

#include "emu_internal.h"

// What makes two GEMM calls one "shape" for cuBLAS's algorithm choice: entry point, transposes, m, n, k, lda,
// ldb, ldc, batch count, TF32.
using GemmShape = std::tuple<std::string, int, int, int, int, int, int, int, int, int, bool>;

// The opaque context behind a cublasHandle_t.
struct cublasContext {
  cudaStream_t stream = nullptr;  // the legacy default stream until cublasSetStream
  cublasPointerMode_t pointer_mode = CUBLAS_POINTER_MODE_HOST;
  cublasMath_t math_mode = CUBLAS_DEFAULT_MATH;
  bool used = false;              // an operation has been issued outside capture (the handle is initialised)
  std::set<GemmShape> warm;       // GEMM shapes issued outside capture
};

// The helpers the cuBLASLt subset (emu_cublaslt.cc) shares: emu_internal.h, cuda_emu::blas.
namespace cuda_emu::blas {

// Faults unless [p, p + bytes) lies in one device allocation: on a GPU the kernel would hit an illegal address.
void require_device(const char *fn, const char *what, const void *p, size_t bytes) {
  if (bytes != 0 && !cuda_emu::is_device_range(p, bytes))
    cuda_emu::fault("%s: %s = %p (%zu bytes) is not device memory (cudaMalloc); a GPU would fault on it", fn,
                    what, p, bytes);
}

// At execution: a range checked at the call must still be allocated (a graph launched after cudaFree).
void recheck(const char *fn, const char *what, const void *p, size_t bytes) {
  if (bytes != 0 && !cuda_emu::is_device_range(p, bytes))
    cuda_emu::fault("%s: %s = %p (%zu bytes) is no longer allocated when the operation runs (freed after it was "
                    "captured?)", fn, what, p, bytes);
}

// Rounds to TF32 (8-bit exponent, 10-bit mantissa), round to nearest even; Inf and NaN pass unchanged.
float to_tf32(float x) {
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  if ((u & 0x7f800000u) == 0x7f800000u) return x;
  u += 0x0fffu + ((u >> 13) & 1u);  // carries into the exponent when needed (up to Inf, like a real rounding)
  u &= 0xffffe000u;
  memcpy(&x, &u, sizeof x);
  return x;
}

// NVIDIA_TF32_OVERRIDE=0 turns TF32 off, as it does for the real cuBLAS and cuBLASLt.
bool tf32_disabled_by_env() {
  const char *v = getenv("NVIDIA_TF32_OVERRIDE");
  return v != nullptr && strcmp(v, "0") == 0;
}

}  // namespace cuda_emu::blas

namespace {

using cuda_emu::blas::recheck;
using cuda_emu::blas::require_device;
using cuda_emu::blas::tf32_disabled_by_env;
using cuda_emu::blas::to_tf32;

// Live handles, so a destroyed handle is reported as CUBLAS_STATUS_NOT_INITIALIZED instead of being used.
std::mutex g_handles_mutex;
std::unordered_set<cublasHandle_t> g_handles;

bool live(cublasHandle_t h) {
  std::lock_guard<std::mutex> lock(g_handles_mutex);
  return h != nullptr && g_handles.count(h) != 0;
}

// A caller may pass any integer as an operation, as to the real cuBLAS: read it as an int (memcpy), since loading an
// enum object that holds no enumerator's value is undefined (UBSan's -fsanitize=enum reports it).
bool valid_op(const cublasOperation_t *op) {
  int v;
  memcpy(&v, op, sizeof v);
  return v == CUBLAS_OP_N || v == CUBLAS_OP_T || v == CUBLAS_OP_C;
}

CBLAS_TRANSPOSE to_cblas(cublasOperation_t op) { return op == CUBLAS_OP_N ? CblasNoTrans : CblasTrans; }

// A scalar argument (alpha, beta): its value, read at call time in host pointer mode, or its address, read when
// the operation executes in device pointer mode.
struct Scalar {
  float value = 0.0f;
  const float *device = nullptr;
  float get() const { return device ? *device : value; }
};

Scalar read_scalar(const cublasContext *h, const char *fn, const char *what, const float *p) {
  Scalar s;
  if (h->pointer_mode == CUBLAS_POINTER_MODE_DEVICE) {
    require_device(fn, what, p, sizeof(float));
    s.device = p;
  } else {
    s.value = *p;
  }
  return s;
}

// Bytes spanned by a column-major rows x cols matrix with leading dimension ld (0 when empty).
size_t matrix_bytes(int rows, int cols, int ld) {
  if (rows <= 0 || cols <= 0) return 0;
  return ((size_t)(cols - 1) * (size_t)ld + (size_t)rows) * sizeof(float);
}

// Bytes spanned by a vector of n elements with increment inc (BLAS convention: the lowest address is passed
// whatever the sign of inc).
size_t vector_bytes(int n, int inc) {
  if (n <= 0) return 0;
  return ((size_t)(n - 1) * (size_t)std::abs((long)inc) + 1) * sizeof(float);
}

// A packed (ld = rows) TF32-rounded copy of a column-major matrix.
std::vector<float> tf32_copy(const float *x, int rows, int cols, int ld) {
  std::vector<float> out((size_t)rows * cols);
  for (int j = 0; j < cols; ++j)
    for (int i = 0; i < rows; ++i) out[(size_t)j * rows + i] = to_tf32(x[(size_t)j * ld + i]);
  return out;
}

// C = beta * C over the m x n region; beta == 0 writes zeros without reading C, beta == 1 touches nothing.
void scale_matrix(float *c, int m, int n, int ldc, float beta) {
  if (beta == 1.0f) return;
  for (int j = 0; j < n; ++j) {
    float *col = c + (size_t)j * ldc;
    if (beta == 0.0f)
      std::fill(col, col + m, 0.0f);
    else
      for (int i = 0; i < m; ++i) col[i] *= beta;
  }
}

// One validated GEMM, executed in stream order. Everything is held by value.
struct Gemm {
  const char *fn;
  cublasOperation_t transa, transb;
  int m, n, k;
  Scalar alpha, beta;
  const float *a;
  int lda;
  long long stride_a;
  const float *b;
  int ldb;
  long long stride_b;
  float *c;
  int ldc;
  long long stride_c;
  int batch_count;
  bool tf32;

  void operator()() const {
    if (alpha.device) recheck(fn, "alpha", alpha.device, sizeof(float));
    if (beta.device) recheck(fn, "beta", beta.device, sizeof(float));
    const float al = alpha.get(), be = beta.get();
    for (int i = 0; i < batch_count; ++i) {
      if (al != 0.0f && k > 0) {
        recheck(fn, "A", a + i * stride_a, a_bytes());
        recheck(fn, "B", b + i * stride_b, b_bytes());
      }
      recheck(fn, "C", c + i * stride_c, matrix_bytes(m, n, ldc));
      one(a + i * stride_a, b + i * stride_b, c + i * stride_c, al, be);
    }
  }

  size_t a_bytes() const { return transa == CUBLAS_OP_N ? matrix_bytes(m, k, lda) : matrix_bytes(k, m, lda); }
  size_t b_bytes() const { return transb == CUBLAS_OP_N ? matrix_bytes(k, n, ldb) : matrix_bytes(n, k, ldb); }

  void one(const float *a_i, const float *b_i, float *c_i, float al, float be) const {
    if (al == 0.0f || k == 0) {  // cuBLAS/BLAS: A and B are not read
      scale_matrix(c_i, m, n, ldc, be);
      return;
    }
    if (be == 0.0f) scale_matrix(c_i, m, n, ldc, 0.0f);  // C is not read: clear any NaN before OpenBLAS sees it
    const int a_rows = transa == CUBLAS_OP_N ? m : k, a_cols = transa == CUBLAS_OP_N ? k : m;
    const int b_rows = transb == CUBLAS_OP_N ? k : n, b_cols = transb == CUBLAS_OP_N ? n : k;
    std::vector<float> a_tf32, b_tf32;
    int lda_used = lda, ldb_used = ldb;
    if (tf32) {
      a_tf32 = tf32_copy(a_i, a_rows, a_cols, lda);
      b_tf32 = tf32_copy(b_i, b_rows, b_cols, ldb);
      a_i = a_tf32.data();
      b_i = b_tf32.data();
      lda_used = a_rows;
      ldb_used = b_rows;
    }
    cblas_sgemm(CblasColMajor, to_cblas(transa), to_cblas(transb), m, n, k, al, a_i, lda_used, b_i, ldb_used, be,
                c_i, ldc);
  }
};

// Whether the handle's stream is being captured (an unknown stream is not: enqueue reports it).
bool capturing(const cublasContext *h) {
  cudaStream_t s;
  unsigned flags;
  return cuda_emu::streams::lookup(h->stream, &s, &flags) == cudaSuccess && cuda_emu::capture::active(s);
}

cublasStatus_t enqueue(cublasContext *h, const char *what, std::function<void()> op) {
  if (!capturing(h))
    h->used = true;
  else if (!h->used)
    cuda_emu::fault("%s: the first operation of cuBLAS handle %p is issued during stream capture; cuBLAS "
                    "initialises a handle lazily (it may allocate then): use it once outside the capture first",
                    what, (void *)h);
  // A launch into a destroyed stream fails like a failed kernel launch.
  return cuda_emu::enqueue(h->stream, what, std::move(op)) == cudaSuccess ? CUBLAS_STATUS_SUCCESS
                                                                           : CUBLAS_STATUS_EXECUTION_FAILED;
}

// The cublasSgemm family: validation, quick return, then the enqueued Gemm.
cublasStatus_t gemm(const char *fn, cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                    int m, int n, int k, const float *alpha, const float *A, int lda, long long stride_a,
                    const float *B, int ldb, long long stride_b, const float *beta, float *C, int ldc,
                    long long stride_c, int batch_count, bool tf32) {
  if (!live(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (!valid_op(&transa) || !valid_op(&transb) || m < 0 || n < 0 || k < 0 || batch_count < 0)
    return CUBLAS_STATUS_INVALID_VALUE;
  const int a_rows = transa == CUBLAS_OP_N ? m : k, b_rows = transb == CUBLAS_OP_N ? k : n;
  if (lda < std::max(1, a_rows) || ldb < std::max(1, b_rows) || ldc < std::max(1, m))
    return CUBLAS_STATUS_INVALID_VALUE;
  if (alpha == nullptr || beta == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  if (m == 0 || n == 0 || batch_count == 0) return CUBLAS_STATUS_SUCCESS;

  Gemm g{fn, transa, transb, m, n, k, {}, {}, A, lda, stride_a, B, ldb, stride_b, C, ldc, stride_c, batch_count,
         tf32 && !tf32_disabled_by_env()};
  g.alpha = read_scalar(handle, fn, "alpha", alpha);
  g.beta = read_scalar(handle, fn, "beta", beta);
  for (int i = 0; i < batch_count; ++i) {
    // A and B are only dereferenced when k > 0 (alpha is unknown until execution in device pointer mode).
    if (k > 0) {
      require_device(fn, "A", A + i * stride_a, g.a_bytes());
      require_device(fn, "B", B + i * stride_b, g.b_bytes());
    }
    require_device(fn, "C", C + i * stride_c, matrix_bytes(m, n, ldc));
  }
  const GemmShape shape{fn, transa, transb, m, n, k, lda, ldb, ldc, batch_count, g.tf32};
  if (!capturing(handle))
    handle->warm.insert(shape);
  else if (handle->used && !handle->warm.count(shape))
    cuda_emu::fault("%s: first call of this shape on handle %p (op %c%c, m %d, n %d, k %d, lda %d, ldb %d, ldc %d, "
                    "batch %d, %s) is issued during stream capture; cuBLAS picks a GEMM's algorithm on its first "
                    "call: run the shape once outside the capture first", fn, (void *)handle,
                    transa == CUBLAS_OP_N ? 'N' : 'T', transb == CUBLAS_OP_N ? 'N' : 'T', m, n, k, lda, ldb, ldc,
                    batch_count, g.tf32 ? "TF32" : "FP32");
  return enqueue(handle, fn, g);
}

// Single-precision routines use TF32 tensor cores under CUBLAS_TF32_TENSOR_OP_MATH (ignoring the
// CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION flag bit).
bool sgemm_uses_tf32(cublasHandle_t h) {
  return live(h) && (h->math_mode & 0xf) == CUBLAS_TF32_TENSOR_OP_MATH;
}

}  // namespace

extern "C" {

// ---- handle and settings ------------------------------------------------------------------------------------

cublasStatus_t cublasCreate_v2(cublasHandle_t *handle) {
  if (handle == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  cublasHandle_t h = new cublasContext();
  std::lock_guard<std::mutex> lock(g_handles_mutex);
  g_handles.insert(h);
  *handle = h;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy_v2(cublasHandle_t handle) {
  {
    std::lock_guard<std::mutex> lock(g_handles_mutex);
    if (handle == nullptr || g_handles.erase(handle) == 0) return CUBLAS_STATUS_NOT_INITIALIZED;
  }
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}

// Like cuBLAS, the stream is not validated here; work enqueued on a destroyed stream fails at the call.
cublasStatus_t cublasSetStream_v2(cublasHandle_t handle, cudaStream_t stream) {
  if (!live(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->stream = stream;
  return CUBLAS_STATUS_SUCCESS;
}

// The emulated GEMMs need no workspace; like cuBLAS, a user workspace must be device memory (or NULL with size 0).
cublasStatus_t cublasSetWorkspace_v2(cublasHandle_t handle, void *workspace, size_t workspaceSizeInBytes) {
  if (!live(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (workspaceSizeInBytes && !cuda_emu::is_device_range(workspace, workspaceSizeInBytes))
    return CUBLAS_STATUS_INVALID_VALUE;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetStream_v2(cublasHandle_t handle, cudaStream_t *stream) {
  if (!live(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (stream == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  *stream = handle->stream;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetPointerMode_v2(cublasHandle_t handle, cublasPointerMode_t mode) {
  if (!live(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (mode != CUBLAS_POINTER_MODE_HOST && mode != CUBLAS_POINTER_MODE_DEVICE) return CUBLAS_STATUS_INVALID_VALUE;
  handle->pointer_mode = mode;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetPointerMode_v2(cublasHandle_t handle, cublasPointerMode_t *mode) {
  if (!live(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (mode == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  *mode = handle->pointer_mode;
  return CUBLAS_STATUS_SUCCESS;
}

// Accepts the modes of cublasMath_t, optionally with CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION.
cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
  if (!live(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  const unsigned base = (unsigned)mode & ~(unsigned)CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION;
  switch (base) {
    case CUBLAS_DEFAULT_MATH:
    case CUBLAS_TENSOR_OP_MATH:
    case CUBLAS_PEDANTIC_MATH:
    case CUBLAS_TF32_TENSOR_OP_MATH:
    case CUBLAS_FP32_EMULATED_BF16X9_MATH:
    case CUBLAS_FP64_EMULATED_FIXEDPOINT_MATH:
      handle->math_mode = mode;
      return CUBLAS_STATUS_SUCCESS;
    default:
      return CUBLAS_STATUS_INVALID_VALUE;
  }
}

cublasStatus_t cublasGetMathMode(cublasHandle_t handle, cublasMath_t *mode) {
  if (!live(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (mode == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  *mode = handle->math_mode;
  return CUBLAS_STATUS_SUCCESS;
}

// The names and messages of libcublas 13.
const char *cublasGetStatusName(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
  }
  return "unrecognized status";
}

const char *cublasGetStatusString(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "the library was not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "the resource allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE: return "an unsupported value or parameter was passed to the function";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "the function requires an architectural feature absent from the device";
    case CUBLAS_STATUS_MAPPING_ERROR: return "an access to GPU memory space failed";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "the function failed to launch on the GPU";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "an internal operation failed";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "the requested functionality is not supported";
    case CUBLAS_STATUS_LICENSE_ERROR: return "the license check failed";
  }
  return "unknown error";
}

// ---- level 3 --------------------------------------------------------------------------------------------------

cublasStatus_t cublasSgemm_v2(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m,
                              int n, int k, const float *alpha, const float *A, int lda, const float *B, int ldb,
                              const float *beta, float *C, int ldc) {
  return gemm("cublasSgemm", handle, transa, transb, m, n, k, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1,
              sgemm_uses_tf32(handle));
}

// Batches run in order; strides are not validated (as in cuBLAS, overlapping C batches are the caller's bug).
cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                                         int m, int n, int k, const float *alpha, const float *A, int lda,
                                         long long int strideA, const float *B, int ldb, long long int strideB,
                                         const float *beta, float *C, int ldc, long long int strideC,
                                         int batchCount) {
  return gemm("cublasSgemmStridedBatched", handle, transa, transb, m, n, k, alpha, A, lda, strideA, B, ldb,
              strideB, beta, C, ldc, strideC, batchCount, sgemm_uses_tf32(handle));
}

// fp32 only: A, B and C of type CUDA_R_32F with compute type CUBLAS_COMPUTE_32F (TF32 when the math mode asks
// for it), CUBLAS_COMPUTE_32F_PEDANTIC (never TF32) or CUBLAS_COMPUTE_32F_FAST_TF32 (always TF32). The legacy
// overload taking a cudaDataType compute type is an inline wrapper in cublas_api.h that maps CUDA_R_32F to
// CUBLAS_COMPUTE_32F (or _PEDANTIC under CUBLAS_PEDANTIC_MATH). Every other combination, including the mixed
// fp16/bf16 ones real cuBLAS supports, returns CUBLAS_STATUS_NOT_SUPPORTED.
cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n,
                            int k, const void *alpha, const void *A, cudaDataType Atype, int lda, const void *B,
                            cudaDataType Btype, int ldb, const void *beta, void *C, cudaDataType Ctype, int ldc,
                            cublasComputeType_t computeType, cublasGemmAlgo_t algo) {
  if (!live(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  const bool algo_known = algo == CUBLAS_GEMM_DEFAULT || (algo >= CUBLAS_GEMM_ALGO0 && algo <= CUBLAS_GEMM_ALGO23) ||
                          (algo >= CUBLAS_GEMM_DEFAULT_TENSOR_OP && algo <= CUBLAS_GEMM_ALGO15_TENSOR_OP) ||
                          algo == CUBLAS_GEMM_AUTOTUNE;
  if (Atype != CUDA_R_32F || Btype != CUDA_R_32F || Ctype != CUDA_R_32F || !algo_known)
    return CUBLAS_STATUS_NOT_SUPPORTED;
  bool tf32;
  switch (computeType) {
    case CUBLAS_COMPUTE_32F: tf32 = sgemm_uses_tf32(handle); break;
    case CUBLAS_COMPUTE_32F_PEDANTIC: tf32 = false; break;
    case CUBLAS_COMPUTE_32F_FAST_TF32: tf32 = true; break;
    default: return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  return gemm("cublasGemmEx", handle, transa, transb, m, n, k, static_cast<const float *>(alpha),
              static_cast<const float *>(A), lda, 0, static_cast<const float *>(B), ldb, 0,
              static_cast<const float *>(beta), static_cast<float *>(C), ldc, 0, 1, tf32);
}

// ---- level 2 --------------------------------------------------------------------------------------------------

// y = alpha * op(A) x + beta * y; op(A) is m x n (N) or n x m (T). alpha == 0 does not read A or x; beta == 0
// does not read y.
cublasStatus_t cublasSgemv_v2(cublasHandle_t handle, cublasOperation_t trans, int m, int n, const float *alpha,
                              const float *A, int lda, const float *x, int incx, const float *beta, float *y,
                              int incy) {
  const char *fn = "cublasSgemv";
  if (!live(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (!valid_op(&trans) || m < 0 || n < 0 || lda < std::max(1, m) || incx == 0 || incy == 0 || alpha == nullptr ||
      beta == nullptr)
    return CUBLAS_STATUS_INVALID_VALUE;
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
  const int len_x = trans == CUBLAS_OP_N ? n : m, len_y = trans == CUBLAS_OP_N ? m : n;
  const Scalar al = read_scalar(handle, fn, "alpha", alpha), be = read_scalar(handle, fn, "beta", beta);
  require_device(fn, "A", A, matrix_bytes(m, n, lda));
  require_device(fn, "x", x, vector_bytes(len_x, incx));
  require_device(fn, "y", y, vector_bytes(len_y, incy));
  return enqueue(handle, fn, [=] {
    const float a = al.get(), b = be.get();
    const size_t step = (size_t)std::abs((long)incy);
    if (b != 1.0f)  // y = beta * y over all len_y elements, never reading y when beta == 0
      for (int i = 0; i < len_y; ++i) y[i * step] = b == 0.0f ? 0.0f : y[i * step] * b;
    if (a != 0.0f) cblas_sgemv(CblasColMajor, to_cblas(trans), m, n, a, A, lda, x, incx, 1.0f, y, incy);
  });
}

// ---- level 1 --------------------------------------------------------------------------------------------------

// y += alpha * x (BLAS: n <= 0 or alpha == 0 returns at once).
cublasStatus_t cublasSaxpy_v2(cublasHandle_t handle, int n, const float *alpha, const float *x, int incx, float *y,
                              int incy) {
  const char *fn = "cublasSaxpy";
  if (!live(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (alpha == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  if (n <= 0) return CUBLAS_STATUS_SUCCESS;
  const Scalar al = read_scalar(handle, fn, "alpha", alpha);
  require_device(fn, "x", x, vector_bytes(n, incx));
  require_device(fn, "y", y, vector_bytes(n, incy));
  return enqueue(handle, fn, [=] {
    const float a = al.get();
    if (a != 0.0f) cblas_saxpy(n, a, x, incx, y, incy);
  });
}

// x *= alpha (BLAS: n <= 0 or incx <= 0 returns at once). A plain IEEE product: alpha == 0 keeps NaN as NaN.
cublasStatus_t cublasSscal_v2(cublasHandle_t handle, int n, const float *alpha, float *x, int incx) {
  const char *fn = "cublasSscal";
  if (!live(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (alpha == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  if (n <= 0 || incx <= 0) return CUBLAS_STATUS_SUCCESS;
  const Scalar al = read_scalar(handle, fn, "alpha", alpha);
  require_device(fn, "x", x, vector_bytes(n, incx));
  return enqueue(handle, fn, [=] {
    const float a = al.get();
    for (int i = 0; i < n; ++i) x[(size_t)i * incx] *= a;
  });
}

// *result = x . y, written to host or device memory according to the pointer mode; n <= 0 gives 0.
cublasStatus_t cublasSdot_v2(cublasHandle_t handle, int n, const float *x, int incx, const float *y, int incy,
                             float *result) {
  const char *fn = "cublasSdot";
  if (!live(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (result == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  if (handle->pointer_mode == CUBLAS_POINTER_MODE_DEVICE) require_device(fn, "result", result, sizeof(float));
  require_device(fn, "x", x, vector_bytes(n, incx));
  require_device(fn, "y", y, vector_bytes(n, incy));
  const cublasStatus_t s = enqueue(handle, fn, [=] { *result = n <= 0 ? 0.0f : cblas_sdot(n, x, incx, y, incy); });
  // A result in host memory is there when the call returns (cuBLAS waits): the deferred mode runs the stream.
  if (s == CUBLAS_STATUS_SUCCESS && handle->pointer_mode == CUBLAS_POINTER_MODE_HOST)
    cuda_emu::async::drain(handle->stream);
  return s;
}

}  // extern "C"
