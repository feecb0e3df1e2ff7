/* The whole VAE on the CPU: encoder, latent stage, decoder, likelihood, and the backward pass through all of it,
 * for every objective of the model family (docs/MATH.md sections 1-6). Per data point, averaged over the batch:
 *   elbo, analytic KL:  L = (1/L_s) sum_s -log p(x | z_s) + beta KL(q(z|x) || N(0, I))      (closed-form KL)
 *   elbo, sampled KL:   L = (1/L_s) sum_s [-log p(x | z_s) + beta (log q(z_s|x) - log p(z_s))]
 *   iwae:               L = -log (1/K) sum_k w_k,  log w_k = log p(x | z_k) + log p(z_k) - log q(z_k | x)
 *   ae:                 L = ||x - xhat||^2,  z = mu (no noise, no KL)
 * with z_s = mu + exp(0.5 lv) eps_s; the samples of a batch are laid out sample-major (row s*B + r). */
#include <stdlib.h>
#include <string.h>

#include "cuvae/cpu.h"
#include "cuvae/error.h"

struct cuvae_cpu_ws {
  int max_batch;                     /* rows: B * samples of the decoder (and B of the encoder) */
  float *enc_out[CUVAE_MAX_LAYERS];  /* post-activation outputs; the last is mulv [B, 2Z] */
  float *dec_out[CUVAE_MAX_LAYERS];  /* the last is the decoder output [N, D] (logits or means; [N, 2D] per-dim) */
  float *z;                          /* [N, Z] */
  float *dz;                         /* [N, Z] */
  float *dmulv;                      /* [B, 2Z] */
  float *grad_a, *grad_b;            /* ping-pong activation gradients, [N, widest layer] */
  float *kl_row, *nll_row;           /* [B] closed-form KL, [N] -log p(x|z) (ae: squared error) */
  float *x_rep;                      /* [N, D] the targets repeated per sample (samples > 1) */
  float *kl_s, *weight, *row_obj;    /* [N] sampled KL, [N] sample weights, [B] objective per row */
  float *dlv_row;                    /* [N] rows' parts of dL/d logvar (learned_shared) */
  float *fb_gate, *fb_floor;         /* [Z] free bits (docs/MATH.md (3.4)): dims kept, max(lambda, KL_j) */
  double *fb_sums;                   /* [Z] free bits: the dims' KL sums over the batch (over the ranks') */
  float *enc_in, *dec_in, *dzy;      /* conditional: [B, D + C] = [x | onehot y], [N, Z + C] = [z | onehot y], its
                                        gradient */
  /* bf16 precision (docs/MATH.md (8.2)); w16 == NULL: fp32 */
  const uint16_t *w16;                    /* the caller's bf16 copy of the parameters */
  uint16_t *enc_in16[CUVAE_MAX_LAYERS];   /* bf16 of each layer's input, kept for its weight gradient */
  uint16_t *dec_in16[CUVAE_MAX_LAYERS];
  uint16_t *dy16;                         /* [N, widest]: bf16 of a layer's pre-activation gradient */
};

void cuvae_cpu_ws_destroy(cuvae_cpu_ws *ws) {
  if (!ws) return;
  for (int i = 0; i < CUVAE_MAX_LAYERS; i++) {
    free(ws->enc_out[i]);
    free(ws->dec_out[i]);
    free(ws->enc_in16[i]);
    free(ws->dec_in16[i]);
  }
  free(ws->dy16);
  free(ws->fb_sums);
  float *bufs[] = {ws->z,     ws->dz,   ws->dmulv,  ws->grad_a,  ws->grad_b, ws->kl_row,
                   ws->nll_row, ws->x_rep, ws->kl_s, ws->weight, ws->row_obj, ws->dlv_row,
                   ws->enc_in, ws->dec_in, ws->dzy, ws->fb_gate, ws->fb_floor};
  for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
  free(ws);
}

static float *alloc_floats(size_t n, int *failed) {
  float *p = calloc(n ? n : 1, sizeof *p);
  if (!p) *failed = 1;
  return p;
}

