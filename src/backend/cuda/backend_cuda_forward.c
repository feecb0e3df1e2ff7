/* The CUDA backend's forward pass (src/backend/cuda/backend_cuda.c holds the backward pass, the step and the state): the twin of
 * cuvae_cpu_latent_objective_grad's forward half in src/backend/cpu/vae_cpu.c, kernel for kernel, for every objective of
 * the model family (elbo with L samples and analytic or sampled KL, iwae, ae) and every decoder likelihood. */
#include <cublasLt.h>
#include <cuda_runtime_api.h>
#include <curand.h>

#include "backend.h"
#include "backend_cuda_internal.h"
#include "cuda_check.h"
#include "cuvae/error.h"
#include "cuvae/rng.h"
#include "cuvae_kernels.h"

int cuda_noise_fill(cuda_backend *be, dev_noise *g, uint64_t offset, size_t n, float *dst, int uniform) {
  const size_t len = (size_t)cuvae_noise_stride(n);  /* whole Philox blocks, as the CPU stream draws */
  if (!g->pos_known || g->pos != offset) {
    g->pos_known = 0;
    CURAND_CHECK(curandSetGeneratorOffset(g->gen, offset));
  }
  if (uniform)
    CURAND_LAUNCH(be, curandGenerateUniform(g->gen, dst, len));
  else
    CURAND_LAUNCH(be, curandGenerateNormal(g->gen, dst, len, 0.0f, 1.0f));
  g->pos = offset + len;
  g->pos_known = 1;
  return 0;
}

int cuda_noise_draw(cuda_backend *be, dev_noise *g, uint64_t offset, size_t n) {
  return cuda_noise_fill(be, g, offset, n, be->eps, 0);
}

/* Free bits' gate and floor over the global batch of Bt rows (docs/MATH.md (3.4)): one kernel in one process; with
 * several ranks this slice's column sums, added over the ranks (NCCL, in rank order under the emulation), then the
 * gate. */
static int free_bits_gate(cuda_backend *be, const float *mulv, int B, int Z, int Bt, float lambda) {
  if (!be->nccl) {
    CU_LAUNCH(be, free_bits_forward_cuda(mulv, B, Z, Bt, lambda, be->fb_gate, be->fb_floor, be->stream));
    return 0;
  }
  CU_LAUNCH(be, free_bits_sums_cuda(mulv, B, Z, be->fb_sums, be->stream));
  if (cuda_dp_sum_doubles(be, be->fb_sums, (size_t)Z)) return -1;
  CU_LAUNCH(be, free_bits_gate_cuda(be->fb_sums, Z, Bt, lambda, be->fb_gate, be->fb_floor, be->stream));
  return 0;
}

/* Layer i of stack s, column-major (backend_cuda.c): Yc[out, B] = Wc^T Xc, Wc = W^T (in x out, ld in), Xc (in x B),
 * with the bias and activation fused where cuBLASLt has the epilogue (docs/MATH.md (8.2) in bf16):
 *   ReLU:  RELU_AUX_BIAS: y = max(acc + b, 0) and the mask (acc + b > 0) for the backward; in bf16 the epilogue
 *          writes bf16(y) only, the next GEMM's operand (one rounding of the fp32 y, as to_bf16_cpu of the CPU's y);
 *   none:  BIAS: y = acc + b (the heads, the output layer: fp32, read by the fused kernels);
 *   tanh:  the GEMM, then bias_act_forward_cuda (no tanh epilogue), then in bf16 to_bf16_cuda of y.
 * With separate epilogues (cuda_choose_epilogues) every activation takes the tanh layer's way: the same fp32 sums,
 * and no mask (the backward reads y). */
