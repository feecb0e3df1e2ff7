/* Model shapes and the parameter layout table (the one place that fixes where every tensor lives). */
#include "cuvae/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuvae/error.h"
#include "cuvae/rng.h"

/* The next offset at or after `off` where a tensor block may start (docs/ARCHITECTURE.md, "Parameter layout"). */
static size_t aligned(size_t off) {
  return (off + CUVAE_TENSOR_ALIGN - 1) / CUVAE_TENSOR_ALIGN * CUVAE_TENSOR_ALIGN;
}

/* Appends tensor NAME [out, in] (rank 1 when in == 0) at *offset, which it advances past the tensor. */
static int add_tensor(cuvae_model *m, const char *name, size_t out, size_t in, size_t *offset) {
  if (m->n_tensors >= CUVAE_MAX_TENSORS) return cuvae_error("model: too many tensors");
  cuvae_tensor *t = &m->tensors[m->n_tensors++];
  snprintf(t->name, sizeof t->name, "%s", name);
  t->rank = in ? 2 : 1;
  t->shape[0] = out;
  t->shape[1] = in ? in : 1;
  t->count = out * (in ? in : 1);
  t->offset = *offset;
  *offset += t->count;
  m->n_values += t->count;
  return 0;
}

/* A dense layer of `heads` heads of `out` outputs each, read from `in` inputs: the weights of every head in one
 * block (PREFIX[h].weight, [out, in] each), then their biases in another (PREFIX[h].bias), each block starting
 * aligned. With two heads the block is one [2 out, in] weight and one [2 out] bias: one GEMM computes both. */
static int add_layer(cuvae_model *m, cuvae_layer *l, const char *const prefix[], int heads, size_t in, size_t out,
                     cuvae_activation act, size_t *offset) {
  char name[CUVAE_TENSOR_NAME];
  l->in = in;
  l->out = (size_t)heads * out;
  l->act = act;
  l->w = *offset = aligned(*offset);
  for (int h = 0; h < heads; h++) {
    snprintf(name, sizeof name, "%s.weight", prefix[h]);
    if (add_tensor(m, name, out, in, offset)) return -1;
  }
  l->b = *offset = aligned(*offset);
  for (int h = 0; h < heads; h++) {
    snprintf(name, sizeof name, "%s.bias", prefix[h]);
    if (add_tensor(m, name, out, 0, offset)) return -1;
  }
  return 0;
}

/* One dense layer "PREFIX.weight" [out, in] then "PREFIX.bias" [out]. */
static int add_dense(cuvae_model *m, cuvae_layer *l, const char *prefix, size_t in, size_t out,
                     cuvae_activation act, size_t *offset) {
  const char *const one[1] = {prefix};
  return add_layer(m, l, one, 1, in, out, act, offset);
}

/* The parameter count in double, so that absurd sizes are refused before any size_t overflow. */
static int check_model_size(const cuvae_config *cfg, size_t input_dim, size_t cond, size_t out_dim, int mlp_decoder) {
  double count = 0.0, prev = (double)(input_dim + cond), dec_prev = (double)cfg->latent + (double)cond;
  for (int i = 0; i < cfg->n_hidden; i++) {
    if (cfg->hidden[i] < 1) return cuvae_error("[model] hidden: width %d must be >= 1", cfg->hidden[i]);
    count += (prev + 1.0) * cfg->hidden[i];  /* encoder layer */
    prev = cfg->hidden[i];
  }
  count += (prev + 1.0) * 2.0 * cfg->latent;  /* (mu, lv) head */
  for (int i = 0; mlp_decoder && i < cfg->n_hidden; i++) {  /* decoder mirror */
    const double w = cfg->hidden[cfg->n_hidden - 1 - i];
    count += (dec_prev + 1.0) * w;
    dec_prev = w;
  }
  count += (dec_prev + 1.0) * (double)out_dim + 1.0;
  count += 2.0 * CUVAE_TENSOR_ALIGN * (2.0 * cfg->n_hidden + 3.0);  /* the alignment gaps, at most */
  if (count > (double)CUVAE_MAX_PARAMS)
    return cuvae_error("model: %.3g parameters is more than the supported %zu", count, CUVAE_MAX_PARAMS);
  return 0;
}

/* Encoder: the hidden layers, then the (mu, lv) head as one [2Z, in] layer. */
static int build_encoder(cuvae_model *m, const cuvae_config *cfg, size_t *off) {
  static const char *const head[2] = {"enc.mu", "enc.lv"};
  size_t in = m->input_dim + m->cond;
  char prefix[16];
  for (int i = 0; i < cfg->n_hidden; i++) {
    snprintf(prefix, sizeof prefix, "enc.%d", i);
    if (add_dense(m, &m->enc[i], prefix, in, (size_t)cfg->hidden[i], cfg->activation, off)) return -1;
    in = (size_t)cfg->hidden[i];
  }
  m->n_enc = cfg->n_hidden + 1;
  return add_layer(m, &m->enc[cfg->n_hidden], head, 2, in, m->latent, CUVAE_ACT_NONE, off);
}

