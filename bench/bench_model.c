/* cuvae-bench: FLOPs, bytes and launches of one training step from the layer shapes (see bench_model.h). */
#include "bench_model.h"

#include <stdio.h>
#include <string.h>

int bench_slot_count(const cuvae_model *m) { return BENCH_SLOT_ENC_OUT + m->n_enc + m->n_dec; }

size_t bench_slot_floats(const cuvae_model *m, int B, int slot) {
  const size_t b = (size_t)B, Z = m->latent, D = m->input_dim;
  switch (slot) {
    case BENCH_SLOT_X: return b * D;
    case BENCH_SLOT_Z: return b * Z;
    case BENCH_SLOT_DZ: return b * Z;
    case BENCH_SLOT_DMULV: return b * 2 * Z;
    case BENCH_SLOT_DLOGITS: return b * D;
    case BENCH_SLOT_GRAD_A:
    case BENCH_SLOT_GRAD_B: return b * cuvae_model_widest_output(m, 1);
    case BENCH_SLOT_PARAMS:
    case BENCH_SLOT_GRAD: return m->n_params;
    default: break;
  }
  const int i = slot - BENCH_SLOT_ENC_OUT;
  return i < m->n_enc ? b * m->enc[i].out : b * m->dec[i - m->n_enc].out;
}

/* Appends one launch that moves `floats` fp32 values (elementwise: no FLOPs counted). */
static void add_kernel(bench_step_work *w, const char *what, double floats) {
  bench_kernel *k = &w->kernels[w->n_kernels++];
  snprintf(k->what, sizeof k->what, "%s", what);
  k->flops = 0.0;
  k->bytes = 4.0 * floats;
  w->elementwise_bytes += k->bytes;
}

/* Appends a GEMM C[m,n] = op(A) op(B) (row-major cblas sense) and its launch: 2 m n k FLOPs; A, B read and C
 * written once. */
static void add_gemm(bench_step_work *w, const char *what, int ta, int tb, int m, int n, int k, int a, size_t a_off,
                     int lda, int b, size_t b_off, int ldb, int c, size_t c_off, int ldc) {
  bench_gemm *g = &w->gemms[w->n_gemms++];
  snprintf(g->what, sizeof g->what, "%s", what);
  g->trans_a = ta;
  g->trans_b = tb;
  g->m = m;
  g->n = n;
  g->k = k;
  g->a = a;
  g->b = b;
  g->c = c;
  g->a_off = a_off;
  g->b_off = b_off;
  g->c_off = c_off;
  g->lda = lda;
  g->ldb = ldb;
  g->ldc = ldc;
  bench_kernel *kn = &w->kernels[w->n_kernels++];
  snprintf(kn->what, sizeof kn->what, "%s", what);
  kn->flops = 2.0 * m * n * k;
  kn->bytes = 4.0 * ((double)m * k + (double)k * n + (double)m * n);
  w->flops += kn->flops;
  w->gemm_bytes += kn->bytes;
}

/* Forward of one dense layer: y = x W^T (GEMM), then bias + activation (reads y and b, writes y). */
static void layer_forward(bench_step_work *w, const char *name, const cuvae_layer *l, int in_slot, int out_slot) {
  const int B = w->B, in = (int)l->in, out = (int)l->out;
  char what[24];
  snprintf(what, sizeof what, "%s fwd", name);
  add_gemm(w, what, 0, 1, B, out, in, in_slot, 0, in, BENCH_SLOT_PARAMS, l->w, in, out_slot, 0, out);
  snprintf(what, sizeof what, "%s bias_act", name);
  add_kernel(w, what, 2.0 * B * out + out);
}

/* Backward of one dense layer from dy (post-activation gradient): activation backward (reads y, dy; writes dy;
 * no launch for the identity), dW = dy^T x, the bias gradient (reads dy, writes db), dx = dy W when dx_slot >= 0. */
static void layer_backward(bench_step_work *w, const char *name, const cuvae_layer *l, int in_slot, int dy_slot,
                           int dx_slot) {
  const int B = w->B, in = (int)l->in, out = (int)l->out;
  char what[24];
  if (l->act != CUVAE_ACT_NONE) {
    snprintf(what, sizeof what, "%s act bwd", name);
    add_kernel(w, what, 3.0 * B * out);
  }
  snprintf(what, sizeof what, "%s dW", name);
  add_gemm(w, what, 1, 0, out, in, B, dy_slot, 0, out, in_slot, 0, in, BENCH_SLOT_GRAD, l->w, in);
  snprintf(what, sizeof what, "%s db", name);
  add_kernel(w, what, (double)B * out + out);
  if (dx_slot >= 0) {
    snprintf(what, sizeof what, "%s dX", name);
    add_gemm(w, what, 0, 0, B, in, out, dy_slot, 0, out, BENCH_SLOT_PARAMS, l->w, in, dx_slot, 0, in);
  }
}

/* Backward through layers[n-1..0] as src/backend/cpu/vae_cpu.c's backward_stack: dy starts in GRAD_A, dx goes to the
 * other ping-pong buffer, layer 0's dx to dx0_slot (-1: none). The CPU first copies the incoming gradient into
 * GRAD_A; the replay reads it from first_dy_slot instead (same shape), so every input of a replayed GEMM is a
 * constant or written earlier in the same pass, and repeated passes compute the same values. */