int cuda_dense_forward(cuda_backend *be, const cuda_stack *s, int i, const float *x, int B) {
  const cuvae_layer *l = &s->layers[i];
  const int bf16 = be->cfg->precision == CUVAE_PRECISION_BF16, top = i == s->n - 1;
  const int fused = !be->separate_epilogues;
  const int in = (int)l->in, out = (int)l->out;
  cuda_gemm g = {.ta = CUBLAS_OP_T, .tb = CUBLAS_OP_N, .m = out, .n = B, .k = in, .lda = in, .ldb = in, .ldd = out,
                 .d = s->out[i], .epilogue = CUBLASLT_EPILOGUE_DEFAULT};
  if (bf16) {
    g.a = be->w16 + l->w;
    g.b = i == 0 ? s->in16 : s->out16[i - 1];
  } else {
    g.a = be->params + l->w;
    g.b = i == 0 ? x : s->out[i - 1];
  }
  if (fused && l->act == CUVAE_ACT_RELU) {
    g.epilogue = CUBLASLT_EPILOGUE_RELU_AUX_BIAS;
    g.bias = be->params + l->b;
    g.aux = s->mask[i];
    g.aux_ld = cuda_mask_ld(l->out);
    if (bf16 && !top) {
      g.d = s->out16[i];
      g.d_bf16 = 1;
    }
  } else if (fused && l->act == CUVAE_ACT_NONE) {
    g.epilogue = CUBLASLT_EPILOGUE_BIAS;
    g.bias = be->params + l->b;
  }
  if (cuda_gemm_run(be, &g)) return -1;
  if (g.epilogue == CUBLASLT_EPILOGUE_DEFAULT)
    CU_LAUNCH(be, bias_act_forward_cuda(s->out[i], be->params + l->b, B, out, l->act, be->stream));
  if (bf16 && !top && !g.d_bf16)
    CU_LAUNCH(be, to_bf16_cuda(s->out[i], s->out16[i], (size_t)B * out, be->stream));
  return 0;
}

int cuda_stack_forward(cuda_backend *be, const cuda_stack *s, const float *x, int B) {
  if (be->cfg->precision == CUVAE_PRECISION_BF16)  /* bf16(x), the first GEMM's operand */
    CU_LAUNCH(be, to_bf16_cuda(x, s->in16, (size_t)B * s->layers[0].in, be->stream));
  for (int i = 0; i < s->n; i++)
    if (cuda_dense_forward(be, s, i, x, B)) return -1;
  return 0;
}

int cuda_encoder_forward(cuda_backend *be, const float *x, const int32_t *labels, int B) {
  const cuvae_model *m = be->model;
  const float *in = x;
  if (m->cond) {  /* [x | onehot(y)] (docs/MATH.md section 6) */
    CU_LAUNCH(be, concat_onehot_cuda(x, (int)m->input_dim, labels, B, (int)m->cond, be->enc_in, B, be->stream));
    in = be->enc_in;
  }
  return cuda_stack_forward(be, &be->enc, in, B);
}

int cuda_decoder_forward(cuda_backend *be, const float *z, const int32_t *labels, int period, int N) {
  const cuvae_model *m = be->model;
  const float *in = z;
  if (m->cond) {  /* [z | onehot(y of row i mod period)] */
    CU_LAUNCH(be, concat_onehot_cuda(z, (int)m->latent, labels, period, (int)m->cond, be->dec_in, N, be->stream));
    in = be->dec_in;
  }
  return cuda_stack_forward(be, &be->dec, in, N);
}

int cuda_labels_upload(cuda_backend *be, const int32_t *labels, size_t n) {
  if (be->model->cond)
    CU_CHECK(cudaMemcpyAsync(be->labels, labels, n * sizeof(int32_t), cudaMemcpyHostToDevice, be->stream));
  return 0;
}

int cuda_decoder_nll(cuda_backend *be, const float *y, const float *x, float *nll_row, float *dy, float *dlv_row,
                     float scale, int N) {
  const cuvae_model *m = be->model;
  const int D = (int)m->input_dim;
  if (m->likelihood == CUVAE_LIK_BERNOULLI)
    CU_LAUNCH(be, bernoulli_nll_grad_cuda(y, x, nll_row, dy, scale, N, D, be->stream));
  else if (m->variance == CUVAE_VAR_LEARNED_SHARED)
    CU_LAUNCH(be, gaussian_shared_nll_grad_cuda(y, x, be->params + m->logvar, m->logvar_min, m->nll_offset, nll_row, dy,
                                                dy ? dlv_row : NULL, scale, N, D, be->stream));
  else if (m->variance == CUVAE_VAR_LEARNED_PER_DIM)
    CU_LAUNCH(be, gaussian_perdim_nll_grad_cuda(y, x, m->logvar_min, m->nll_offset, nll_row, dy, scale, N, D,
                                                be->stream));
  else
    CU_LAUNCH(be, gaussian_nll_grad_cuda(y, x, m->sigma, m->nll_offset, nll_row, dy, scale, N, D, be->stream));
  return 0;
}