/* Decoder: the hidden layers in mirror order (none for a linear decoder), then the output layer: dec.out, or the
 * (mean, log-variance) heads dec.out + dec.lv as one [2D, in] layer; a shared learned log-variance last. */
static int build_decoder(cuvae_model *m, const cuvae_config *cfg, size_t *off) {
  static const char *const heads[2] = {"dec.out", "dec.lv"};
  const int n_hidden = cfg->decoder == CUVAE_DECODER_MLP ? cfg->n_hidden : 0;
  size_t in = m->latent + m->cond;
  char prefix[16];
  for (int i = 0; i < n_hidden; i++) {
    const size_t out = (size_t)cfg->hidden[cfg->n_hidden - 1 - i];
    snprintf(prefix, sizeof prefix, "dec.%d", i);
    if (add_dense(m, &m->dec[i], prefix, in, out, cfg->activation, off)) return -1;
    in = out;
  }
  m->n_dec = n_hidden + 1;
  const int n_heads = m->variance == CUVAE_VAR_LEARNED_PER_DIM ? 2 : 1;
  if (add_layer(m, &m->dec[n_hidden], heads, n_heads, in, m->input_dim, CUVAE_ACT_NONE, off)) return -1;
  if (m->variance == CUVAE_VAR_LEARNED_SHARED) {
    m->logvar = *off = aligned(*off);
    if (add_tensor(m, "dec.logvar", 1, 0, off)) return -1;
  }
  return 0;
}

int cuvae_model_build(cuvae_model *m, size_t input_dim, const cuvae_config *cfg) {
  memset(m, 0, sizeof *m);
  if (input_dim == 0) return cuvae_error("model: input dimension is 0");
  if (cfg->latent < 1) return cuvae_error("[model] latent: must be >= 1 (got %d)", cfg->latent);
  if (cfg->n_hidden < 0 || cfg->n_hidden > CUVAE_MAX_HIDDEN)
    return cuvae_error("[model] hidden: %d layers (at most %d)", cfg->n_hidden, CUVAE_MAX_HIDDEN);
  m->input_dim = input_dim;
  m->latent = (size_t)cfg->latent;
  m->likelihood = cfg->likelihood;
  m->sigma = cfg->sigma;
  m->variance = cfg->likelihood == CUVAE_LIK_GAUSSIAN ? cfg->gaussian_variance : CUVAE_VAR_FIXED;
  m->logvar_min = m->variance != CUVAE_VAR_FIXED && cfg->min_variance > 0.0f ? (float)log((double)cfg->min_variance)
                                                                              : -INFINITY;
  m->nll_offset = cfg->likelihood == CUVAE_LIK_GAUSSIAN && cfg->dequantize == CUVAE_DEQUANTIZE_UNIFORM
                      ? (double)input_dim * log(256.0)
                      : 0.0;
  m->cond = cfg->conditional ? (size_t)cfg->classes : 0;
  m->activation = cfg->activation;
  m->init = cfg->init;
  const size_t out_dim = m->variance == CUVAE_VAR_LEARNED_PER_DIM ? 2 * input_dim : input_dim;
  if (check_model_size(cfg, input_dim, m->cond, out_dim, cfg->decoder == CUVAE_DECODER_MLP)) return -1;
  size_t off = 0;
  if (build_encoder(m, cfg, &off) || build_decoder(m, cfg, &off)) return -1;
  m->n_params = aligned(off);
  return 0;
}

const cuvae_tensor *cuvae_model_find(const cuvae_model *m, const char *name) {
  for (int i = 0; i < m->n_tensors; i++)
    if (strcmp(m->tensors[i].name, name) == 0) return &m->tensors[i];
  return NULL;
}

size_t cuvae_model_widest_output(const cuvae_model *m, int with_encoder) {
  size_t widest = 1;
  for (int i = 0; i < m->n_dec; i++)
    if (m->dec[i].out > widest) widest = m->dec[i].out;
  for (int i = 0; with_encoder && i < m->n_enc; i++)
    if (m->enc[i].out > widest) widest = m->enc[i].out;
  return widest;
}

/* Initial parameters, layer by layer in layout order, from the init noise stream (include/cuvae/rng.h); each
 * draw starts at the next multiple-of-4 position. The (mu, lv) head counts as one [2Z, in] layer.
 *   init = torch: W ~ U(-k, k) then b ~ U(-k, k), k = 1/sqrt(fan_in) (PyTorch nn.Linear's default);
 *   init = he:    hidden ReLU layers W ~ N(0, 2/fan_in) (He); tanh layers, the head and the output layer
 *                 W ~ U(-a, a), a = sqrt(6/(fan_in + fan_out)) (Xavier); b = 0. */