static void backward_stack(bench_step_work *w, const char *prefix, const cuvae_layer *layers, int n, int out0,
                           int x0_slot, int first_dy_slot, int dx0_slot) {
  int dy = BENCH_SLOT_GRAD_A, spare = BENCH_SLOT_GRAD_B;
  char name[16];
  for (int i = n - 1; i >= 0; i--) {
    snprintf(name, sizeof name, "%s.%d", prefix, i);
    const int dx = i == 0 ? dx0_slot : spare;
    layer_backward(w, name, &layers[i], i == 0 ? x0_slot : out0 + i - 1, i == n - 1 ? first_dy_slot : dy, dx);
    spare = dy;
    dy = dx;
  }
}

void bench_step_work_build(const cuvae_model *m, int B, bench_step_work *w) {
  memset(w, 0, sizeof *w);
  w->B = B;
  const double b = B, Z = (double)m->latent, D = (double)m->input_dim, P = (double)m->n_params;
  const int enc_out0 = BENCH_SLOT_ENC_OUT, dec_out0 = BENCH_SLOT_ENC_OUT + m->n_enc;
  char name[16];

  /* eps: B*Z normals written by cuRAND; the gather reads the rows' indices and B*D inputs, writes B*D. */
  add_kernel(w, "eps (curand)", b * Z);
  add_kernel(w, "gather", 2.0 * b * D + b);
  /* Encoder forward; the last layer is the [mu | lv] head. */
  for (int i = 0; i < m->n_enc; i++) {
    snprintf(name, sizeof name, "enc.%d", i);
    layer_forward(w, name, &m->enc[i], i == 0 ? BENCH_SLOT_X : enc_out0 + i - 1, enc_out0 + i);
  }
  /* Reparameterization + KL: reads mulv [B,2Z] and eps [B,Z], writes z [B,Z] and kl_row [B]. */
  add_kernel(w, "reparam_kl fwd", 4.0 * b * Z + b);
  for (int i = 0; i < m->n_dec; i++) {
    snprintf(name, sizeof name, "dec.%d", i);
    layer_forward(w, name, &m->dec[i], i == 0 ? BENCH_SLOT_Z : dec_out0 + i - 1, dec_out0 + i);
  }
  /* Likelihood + gradient: reads output and x [B,D], writes dL/doutput [B,D] and nll_row [B]; two batch sums. */
  add_kernel(w, "nll_grad", 3.0 * b * D + b);
  add_kernel(w, "sum nll", b + 1);
  add_kernel(w, "sum kl", b + 1);
  /* Decoder backward (its last dx is dz), reparameterization + KL backward (reads mulv [B,2Z], eps and dz [B,Z],
   * writes dmulv [B,2Z]), encoder backward (the first layer's input is the data: no dx). */
  backward_stack(w, "dec", m->dec, m->n_dec, dec_out0, BENCH_SLOT_Z, BENCH_SLOT_DLOGITS, BENCH_SLOT_DZ);
  add_kernel(w, "reparam_kl bwd", 6.0 * b * Z);
  backward_stack(w, "enc", m->enc, m->n_enc, enc_out0, BENCH_SLOT_X, BENCH_SLOT_DMULV, -1);
  /* Gradient norm in two passes (256 blocks read the gradient and write 256 partials; one block sums them), the
   * finiteness guard and Adam's scalars (a few values), Adam (reads p, g, m, v; writes p, m, v). */
  add_kernel(w, "sum_squares", P + 256);
  add_kernel(w, "sum_squares final", 256 + 1);
  add_kernel(w, "step_guard", 3 + 3);
  add_kernel(w, "adam_prepare", 2 + 4);
  add_kernel(w, "adam_update", 7.0 * P);
  w->bytes = w->gemm_bytes + w->elementwise_bytes;
}

bench_roofline bench_h100_roofline(const bench_step_work *w) {
  bench_roofline r;
  const double mem_s = w->bytes / BENCH_H100_HBM_BYTES;
  const double fp32_s = w->flops / BENCH_H100_FP32_FLOPS, tf32_s = w->flops / BENCH_H100_TF32_FLOPS;
  r.fp32_s = fp32_s > mem_s ? fp32_s : mem_s;
  r.tf32_s = tf32_s > mem_s ? tf32_s : mem_s;
  r.fp32_kernel_sum_s = r.tf32_kernel_sum_s = 0.0;
  for (int i = 0; i < w->n_kernels; i++) {
    const bench_kernel *k = &w->kernels[i];
    const double kmem = k->bytes / BENCH_H100_HBM_BYTES;
    const double k32 = k->flops / BENCH_H100_FP32_FLOPS, ktf = k->flops / BENCH_H100_TF32_FLOPS;
    r.fp32_kernel_sum_s += k32 > kmem ? k32 : kmem;
    r.tf32_kernel_sum_s += ktf > kmem ? ktf : kmem;
  }
  r.launch_floor_s = w->n_kernels * BENCH_H100_LAUNCH_S;
  return r;
}