cuvae_cpu_ws *cuvae_cpu_ws_create(const cuvae_model *m, int max_batch) {
  if (max_batch < 1) {
    cuvae_error("workspace: batch size %d must be >= 1", max_batch);
    return NULL;
  }
  cuvae_cpu_ws *ws = calloc(1, sizeof *ws);
  if (!ws) {
    cuvae_error("out of memory allocating the CPU workspace");
    return NULL;
  }
  const size_t B = (size_t)max_batch, Z = m->latent, D = m->input_dim;
  const size_t widest = cuvae_model_widest_output(m, 1);
  int failed = 0;
  ws->max_batch = max_batch;
  for (int i = 0; i < m->n_enc; i++) ws->enc_out[i] = alloc_floats(B * m->enc[i].out, &failed);
  for (int i = 0; i < m->n_dec; i++) ws->dec_out[i] = alloc_floats(B * m->dec[i].out, &failed);
  ws->z = alloc_floats(B * Z, &failed);
  ws->dz = alloc_floats(B * Z, &failed);
  ws->dmulv = alloc_floats(B * 2 * Z, &failed);
  ws->grad_a = alloc_floats(B * widest, &failed);
  ws->grad_b = alloc_floats(B * widest, &failed);
  ws->kl_row = alloc_floats(B, &failed);
  ws->nll_row = alloc_floats(B, &failed);
  ws->x_rep = alloc_floats(B * D, &failed);
  ws->kl_s = alloc_floats(B, &failed);
  ws->weight = alloc_floats(B, &failed);
  ws->row_obj = alloc_floats(B, &failed);
  ws->dlv_row = alloc_floats(B, &failed);
  ws->fb_gate = alloc_floats(Z, &failed);
  ws->fb_floor = alloc_floats(Z, &failed);
  ws->fb_sums = malloc((size_t)Z * sizeof *ws->fb_sums);
  failed |= ws->fb_sums == NULL;
  if (m->cond) {
    ws->enc_in = alloc_floats(B * (D + m->cond), &failed);
    ws->dec_in = alloc_floats(B * (Z + m->cond), &failed);
    ws->dzy = alloc_floats(B * (Z + m->cond), &failed);
  }
  if (failed) {
    cuvae_cpu_ws_destroy(ws);
    cuvae_error("out of memory allocating the CPU workspace for batch %d", max_batch);
    return NULL;
  }
  return ws;
}

int cuvae_cpu_ws_use_bf16(cuvae_cpu_ws *ws, const cuvae_model *m, const uint16_t *params16) {
  const size_t B = (size_t)ws->max_batch;
  int failed = 0;
  for (int i = 0; i < m->n_enc && !failed; i++)
    failed = !(ws->enc_in16[i] = malloc(B * m->enc[i].in * sizeof(uint16_t)));
  for (int i = 0; i < m->n_dec && !failed; i++)
    failed = !(ws->dec_in16[i] = malloc(B * m->dec[i].in * sizeof(uint16_t)));
  if (!failed) failed = !(ws->dy16 = malloc(B * cuvae_model_widest_output(m, 1) * sizeof(uint16_t)));
  if (failed) return cuvae_error("out of memory allocating the bf16 activations for batch %d", ws->max_batch);
  ws->w16 = params16;
  return 0;
}

/* ---- objectives --------------------------------------------------------------------------------------------- */

void cuvae_cpu_decoder_nll(const cuvae_model *m, const float *params, const float *y, const float *x, float *nll_row,
                           float *dy, float *dlv_row, float scale, int B) {
  const int D = (int)m->input_dim;
  if (m->likelihood == CUVAE_LIK_BERNOULLI)
    bernoulli_nll_grad_cpu(y, x, nll_row, dy, scale, B, D);
  else if (m->variance == CUVAE_VAR_LEARNED_SHARED)
    gaussian_shared_nll_grad_cpu(y, x, params + m->logvar, m->logvar_min, m->nll_offset, nll_row, dy,
                                 dy ? dlv_row : NULL, scale, B, D);
  else if (m->variance == CUVAE_VAR_LEARNED_PER_DIM)
    gaussian_perdim_nll_grad_cpu(y, x, m->logvar_min, m->nll_offset, nll_row, dy, scale, B, D);
  else
    gaussian_nll_grad_cpu(y, x, m->sigma, m->nll_offset, nll_row, dy, scale, B, D);
}

/* ---- forward and backward ----------------------------------------------------------------------------------- */

/* The encoder's input: x, or [x | onehot(y)] for a conditional model (docs/MATH.md section 6). */
static const float *encoder_input(const cuvae_model *m, cuvae_cpu_ws *ws, const float *x, const int32_t *labels,
                                  int B) {
  if (!m->cond) return x;
  concat_onehot_cpu(x, (int)m->input_dim, labels, B, (int)m->cond, ws->enc_in, B);
  return ws->enc_in;
}