int cuda_vae_forward(cuda_backend *be, const float *x_in, const float *x, const int32_t *labels, int B, int Bt,
                     const cuvae_objective_spec *spec, int want_grad) {
  const cuvae_model *m = be->model;
  const int Z = (int)m->latent, D = (int)m->input_dim, L = spec->samples, N = B * L, Nt = Bt * L;
  const int ae = spec->objective == CUVAE_OBJ_AE, sampled = cuvae_objective_sampled(spec);
  if (cuda_encoder_forward(be, x_in, labels, B)) return -1;
  const float *mulv = be->enc_out[m->n_enc - 1];
  /* z: the mean (ae); else z_s = mu + exp(0.5 lv) eps_s, the closed-form KL from the first sample's pass. */
  if (ae)
    CU_LAUNCH(be, latent_mean_forward_cuda(mulv, be->z, B, Z, be->stream));
  else if (sampled)
    CU_LAUNCH(be, iwae_reparam_cuda(mulv, be->eps, be->z, B, L, Z, be->stream));
  else {
    CU_LAUNCH(be, reparam_kl_forward_cuda(mulv, be->eps, be->z, be->kl_row, B, Z, be->stream));
    if (spec->free_bits > 0.0f && free_bits_gate(be, mulv, B, Z, Bt, spec->free_bits)) return -1;
    if (L > 1)
      CU_LAUNCH(be, iwae_reparam_cuda(mulv, be->eps + (size_t)B * Z, be->z + (size_t)B * Z, B, L - 1, Z, be->stream));
  }
  if (cuda_decoder_forward(be, be->z, labels, B, N)) return -1;
  const float *dec_y = be->dec_out[m->n_dec - 1];
  const int out_cols = (int)m->dec[m->n_dec - 1].out;
  if (L > 1) {
    CU_LAUNCH(be, iwae_replicate_cuda(x, be->x_rep, B, L, D, be->stream));
    x = be->x_rep;
  }
  float *dy = want_grad ? be->grad_a : NULL;
  if (ae)
    CU_LAUNCH(be, squared_error_grad_cuda(dec_y, x, m->likelihood == CUVAE_LIK_BERNOULLI, be->nll_row, dy,
                                     1.0f / (float)Bt, B, D, be->stream));
  else if (cuda_decoder_nll(be, dec_y, x, be->nll_row, dy, be->dlv_row, sampled ? 1.0f : 1.0f / (float)Nt, N))
    return -1;
  if (sampled) {
    CU_LAUNCH(be, objective_weights_cuda(mulv, be->eps, be->z, be->nll_row, B, L, Z, spec->objective == CUVAE_OBJ_IWAE,
                                    be->beta_t, 1.0f / (float)Bt, be->kl_s, be->weight, be->row_obj, be->stream));
    if (dy) {
      CU_LAUNCH(be, scale_rows_cuda(dy, be->weight, N, out_cols, be->stream));
      if (m->variance == CUVAE_VAR_LEARNED_SHARED) CU_LAUNCH(be, scale_rows_cuda(be->dlv_row, be->weight, N, 1, be->stream));
    }
  }
  /* sums: [0] NLL (or squared error) over the N rows, [1] KL (closed form over B rows, or sampled over N),
   * [3] the per-row objective of the sampled objectives, or with free bits sum_j max(lambda, KL_j) (a mean already);
   * zeros where a term does not exist. */
  CU_LAUNCH(be, sum_cuda(be->nll_row, N, be->sums + 0, be->stream));
  if (ae)
    CU_CHECK(cudaMemsetAsync(be->sums + 1, 0, sizeof(float), be->stream));
  else
    CU_LAUNCH(be, sum_cuda(sampled ? be->kl_s : be->kl_row, sampled ? N : B, be->sums + 1, be->stream));
  if (sampled)
    CU_LAUNCH(be, sum_cuda(be->row_obj, B, be->sums + 3, be->stream));
  else if (!ae && spec->free_bits > 0.0f)
    CU_LAUNCH(be, sum_cuda(be->fb_floor, Z, be->sums + 3, be->stream));
  else
    CU_CHECK(cudaMemsetAsync(be->sums + 3, 0, sizeof(float), be->stream));
  return 0;
}

void cuda_loss_from_sums(const cuvae_objective_spec *spec, const float *sums, int B, int ranks, cuvae_loss *out) {
  const int N = B * spec->samples, sampled = cuvae_objective_sampled(spec);
  out->recon = (double)sums[0] / N;
  out->kl = (double)sums[1] / (sampled ? N : B);
  out->nelbo = out->recon + out->kl;
  const int free_bits = spec->objective != CUVAE_OBJ_AE && !sampled && spec->free_bits > 0.0f;
  out->objective = spec->objective == CUVAE_OBJ_AE ? out->recon
                   : sampled                        ? (double)sums[3] / B
                   : free_bits                      ? out->recon + spec->beta * ((double)sums[3] / ranks)  /* (3.4) */
                                                    : out->recon + spec->beta * out->kl;
}