static int init_layer(const cuvae_model *m, const cuvae_layer *l, float *params, cuvae_noise *g, uint64_t *pos) {
  const size_t nw = l->in * l->out;
  float *w = params + l->w, *b = params + l->b;
  int rc;
  if (m->init == CUVAE_INIT_TORCH) {
    const float k = (float)(1.0 / sqrt((double)l->in));
    rc = cuvae_noise_uniform(g, *pos, w, nw);
    *pos += cuvae_noise_stride(nw);
    if (rc == 0) rc = cuvae_noise_uniform(g, *pos, b, l->out);
    *pos += cuvae_noise_stride(l->out);
    for (size_t i = 0; i < nw; i++) w[i] = k * (2.0f * w[i] - 1.0f);
    for (size_t i = 0; i < l->out; i++) b[i] = k * (2.0f * b[i] - 1.0f);
    return rc;
  }
  memset(b, 0, l->out * sizeof *b);
  if (l->act == CUVAE_ACT_RELU) {
    rc = cuvae_noise_normal(g, *pos, w, nw);
    const float s = (float)sqrt(2.0 / (double)l->in);
    for (size_t i = 0; i < nw; i++) w[i] *= s;
  } else {
    rc = cuvae_noise_uniform(g, *pos, w, nw);
    const float a = (float)sqrt(6.0 / (double)(l->in + l->out));
    for (size_t i = 0; i < nw; i++) w[i] = a * (2.0f * w[i] - 1.0f);
  }
  *pos += cuvae_noise_stride(nw);
  return rc;
}

int cuvae_model_init(const cuvae_model *m, float *params, uint64_t seed) {
  memset(params, 0, m->n_params * sizeof *params);  /* the gaps between tensor blocks are zero, and stay zero */
  cuvae_noise *g = cuvae_noise_create(seed ^ CUVAE_SEED_INIT);
  if (!g) return -1;
  uint64_t pos = 0;
  int rc = 0;
  for (int i = 0; i < m->n_enc && rc == 0; i++) rc = init_layer(m, &m->enc[i], params, g, &pos);
  for (int i = 0; i < m->n_dec && rc == 0; i++) rc = init_layer(m, &m->dec[i], params, g, &pos);
  cuvae_noise_destroy(g);
  /* Learned log-variances start at log sigma^2: the shared one, or the per-dim head's biases. */
  const float lv0 = (float)(2.0 * log((double)m->sigma));
  if (m->variance == CUVAE_VAR_LEARNED_SHARED) params[m->logvar] = lv0;
  if (m->variance == CUVAE_VAR_LEARNED_PER_DIM) {
    const cuvae_layer *o = &m->dec[m->n_dec - 1];
    for (size_t d = 0; d < m->input_dim; d++) params[o->b + m->input_dim + d] = lv0;
  }
  return rc;
}

void cuvae_tensor_shape_string(const cuvae_tensor *t, char *buf, size_t cap) {
  if (t->rank == 2)
    snprintf(buf, cap, "[%zu, %zu]", t->shape[0], t->shape[1]);
  else
    snprintf(buf, cap, "[%zu]", t->shape[0]);
}

void cuvae_model_print_layout(const cuvae_model *m, FILE *out) {
  fprintf(out, "%-16s %-14s %12s %12s\n", "tensor", "shape", "offset", "count");
  for (int i = 0; i < m->n_tensors; i++) {
    const cuvae_tensor *t = &m->tensors[i];
    char shape[48];
    cuvae_tensor_shape_string(t, shape, sizeof shape);
    fprintf(out, "%-16s %-14s %12zu %12zu\n", t->name, shape, t->offset, t->count);
  }
  fprintf(out, "%-16s %-14s %12s %12zu\n", "total", "", "", m->n_values);
  fprintf(out, "%-16s %-14s %12s %12zu\n", "buffer", "(aligned)", "", m->n_params);
}

/* A dense layer costs 2*B*in*out FLOPs forward and twice that backward (dW and dx), except that the first
 * encoder layer needs no dx. */
double cuvae_model_step_flops(const cuvae_model *m, int B) {
  double f = 0.0;
  for (int i = 0; i < m->n_enc; i++) {
    const double mac = (double)B * m->enc[i].in * m->enc[i].out;
    f += 2.0 * mac * (i == 0 ? 2.0 : 3.0);
  }
  for (int i = 0; i < m->n_dec; i++) f += 6.0 * (double)B * m->dec[i].in * m->dec[i].out;
  return f;
}