/* The decoder's input for N = B * samples rows (sample-major): z, or [z | onehot(y of row i mod B)]. */
static const float *decoder_input(const cuvae_model *m, cuvae_cpu_ws *ws, const float *z, const int32_t *labels,
                                  int B, int N) {
  if (!m->cond) return z;
  concat_onehot_cpu(z, (int)m->latent, labels, B, (int)m->cond, ws->dec_in, N);
  return ws->dec_in;
}

/* One dense layer on B rows in the workspace's precision; in bf16 its input's bf16 copy goes to in16. */
static void layer_forward(const cuvae_cpu_ws *ws, const float *params, const cuvae_layer *l, const float *in,
                          uint16_t *in16, float *out, int B) {
  if (!ws->w16) {
    dense_forward_cpu(in, params + l->w, params + l->b, out, B, (int)l->in, (int)l->out, l->act);
    return;
  }
  to_bf16_cpu(in, in16, (size_t)B * l->in);
  dense_forward_bf16_cpu(in16, ws->w16 + l->w, params + l->b, out, B, (int)l->in, (int)l->out, l->act);
}

static void decoder_forward(const cuvae_model *m, cuvae_cpu_ws *ws, const float *params, const float *in, int N) {
  for (int i = 0; i < m->n_dec; i++) {
    layer_forward(ws, params, &m->dec[i], in, ws->dec_in16[i], ws->dec_out[i], N);
    in = ws->dec_out[i];
  }
}

const float *cuvae_cpu_decoder_layers(const cuvae_model *m, cuvae_cpu_ws *ws, const float *params, const float *in,
                                      int N) {
  decoder_forward(m, ws, params, in, N);
  return ws->dec_out[m->n_dec - 1];
}

const float *cuvae_cpu_decode(const cuvae_model *m, cuvae_cpu_ws *ws, const float *params, const float *z,
                              const int32_t *labels, int N) {
  decoder_forward(m, ws, params, decoder_input(m, ws, z, labels, N, N), N);
  return ws->dec_out[m->n_dec - 1];
}

/* The encoder's layers on its prepared input (encoder_input). */
static const float *encoder_forward(const cuvae_model *m, cuvae_cpu_ws *ws, const float *params, const float *in,
                                   int B) {
  for (int i = 0; i < m->n_enc; i++) {
    layer_forward(ws, params, &m->enc[i], in, ws->enc_in16[i], ws->enc_out[i], B);
    in = ws->enc_out[i];
  }
  return ws->enc_out[m->n_enc - 1];
}

const float *cuvae_cpu_encode(const cuvae_model *m, cuvae_cpu_ws *ws, const float *params, const float *x,
                              const int32_t *labels, int B) {
  return encoder_forward(m, ws, params, encoder_input(m, ws, x, labels, B), B);
}

/* Backward through layers[n-1..0] starting from dy (dL/d output of the last layer, in ws->grad_a).
 * The input of layer 0 is `x0` (in16: the bf16 copies of the layers' inputs in bf16 precision); dx0 receives dL/dx0
 * (NULL = not needed). After each layer, hooks->grad_ready (hooks NULL: none) hears that grad[layer's weight..) is
 * final. -1 when it failed (the backward still completes). */
static int backward_stack(const cuvae_layer *layers, int n, float *const *outs, const float *x0,
                          uint16_t *const *in16, const float *params, float *grad, cuvae_cpu_ws *ws, float *dx0,
                          int B, const cuvae_cpu_batch *hooks) {
  float *dy = ws->grad_a, *spare = ws->grad_b;
  int rc = 0;
  for (int i = n - 1; i >= 0; i--) {
    const cuvae_layer *l = &layers[i];
    const float *in = i == 0 ? x0 : outs[i - 1];
    float *dx = i == 0 ? dx0 : spare;
    if (ws->w16)
      dense_backward_bf16_cpu(in16[i], ws->w16 + l->w, outs[i], dy, ws->dy16, grad + l->w, grad + l->b, dx, B,
                              (int)l->in, (int)l->out, l->act);
    else
      dense_backward_cpu(in, params + l->w, outs[i], dy, grad + l->w, grad + l->b, dx, B, (int)l->in,
                         (int)l->out, l->act);
    if (hooks && hooks->grad_ready && rc == 0) rc = hooks->grad_ready(hooks->grad_ctx, grad, l->w);
    spare = dy;
    dy = dx;
  }
  return rc;
}

/* Free bits' per-dimension KL_j over the global batch (docs/MATH.md (3.4)): this slice's column sums, with several
 * ranks added over them (batch->sum), then the gate and the floor of KL_j = sums_j / Bt. The objective then takes
 * the share B / Bt of the floor term sum_j max(lambda, KL_j) (1 in one process), so that the ranks' objectives add up
 * to it as their reconstruction parts add up to the global one. */
