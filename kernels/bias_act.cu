// Bias + activation of a dense layer, forward and backward, and the bias gradient. GPU twins of
// bias_act_forward_cpu, bias_act_backward_cpu and bias_grad_cpu (src/backend/cpu/bias_act_cpu.c).
// The GEMMs of the layer are cuBLAS calls in the host code; these kernels are the elementwise rest. docs/MATH.md has no
// section of its own for the dense layers (the encoder and decoder networks of section 6's models): the equations
// are written on each kernel.
#include "cuda_compat.h"

#include <stddef.h>

#include "cuvae_kernels.h"

namespace {

constexpr int kElemBlock = 256;      // elementwise kernels: threads per block
constexpr int kElemMaxGrid = 1024;   // 1024 x 256 threads ~ one full wave on A100/H100; grid-stride beyond
constexpr int kGradCols = 32;        // bias_grad: columns per block (one warp wide, coalesced row reads)
constexpr int kGradRows = 8;         // bias_grad: threads per column, each summing every 8th row
constexpr int kGradUnroll = 8;       // bias_grad: rows a thread loads before adding them
constexpr int kGradTargetBlocks = 1024;  // bias_grad: stage-1 blocks the batch split aims for
constexpr int kGradMinRows = 64;     // bias_grad: rows per slice, at least (8 per thread)

int elem_grid(size_t total) {
  const size_t blocks = (total + kElemBlock - 1) / kElemBlock;
  return blocks < (size_t)kElemMaxGrid ? (int)blocks : kElemMaxGrid;
}

// Dense layer output, bias and activation (the step after the GEMM y = x W^T of the dense layer):
//   y[r][j] = act(y[r][j] + b[j]),  act = relu (max(v, 0)), tanh, or none (identity).
// Grid-stride over the B*n elements of the row-major [B][n] matrix. Column j = i mod n is computed once per
// thread and then advanced by stride mod n (one 64-bit division per thread, not per element).
__global__ void bias_act_forward_kernel(float *y, const float *b, size_t total, int n, cuvae_activation act) {
  const size_t stride = (size_t)gridDim.x * blockDim.x;
  const size_t first = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  const unsigned cols = (unsigned)n, step_col = (unsigned)(stride % cols);  // j + step_col < 2^32
  unsigned j = (unsigned)(first % cols);
  for (size_t i = first; i < total; i += stride) {
    const float v = y[i] + b[j];
    j += step_col;
    if (j >= cols) j -= cols;
    // tanhf: the accurate CUDA tanhf (max 2 ulp), so CPU and GPU agree to a few ulp.
    y[i] = act == CUVAE_ACT_RELU ? (v > 0.0f ? v : 0.0f) : act == CUVAE_ACT_TANH ? tanhf(v) : v;
  }
}

// Backward through the activation, written through the layer's output y = act(pre):
//   relu:  dy *= [y > 0]  (dy set to 0 where y <= 0, or y is NaN, as on the CPU);
//   tanh:  dy *= 1 - y^2  (tanh' = 1 - tanh^2);   none: dy unchanged (the launcher does not launch).
// y*y is rounded on its own (__fmul_rn: nvcc may not contract it into an FMA with the subtraction), exactly as the
// CPU twin computes it: near |y| = 1 the FMA would change 1 - y^2 by far more than an ulp.
__global__ void bias_act_backward_kernel(const float *y, float *dy, size_t total, cuvae_activation act) {
  const size_t stride = (size_t)gridDim.x * blockDim.x;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
    const float yi = y[i];
    if (act == CUVAE_ACT_RELU) {
      if (!(yi > 0.0f)) dy[i] = 0.0f;
    } else {
      dy[i] *= 1.0f - __fmul_rn(yi, yi);
    }
  }
}

// The batch split of bias_grad: stage 1 runs ceil(n / 32) x slices blocks, slice s taking rows
// [s * slice_rows, min(B, (s + 1) * slice_rows)). Narrow layers have few column blocks, so the rows are split until
// about kGradTargetBlocks blocks exist, each thread keeping at least kGradMinRows / kGradRows rows, and slices * n
// partial sums fitting the scratch. A function of (B, n) alone: the summation order never depends on the device.
struct GradSplit {
  int slices, slice_rows;
};

GradSplit grad_split(int B, int n) {
  const int col_blocks = (n + kGradCols - 1) / kGradCols;
  int slices = (kGradTargetBlocks + col_blocks - 1) / col_blocks;
  const int by_rows = (B + kGradMinRows - 1) / kGradMinRows, by_scratch = CUVAE_SUM_SQUARES_PARTIALS / n;
  if (slices > by_rows) slices = by_rows;
  if (slices > by_scratch) slices = by_scratch;
  if (slices < 2) return GradSplit{1, B};
  const int rows = ((B + slices - 1) / slices + kGradRows - 1) / kGradRows * kGradRows;  // whole rounds of 8 rows
  return GradSplit{(B + rows - 1) / rows, rows};
}

