/* cuvae-bench: the work of one training step, counted from the layer shapes of a cuvae_model.
 *
 * GEMMs: exactly the cblas_sgemm calls of the CPU backend (src/backend/cpu/dense_cpu.c, in the order of
 * src/backend/cpu/vae_cpu.c), written in row-major cblas terms; the CUDA backend issues the same products through the
 * column-major identity (src/backend/cuda/backend_cuda.c). Per dense layer of shape in -> out at batch B:
 *   forward  y[B,out]  = x[B,in] W^T          (NoTrans, Trans)   2*B*in*out FLOPs
 *   dW[out,in]         = dy^T x               (Trans, NoTrans)   2*B*in*out
 *   dx[B,in]           = dy W                 (NoTrans, NoTrans) 2*B*in*out, not for the first encoder layer.
 * Kernels: every launch of the CUDA step (src/backend/cuda/backend_cuda.c, step_body, plus the eps draw), each with the bytes
 * it moves: a GEMM reads its two inputs and writes its output once; an elementwise kernel reads and writes each
 * of its arrays once; all fp32. Elementwise FLOPs are not counted (they are tiny next to their bytes). */
#ifndef CUVAE_BENCH_MODEL_H
#define CUVAE_BENCH_MODEL_H
#include <stddef.h>

#include "cuvae/model.h"

/* Buffers the replayed GEMMs read and write ("slots"), mirroring the CPU backend's workspace. Slots from
 * BENCH_SLOT_ENC_OUT on are the layer outputs: enc_out[0..n_enc), then dec_out[0..n_dec). */
enum {
  BENCH_SLOT_X = 0,       /* the gathered batch [B, D] */
  BENCH_SLOT_Z,           /* z [B, Z] (written by the reparameterization, read by the decoder) */
  BENCH_SLOT_DZ,          /* dL/dz [B, Z] */
  BENCH_SLOT_DMULV,       /* dL/d[mu | lv] [B, 2Z]: the encoder backward's first dy */
  BENCH_SLOT_DLOGITS,     /* dL/d(decoder output) [B, D]: the decoder backward's first dy */
  BENCH_SLOT_GRAD_A,      /* ping-pong activation gradients [B, widest layer] */
  BENCH_SLOT_GRAD_B,
  BENCH_SLOT_PARAMS,      /* n_params, the model's layout */
  BENCH_SLOT_GRAD,        /* n_params */
  BENCH_SLOT_ENC_OUT
};

typedef struct bench_gemm {
  char what[24];          /* e.g. "enc.0 fwd", "dec.1 dW" */
  int trans_a, trans_b;   /* row-major cblas sense: 1 = transposed */
  int m, n, k;            /* C[m,n] = op(A)[m,k] op(B)[k,n] */
  int a, b, c;            /* slots */
  size_t a_off, b_off, c_off;  /* offsets in floats into the slots */
  int lda, ldb, ldc;
} bench_gemm;

typedef struct bench_kernel {
  char what[24];
  double flops;           /* GEMMs only */
  double bytes;
} bench_kernel;

#define BENCH_MAX_GEMMS (6 * CUVAE_MAX_LAYERS)
#define BENCH_MAX_KERNELS (12 * CUVAE_MAX_LAYERS + 16)

typedef struct bench_step_work {
  int B;
  int n_gemms;
  bench_gemm gemms[BENCH_MAX_GEMMS];
  int n_kernels;          /* = kernel launches per step (GEMMs included) */
  bench_kernel kernels[BENCH_MAX_KERNELS];
  double flops;           /* sum over GEMMs of 2 m n k */
  double gemm_bytes, elementwise_bytes, bytes;
} bench_step_work;

/* Fills w for model m at batch B. */
void bench_step_work_build(const cuvae_model *m, int B, bench_step_work *w);
/* Number of slots and the size of one, in floats. */
int bench_slot_count(const cuvae_model *m);
size_t bench_slot_floats(const cuvae_model *m, int B, int slot);

/* The H100 SXM figures the roofline uses (datasheet peaks, not measurements). */
#define BENCH_H100_FP32_FLOPS 67e12      /* FP32, CUDA cores (no tensor cores) */
#define BENCH_H100_TF32_FLOPS 495e12     /* TF32 tensor cores, dense (no sparsity) */
#define BENCH_H100_HBM_BYTES 3.35e12     /* HBM3 bandwidth, bytes/s */
#define BENCH_H100_LAUNCH_S 2.5e-6       /* assumed cost of one kernel in a replayed CUDA graph */

typedef struct bench_roofline {
  double fp32_s, tf32_s;                 /* max(FLOPs / peak, bytes / bandwidth) over the whole step */
  double fp32_kernel_sum_s, tf32_kernel_sum_s;  /* the same bound per kernel, summed (kernels run one by one) */
  double launch_floor_s;                 /* launches x BENCH_H100_LAUNCH_S */
} bench_roofline;

bench_roofline bench_h100_roofline(const bench_step_work *w);

#endif