static int free_bits_global(cuvae_cpu_ws *ws, const cuvae_cpu_batch *batch, const float *mulv, int Z, int Bt,
                            float lambda) {
  free_bits_sums_cpu(mulv, batch->B, Z, ws->fb_sums);
  if (batch->sum && batch->sum(batch->grad_ctx, ws->fb_sums, Z)) return -1;
  free_bits_gate_cpu(ws->fb_sums, Z, Bt, lambda, ws->fb_gate, ws->fb_floor);
  return 0;
}

/* Sum of v[0..n) in double, in index order (the deterministic reductions of this file). */
static double sum_rows(const float *v, int n) {
  double s = 0.0;
  for (int i = 0; i < n; i++) s += v[i];
  return s;
}

int cuvae_cpu_latent_objective_grad(const cuvae_model *m, cuvae_cpu_ws *ws, const float *params, const float *mulv,
                                    const cuvae_cpu_batch *batch, const cuvae_objective_spec *spec, float *grad,
                                    float *dmulv, cuvae_loss *out) {
  const int B = batch->B, L = spec->samples, N = B * L;
  if (B < 1 || L < 1 || N / L != B || N > ws->max_batch)
    return cuvae_error("batch of %d rows x %d samples does not fit the workspace (max %d rows)", B, L, ws->max_batch);
  /* Every mean below is over the global batch: Bt rows, Nt = Bt L samples (this slice's part of it). */
  const int Bt = batch->batch_total > 0 ? batch->batch_total : B, Nt = Bt * L;
  const int Z = (int)m->latent, D = (int)m->input_dim;
  const int ae = spec->objective == CUVAE_OBJ_AE, sampled = cuvae_objective_sampled(spec);
  const int free_bits = !ae && !sampled && spec->free_bits > 0.0f;  /* docs/MATH.md (3.4) */
  const float *eps = batch->eps;

  /* z: the mean (ae); else z_s = mu + exp(0.5 lv) eps_s (docs/MATH.md section 2), with the closed-form KL per row
   * from the first sample's pass when the KL is analytic. */
  if (ae)
    latent_mean_forward_cpu(mulv, ws->z, B, Z);
  else if (sampled)
    iwae_reparam_cpu(mulv, eps, ws->z, B, L, Z);
  else {
    reparam_kl_forward_cpu(mulv, eps, ws->z, ws->kl_row, B, Z);
    if (free_bits && free_bits_global(ws, batch, mulv, Z, Bt, spec->free_bits)) return -1;
    if (L > 1) iwae_reparam_cpu(mulv, eps + (size_t)B * Z, ws->z + (size_t)B * Z, B, L - 1, Z);
  }

  const float *dec_in = decoder_input(m, ws, ws->z, batch->labels, B, N);
  decoder_forward(m, ws, params, dec_in, N);
  const float *dec_y = ws->dec_out[m->n_dec - 1];
  const int out_cols = (int)m->dec[m->n_dec - 1].out;
  const float *x = batch->x;
  if (L > 1) {
    iwae_replicate_cpu(batch->x, ws->x_rep, B, L, D);
    x = ws->x_rep;
  }
  const int want_grad = grad != NULL || dmulv != NULL;
  /* The reconstruction term writes dL/d(decoder output) straight into the first gradient buffer: scaled by the
   * batch mean 1/(B L) at once, or (sampled KL) by 1 and then by each sample's weight. */
  float *dy = want_grad ? ws->grad_a : NULL;
  if (ae)
    squared_error_grad_cpu(dec_y, x, m->likelihood == CUVAE_LIK_BERNOULLI, ws->nll_row, dy, 1.0f / (float)Bt, B, D);
  else
    cuvae_cpu_decoder_nll(m, params, dec_y, x, ws->nll_row, dy, ws->dlv_row, sampled ? 1.0f : 1.0f / (float)Nt, N);
  if (sampled) {
    objective_weights_cpu(mulv, eps, ws->z, ws->nll_row, B, L, Z, spec->objective == CUVAE_OBJ_IWAE, &spec->beta,
                          1.0f / (float)Bt, ws->kl_s, ws->weight, ws->row_obj);
    if (dy) {
      scale_rows_cpu(dy, ws->weight, N, out_cols);
      if (m->variance == CUVAE_VAR_LEARNED_SHARED) scale_rows_cpu(ws->dlv_row, ws->weight, N, 1);
    }
  }

  /* Deterministic reductions: row values summed in double, in row order. */
  out->recon = sum_rows(ws->nll_row, N) / Nt;
  out->kl = ae ? 0.0 : sampled ? sum_rows(ws->kl_s, N) / Nt : sum_rows(ws->kl_row, B) / Bt;
  out->nelbo = out->recon + out->kl;
  const double kl_term = free_bits ? sum_rows(ws->fb_floor, Z) * ((double)B / Bt) : out->kl;  /* (3.4), a B/Bt share */
  out->objective = ae ? out->recon : sampled ? sum_rows(ws->row_obj, B) / Bt : out->recon + spec->beta * kl_term;

  if (want_grad) {
    float *gbuf = grad;
    float *scratch_grad = NULL;
    if (!gbuf) {  /* only dmulv wanted: decoder weight gradients go to a throwaway buffer */
      scratch_grad = malloc(m->n_params * sizeof *scratch_grad);
      if (!scratch_grad) return cuvae_error("out of memory");
      gbuf = scratch_grad;
    }
    if (m->variance == CUVAE_VAR_LEARNED_SHARED) gbuf[m->logvar] = (float)sum_rows(ws->dlv_row, N);
    const int rc = backward_stack(m->dec, m->n_dec, ws->dec_out, dec_in, ws->dec_in16, params, gbuf, ws,
                                  m->cond ? ws->dzy : ws->dz, N, grad ? batch : NULL);
    if (m->cond) take_columns_cpu(ws->dzy, Z + (int)m->cond, ws->dz, N, Z);  /* dL/dz of dL/d[z | y] */
    float *dml = dmulv ? dmulv : ws->dmulv;
    if (ae)
      latent_mean_backward_cpu(ws->dz, dml, B, Z);
    else  /* with free bits the KL's gradient comes next, for the gated dims only */
      reparam_multi_backward_cpu(mulv, eps, ws->z, ws->dz, sampled ? ws->weight : NULL, &spec->beta,
                                 free_bits ? 0.0f : 1.0f / (float)Bt, dml, B, L, Z);
    if (free_bits) free_bits_backward_cpu(mulv, ws->fb_gate, &spec->beta, 1.0f / (float)Bt, dml, B, Z);
    free(scratch_grad);
    if (rc) return -1;
  }
  return 0;
}