// Bias gradient: db[j] = sum_r dy[r][j] (column sums of the [B][n] pre-activation gradient), stage 1.
// Blocks of kGradCols x kGradRows threads (32 x 8); blockIdx.x covers the columns, 32 per block, blockIdx.y the
// row slices. Thread (tx, ty) sums rows r0 + ty, r0 + ty + 8, ... < r1 of column blockIdx.x * 32 + tx in float, in
// row order, loading kGradUnroll rows before adding them (the same order, more loads in flight); the 8 partial sums
// of a column are then added by a fixed tree in shared memory (4, 2, 1). With one slice the column's sum goes to
// db, else to out[slice][col] for bias_grad_finish_kernel. A warp reads 32 consecutive floats of a row.
__global__ void bias_grad_kernel(const float *dy, float *out, int B, int n, int slice_rows) {
  __shared__ float partial[kGradRows][kGradCols];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int col = blockIdx.x * kGradCols + tx;
  const int r0 = blockIdx.y * slice_rows, r1 = B - r0 < slice_rows ? B : r0 + slice_rows;
  float acc = 0.0f;
  if (col < n) {
    int r = r0 + ty;
    for (; r + (kGradUnroll - 1) * kGradRows < r1; r += kGradUnroll * kGradRows) {
      float t[kGradUnroll];  // constant trip counts: nvcc unrolls both loops, t stays in registers
      for (int u = 0; u < kGradUnroll; u++) t[u] = dy[(size_t)(r + u * kGradRows) * n + col];
      for (int u = 0; u < kGradUnroll; u++) acc += t[u];
    }
    for (; r < r1; r += kGradRows) acc += dy[(size_t)r * n + col];
  }
  partial[ty][tx] = acc;
  __syncthreads();  // every thread, also those of columns >= n, reaches every barrier
  for (int half = kGradRows / 2; half > 0; half /= 2) {
    if (ty < half) partial[ty][tx] += partial[ty + half][tx];
    __syncthreads();
  }
  if (ty == 0 && col < n) out[(size_t)blockIdx.y * n + col] = partial[0][tx];
}

// Stage 2 of a split bias_grad: db[j] = sum_s part[s][j], s = 0, 1, ..., slices - 1 in order (one thread per column).
__global__ void bias_grad_finish_kernel(const float *part, float *db, int n, int slices) {
  for (int col = blockIdx.x * blockDim.x + threadIdx.x; col < n; col += gridDim.x * blockDim.x) {
    float acc = part[col];
    for (int s = 1; s < slices; s++) acc += part[(size_t)s * n + col];
    db[col] = acc;
  }
}

}  // namespace

extern "C" cudaError_t bias_act_forward_cuda(float *y, const float *b, int B, int n, cuvae_activation act,
                                             cudaStream_t stream) {
  if (!y || !b || B < 1 || n < 1 ||
      (act != CUVAE_ACT_RELU && act != CUVAE_ACT_TANH && act != CUVAE_ACT_NONE))
    return cudaErrorInvalidValue;
  const size_t total = (size_t)B * (size_t)n;
  CUVAE_LAUNCH(bias_act_forward_kernel, elem_grid(total), kElemBlock, 0, stream, y, b, total, n, act);
  return cudaGetLastError();
}

extern "C" cudaError_t bias_act_backward_cuda(const float *y, float *dy, int B, int n, cuvae_activation act,
                                              cudaStream_t stream) {
  if (!y || !dy || B < 1 || n < 1 ||
      (act != CUVAE_ACT_RELU && act != CUVAE_ACT_TANH && act != CUVAE_ACT_NONE))
    return cudaErrorInvalidValue;
  if (act == CUVAE_ACT_NONE) return cudaSuccess;  // identity: act' = 1, nothing to launch
  const size_t total = (size_t)B * (size_t)n;
  CUVAE_LAUNCH(bias_act_backward_kernel, elem_grid(total), kElemBlock, 0, stream, y, dy, total, act);
  return cudaGetLastError();
}

extern "C" cudaError_t bias_grad_cuda(const float *dy, float *db, float *scratch, int B, int n,
                                      cudaStream_t stream) {
  if (!dy || !db || !scratch || B < 1 || n < 1) return cudaErrorInvalidValue;
  const GradSplit split = grad_split(B, n);
  const dim3 grid((unsigned)((n + kGradCols - 1) / kGradCols), (unsigned)split.slices);
  float *out = split.slices > 1 ? scratch : db;
  CUVAE_LAUNCH(bias_grad_kernel, grid, dim3(kGradCols, kGradRows), 0, stream, dy, out, B, n, split.slice_rows);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess || split.slices == 1) return e;
  CUVAE_LAUNCH(bias_grad_finish_kernel, (n + kElemBlock - 1) / kElemBlock, kElemBlock, 0, stream, scratch, db, n,
               split.slices);
  return cudaGetLastError();
}
