/* The whole VAE on the CPU: encoder, reparameterization + KL, decoder, likelihood, and the backward pass
 * through all of it. Negative ELBO per data point (MATH.md section 1), averaged over the batch:
 *   L = (1/B) sum_b [ -log p(x_b | z_b) + KL(q(z | x_b) || N(0, I)) ],  z_b = mu_b + exp(0.5 lv_b) eps_b. */
#include <stdlib.h>
#include <string.h>

#include "cuvae/cpu.h"
#include "cuvae/error.h"

struct cuvae_cpu_ws {
  int max_batch;
  float *enc_out[CUVAE_MAX_LAYERS];  /* post-activation outputs; the last is mulv [B, 2Z] */
  float *dec_out[CUVAE_MAX_LAYERS];  /* the last is the decoder output [B, D] (logits or means) */
  float *z;                          /* [B, Z] */
  float *dz;                         /* [B, Z] */
  float *dmulv;                      /* [B, 2Z] */
  float *grad_a, *grad_b;            /* ping-pong activation gradients, [B, widest layer] */
  float *kl_row, *nll_row;           /* [B] */
};

void cuvae_cpu_ws_destroy(cuvae_cpu_ws *ws) {
  if (!ws) return;
  for (int i = 0; i < CUVAE_MAX_LAYERS; i++) {
    free(ws->enc_out[i]);
    free(ws->dec_out[i]);
  }
  free(ws->z);
  free(ws->dz);
  free(ws->dmulv);
  free(ws->grad_a);
  free(ws->grad_b);
  free(ws->kl_row);
  free(ws->nll_row);
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
  const size_t B = (size_t)max_batch, Z = m->latent;
  size_t widest = m->input_dim;
  int failed = 0;
  ws->max_batch = max_batch;
  for (int i = 0; i < m->n_enc; i++) {
    ws->enc_out[i] = alloc_floats(B * m->enc[i].out, &failed);
    if (m->enc[i].out > widest) widest = m->enc[i].out;
  }
  for (int i = 0; i < m->n_dec; i++) {
    ws->dec_out[i] = alloc_floats(B * m->dec[i].out, &failed);
    if (m->dec[i].out > widest) widest = m->dec[i].out;
  }
  ws->z = alloc_floats(B * Z, &failed);
  ws->dz = alloc_floats(B * Z, &failed);
  ws->dmulv = alloc_floats(B * 2 * Z, &failed);
  ws->grad_a = alloc_floats(B * widest, &failed);
  ws->grad_b = alloc_floats(B * widest, &failed);
  ws->kl_row = alloc_floats(B, &failed);
  ws->nll_row = alloc_floats(B, &failed);
  if (failed) {
    cuvae_cpu_ws_destroy(ws);
    cuvae_error("out of memory allocating the CPU workspace for batch %d", max_batch);
    return NULL;
  }
  return ws;
}

const float *cuvae_cpu_encode(const cuvae_model *m, cuvae_cpu_ws *ws, const float *params, const float *x,
                              int B) {
  const float *in = x;
  for (int i = 0; i < m->n_enc; i++) {
    const cuvae_layer *l = &m->enc[i];
    dense_forward_cpu(in, params + l->w, params + l->b, ws->enc_out[i], B, (int)l->in, (int)l->out, l->act);
    in = ws->enc_out[i];
  }
  return ws->enc_out[m->n_enc - 1];
}

/* Backward through layers[n-1..0] starting from dy (dL/d output of the last layer, in ws->grad_a).
 * The input of layer 0 is `x0`; dx0 receives dL/dx0 (NULL = not needed). */