int cuvae_cpu_objective_grad(const cuvae_model *m, cuvae_cpu_ws *ws, const float *params,
                             const cuvae_cpu_batch *batch, const cuvae_objective_spec *spec, float *grad,
                             cuvae_loss *out) {
  const int B = batch->B;
  if (B < 1 || B > ws->max_batch)
    return cuvae_error("batch of %d rows does not fit the workspace (max %d)", B, ws->max_batch);
  const float *x_in = encoder_input(m, ws, batch->x_in ? batch->x_in : batch->x, batch->labels, B);
  const float *mulv = encoder_forward(m, ws, params, x_in, B);
  if (cuvae_cpu_latent_objective_grad(m, ws, params, mulv, batch, spec, grad, grad ? ws->dmulv : NULL, out))
    return -1;
  if (grad) {
    memcpy(ws->grad_a, ws->dmulv, (size_t)B * 2 * m->latent * sizeof(float));
    if (backward_stack(m->enc, m->n_enc, ws->enc_out, x_in, ws->enc_in16, params, grad, ws, NULL, B, batch))
      return -1;
  }
  return 0;
}

static const cuvae_objective_spec k_plain_elbo = {CUVAE_OBJ_ELBO, 1, CUVAE_KL_ANALYTIC, 1.0f, 0.0f};

int cuvae_cpu_loss_grad(const cuvae_model *m, cuvae_cpu_ws *ws, const float *params, const float *x,
                        const float *eps, int B, float *grad, cuvae_loss *out) {
  const cuvae_cpu_batch batch = {B, x, NULL, eps, NULL, 0, NULL, NULL, NULL};
  return cuvae_cpu_objective_grad(m, ws, params, &batch, &k_plain_elbo, grad, out);
}

int cuvae_cpu_latent_loss_grad(const cuvae_model *m, cuvae_cpu_ws *ws, const float *params,
                               const float *mulv, const float *x, const float *eps, int B, float *grad,
                               float *dmulv, cuvae_loss *out) {
  const cuvae_cpu_batch batch = {B, x, NULL, eps, NULL, 0, NULL, NULL, NULL};
  return cuvae_cpu_latent_objective_grad(m, ws, params, mulv, &batch, &k_plain_elbo, grad, dmulv, out);
}