static void backward_stack(const cuvae_layer *layers, int n, float *const *outs, const float *x0,
                           const float *params, float *grad, cuvae_cpu_ws *ws, float *dx0, int B) {
  float *dy = ws->grad_a, *spare = ws->grad_b;
  for (int i = n - 1; i >= 0; i--) {
    const cuvae_layer *l = &layers[i];
    const float *in = i == 0 ? x0 : outs[i - 1];
    float *dx = i == 0 ? dx0 : spare;
    dense_backward_cpu(in, params + l->w, outs[i], dy, grad + l->w, grad + l->b, dx, B, (int)l->in,
                       (int)l->out, l->act);
    spare = dy;
    dy = dx;
  }
}

int cuvae_cpu_latent_loss_grad(const cuvae_model *m, cuvae_cpu_ws *ws, const float *params,
                               const float *mulv, const float *x, const float *eps, int B, float *grad,
                               float *dmulv, cuvae_loss *out) {
  if (B < 1 || B > ws->max_batch)
    return cuvae_error("batch of %d rows does not fit the workspace (max %d)", B, ws->max_batch);
  const int Z = (int)m->latent, D = (int)m->input_dim;
  reparam_kl_forward_cpu(mulv, eps, ws->z, ws->kl_row, B, Z);

  const float *in = ws->z;
  for (int i = 0; i < m->n_dec; i++) {
    const cuvae_layer *l = &m->dec[i];
    dense_forward_cpu(in, params + l->w, params + l->b, ws->dec_out[i], B, (int)l->in, (int)l->out, l->act);
    in = ws->dec_out[i];
  }
  const float *dec_y = ws->dec_out[m->n_dec - 1];
  const int want_grad = grad != NULL || dmulv != NULL;
  /* The likelihood kernel writes dL/d(decoder output) straight into the first gradient buffer. */
  const float scale = 1.0f / (float)B;
  float *dy = want_grad ? ws->grad_a : NULL;
  if (m->likelihood == CUVAE_LIK_BERNOULLI)
    bernoulli_nll_grad_cpu(dec_y, x, ws->nll_row, dy, scale, B, D);
  else
    gaussian_nll_grad_cpu(dec_y, x, m->sigma, ws->nll_row, dy, scale, B, D);

  /* Deterministic reduction: row values summed in double, in row order. */
  double recon = 0.0, kl = 0.0;
  for (int b = 0; b < B; b++) {
    recon += ws->nll_row[b];
    kl += ws->kl_row[b];
  }
  out->recon = recon / B;
  out->kl = kl / B;
  out->nelbo = out->recon + out->kl;

  if (want_grad) {
    float *gbuf = grad;
    float *scratch_grad = NULL;
    if (!gbuf) {  /* only dmulv wanted: decoder weight gradients go to a throwaway buffer */
      scratch_grad = malloc(m->n_params * sizeof *scratch_grad);
      if (!scratch_grad) return cuvae_error("out of memory");
      gbuf = scratch_grad;
    }
    backward_stack(m->dec, m->n_dec, ws->dec_out, ws->z, params, gbuf, ws, ws->dz, B);
    reparam_kl_backward_cpu(mulv, eps, ws->dz, scale, dmulv ? dmulv : ws->dmulv, B, Z);
    free(scratch_grad);
  }
  return 0;
}

int cuvae_cpu_loss_grad(const cuvae_model *m, cuvae_cpu_ws *ws, const float *params, const float *x,
                        const float *eps, int B, float *grad, cuvae_loss *out) {
  if (B < 1 || B > ws->max_batch)
    return cuvae_error("batch of %d rows does not fit the workspace (max %d)", B, ws->max_batch);
  const float *mulv = cuvae_cpu_encode(m, ws, params, x, B);
  if (cuvae_cpu_latent_loss_grad(m, ws, params, mulv, x, eps, B, grad, grad ? ws->dmulv : NULL, out)) return -1;
  if (grad) {
    memcpy(ws->grad_a, ws->dmulv, (size_t)B * 2 * m->latent * sizeof(float));
    backward_stack(m->enc, m->n_enc, ws->enc_out, x, params, grad, ws, NULL, B);
  }
  return 0;
}
