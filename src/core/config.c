/* The run configuration. One key table (cfg_keys) is the schema: every key's section, type, place in
 * cuvae_config, range, default and help. Defaults, INI parsing (inih), --set overrides, validation,
 * to_ini and the printed schema are all driven by it, so each fact about a key lives in one place. This file holds
 * the table, parsing and --set; src/core/config_check.c the cross-key checks, finalize and the output. */
#define _POSIX_C_SOURCE 200809L /* open_memstream */
#include "cuvae/config.h"

#include <errno.h>
#include <ini.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "config_internal.h"
#include "cuvae/error.h"

/* ---- the schema ------------------------------------------------------------------------------------ */


const char *const cfg_likelihoods[] = {"bernoulli", "gaussian", NULL}; /* cuvae_likelihood order */
const char *const cfg_activations[] = {"relu", "tanh", NULL};          /* cuvae_activation order */
const char *const cfg_inits[] = {"torch", "he", NULL};                 /* cuvae_init order */
const char *const cfg_precisions[] = {"fp32", "tf32", "bf16", NULL};    /* cuvae_precision order */
static const char *const k_off_on[] = {"off", "on", NULL};                  /* 0, 1 */
static const char *const k_datasets[] = {"fashion-mnist", "", NULL};        /* "" = explicit paths */
const char *const cfg_false_true[] = {"false", "true", NULL};          /* 0, 1 */
const char *const cfg_variances[] = {"fixed", "learned_shared", "learned_per_dim", NULL}; /* cuvae_variance */
const char *const cfg_decoders[] = {"mlp", "linear", NULL};            /* cuvae_decoder order */
const char *const cfg_objectives[] = {"elbo", "iwae", "ae", NULL};     /* cuvae_objective order */
static const char *const k_kl_estimators[] = {"analytic", "sampled", NULL}; /* cuvae_kl_estimator order */
const char *const cfg_binarize[] = {"none", "dynamic", "static", NULL}; /* cuvae_binarize order */
const char *const cfg_lr_schedules[] = {"constant", "cosine", "step", NULL}; /* cuvae_lr_schedule order */
static const char *const k_corrupt_kinds[] = {"none", "gaussian", "mask", NULL}; /* cuvae_corrupt_kind order */
const char *const cfg_dequantize[] = {"none", "uniform", NULL};          /* cuvae_dequantize order */

const cfg_dataset cfg_datasets[] = {
    {"fashion-mnist", "/usr/share/datasets/fashion-mnist",
     {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
      "t10k-labels-idx1-ubyte.gz"}},
};
const int cfg_n_datasets = (int)(sizeof cfg_datasets / sizeof cfg_datasets[0]);
const char *const cfg_path_keys[4] = {"train_images", "train_labels", "test_images", "test_labels"};

#define FIELD(f) offsetof(cuvae_config, f), sizeof(((cuvae_config *)0)->f)
#define MAX_DIM (1 << 20)

const key_def cfg_keys[] = {
    {"data", "dataset", T_STRING, FIELD(dataset), 0, 0, 0, "fashion-mnist", k_datasets,
     "named dataset, files under /usr/share/datasets/NAME or $CUVAE_DATA_DIR; empty = the paths below", 0},
    {"data", "train_images", T_STRING, FIELD(train_images), 0, 0, 0, "", NULL,
     "training images: IDX (plain or .gz) or .npy; only with dataset empty", 0},
    {"data", "train_labels", T_STRING, FIELD(train_labels), 0, 0, 0, "", NULL, "training labels (optional)", 0},
    {"data", "test_images", T_STRING, FIELD(test_images), 0, 0, 0, "", NULL, "test images; only with dataset empty", 0},
    {"data", "test_labels", T_STRING, FIELD(test_labels), 0, 0, 0, "", NULL, "test labels (optional)", 0},
    {"data", "binarize", T_ENUM, FIELD(binarize), 0, 0, 0, "none", cfg_binarize,
     "Bernoulli data only: none; dynamic = each training step re-draws x ~ Bernoulli(x) (the test set is drawn "
     "once); static = both sets drawn once at load", 0},
    {"data", "validation", T_INT, FIELD(validation), HAS_MIN, 0, 0, "0", NULL,
     "hold the last N examples of the training set out of training and evaluate them every epoch (val_nelbo in "
     "metrics.jsonl; the best epoch's checkpoint is kept as best.cuvae); 0 = none", 0},
    {"data", "corrupt", T_CORRUPT, FIELD(corrupt), 0, 0, 0, "none", k_corrupt_kinds,
     "corrupt the encoder's training input (denoising): none, gaussian:STD (x + STD * N(0, 1)) or mask:P (each "
     "input zeroed with probability P); the target stays clean", 0},
    {"data", "dequantize", T_ENUM, FIELD(dequantize), 0, 0, 0, "none", cfg_dequantize,
     "Gaussian decoder on 8-bit data (every value k/255): none; uniform = train on y = (k + u) / 256, u ~ U(0, 1) "
     "drawn every step (evaluated sets: drawn once at load), and report the bound on the discrete data's -log P(k): "
     "recon + D ln 256 nats, bits/dim = nelbo / (D ln 2)", 0},
    {"model", "hidden", T_INT_LIST, FIELD(hidden), HAS_MIN | HAS_MAX, 1, MAX_DIM, "400", NULL,
     "encoder hidden widths, input side first, comma-separated (decoder mirrors); empty = none",
     offsetof(cuvae_config, n_hidden)},
    {"model", "latent", T_INT, FIELD(latent), HAS_MIN | HAS_MAX, 1, MAX_DIM, "20", NULL, "latent dimension Z", 0},
    {"model", "likelihood", T_ENUM, FIELD(likelihood), 0, 0, 0, "bernoulli", cfg_likelihoods,
     "decoder likelihood: bernoulli, or gaussian (variance: gaussian_variance)", 0},
    {"model", "sigma", T_FLOAT, FIELD(sigma), HAS_MIN | MIN_EXCL, 0, 0, "1", NULL,
     "standard deviation of the gaussian decoder (the initial one when the variance is learned)", 0},
    {"model", "gaussian_variance", T_ENUM, FIELD(gaussian_variance), 0, 0, 0, "fixed", cfg_variances,
     "gaussian decoder's variance: fixed (sigma), learned_shared (one learned log-variance), learned_per_dim (a "
     "second decoder head of per-feature log-variances)", 0},
    {"model", "min_variance", T_FLOAT, FIELD(min_variance), HAS_MIN, 0, 0, "0", NULL,
     "learned variances (learned_shared, learned_per_dim): floor of the decoder variance, log-variance "
     "max(lv, ln min_variance) with no gradient below it; 0 = off", 0},
    {"model", "decoder", T_ENUM, FIELD(decoder), 0, 0, 0, "mlp", cfg_decoders,
     "decoder: mlp (mirrors the encoder's hidden layers) or linear (one affine map from z)", 0},
    {"model", "conditional", T_ENUM, FIELD(conditional), 0, 0, 0, "false", cfg_false_true,
     "conditional VAE: the label, one-hot, is appended to the encoder input and to the decoder input (needs "
     "label files)", 0},
    {"model", "classes", T_INT, FIELD(classes), HAS_MIN | HAS_MAX, 2, 65536, "10", NULL,
     "conditional VAE: number of classes C (labels must lie in 0..C-1)", 0},
    {"model", "activation", T_ENUM, FIELD(activation), 0, 0, 0, "relu", cfg_activations, "hidden-layer activation", 0},
    {"model", "init", T_ENUM, FIELD(init), 0, 0, 0, "torch", cfg_inits,
     "initial weights: torch = W, b ~ U(+-1/sqrt(fan_in)) (nn.Linear default); he = He-normal (relu) or "
     "Xavier-uniform weights, zero biases", 0},
    {"train", "epochs", T_INT, FIELD(epochs), HAS_MIN, 1, 0, "10", NULL, "passes over the training set", 0},
    {"train", "batch_size", T_INT, FIELD(batch_size), HAS_MIN, 1, 0, "128", NULL, "examples per step", 0},
    {"train", "lr", T_FLOAT, FIELD(lr), HAS_MIN | MIN_EXCL, 0, 0, "1e-3", NULL, "Adam learning rate", 0},
    {"train", "beta1", T_FLOAT, FIELD(beta1), HAS_MIN | HAS_MAX | MAX_EXCL, 0, 1, "0.9", NULL,
     "Adam first-moment decay", 0},
    {"train", "beta2", T_FLOAT, FIELD(beta2), HAS_MIN | HAS_MAX | MAX_EXCL, 0, 1, "0.999", NULL,
     "Adam second-moment decay", 0},
    {"train", "adam_eps", T_FLOAT, FIELD(adam_eps), HAS_MIN | MIN_EXCL, 0, 0, "1e-8", NULL, "Adam epsilon", 0},
    {"train", "clip_norm", T_FLOAT, FIELD(clip_norm), HAS_MIN, 0, 0, "0", NULL,
     "clip the global gradient norm to this; 0 = off", 0},
    {"train", "lr_schedule", T_ENUM, FIELD(lr_schedule), 0, 0, 0, "constant", cfg_lr_schedules,
     "learning rate after the warm-up: constant (lr); cosine (from lr down to lr_min over lr_decay_steps, then "
     "lr_min); step (lr times lr_gamma after every lr_decay_steps steps)", 0},
    {"train", "lr_warmup_steps", T_INT64, FIELD(lr_warmup_steps), HAS_MIN, 0, 0, "0", NULL,
     "raise the learning rate linearly from lr / lr_warmup_steps to lr over the first lr_warmup_steps steps; 0 = off",
     0},
    {"train", "lr_min", T_FLOAT, FIELD(lr_min), HAS_MIN, 0, 0, "0", NULL,
     "cosine: the learning rate at the end of the decay (at most lr)", 0},
    {"train", "lr_decay_steps", T_INT64, FIELD(lr_decay_steps), HAS_MIN, 0, 0, "0", NULL,
     "cosine: the step (0-based) at which the rate reaches lr_min (0 = the run's last step, epochs x steps per epoch - 1); "
     "step: steps between two decays (required)", 0},
    {"train", "lr_gamma", T_FLOAT, FIELD(lr_gamma), HAS_MIN | MIN_EXCL | HAS_MAX, 0, 1, "0.1", NULL,
     "step: the factor applied to the rate at every decay", 0},
    {"train", "ema", T_FLOAT, FIELD(ema), HAS_MIN | HAS_MAX | MAX_EXCL, 0, 1, "0", NULL,
     "keep an exponential moving average of the weights with this decay (e.g. 0.999), saved in the checkpoint and "
     "used by eval, the image commands and export (--weights raw: the trained ones); 0 = off", 0},
    {"train", "skip_grad_norm", T_FLOAT, FIELD(skip_grad_norm), HAS_MIN, 0, 0, "0", NULL,
     "skip (do not apply) an update whose gradient norm is above this; 0 = off", 0},
    {"train", "skip_zscore", T_FLOAT, FIELD(skip_zscore), HAS_MIN, 0, 0, "0", NULL,
     "skip an update whose gradient norm is more than this many standard deviations above the mean of the last "
     "skip_window applied updates (once that many were applied); 0 = off", 0},
    {"train", "skip_window", T_INT, FIELD(skip_window), HAS_MIN | HAS_MAX, 2, 4096, "100", NULL,
     "updates whose gradient norms make the skip_zscore statistics", 0},
    {"train", "skip_nonfinite", T_ENUM, FIELD(skip_nonfinite), 0, 0, 0, "false", cfg_false_true,
     "skip a step whose loss or gradient is not finite instead of stopping (always so when skip_grad_norm or "
     "skip_zscore is set)", 0},
    {"train", "early_stop", T_INT, FIELD(early_stop), HAS_MIN, 0, 0, "0", NULL,
     "with [data] validation: stop when the validation NELBO has not improved for this many epochs; 0 = off", 0},
    {"train", "skip_limit", T_INT, FIELD(skip_limit), HAS_MIN, 1, 0, "10", NULL,
     "stop training, with a message, after this many skipped steps in a row", 0},
    {"train", "seed", T_UINT64, FIELD(seed), 0, 0, 0, "1", NULL, "seed of every random draw", 0},
    {"train", "max_steps", T_INT64, FIELD(max_steps), HAS_MIN, 0, 0, "0", NULL,
     "stop after this many steps; 0 = no limit", 0},
    {"train", "eval_batch_size", T_INT, FIELD(eval_batch_size), HAS_MIN, 1, 0, "1000", NULL,
     "examples per evaluation batch", 0},
    {"train", "log_every", T_INT, FIELD(log_every), HAS_MIN, 1, 0, "50", NULL, "steps between log lines", 0},
    {"train", "threads", T_INT, FIELD(threads), HAS_MIN | HAS_MAX, 0, 1024, "0", NULL,
     "CPU threads (per rank under mpirun); 0 = the cores this process may use (all, or those its rank is bound to)", 0},
    {"train", "precision", T_ENUM, FIELD(precision), 0, 0, 0, "fp32", cfg_precisions,
     "GEMM math: fp32; tf32 (CUDA tensor cores; the CPU computes fp32); bf16 (bfloat16 GEMM operands, fp32 "
     "accumulation, fp32 master weights and Adam state; CPU: oneDNN on AMX / AVX512-BF16)", 0},
    {"train", "cuda_graph", T_ENUM, FIELD(cuda_graph), 0, 0, 0, "on", k_off_on,
     "CUDA backend: replay each training step as one captured CUDA graph (on), or launch its kernels one by one "
     "(off; same results bit for bit)", 0},
    {"train", "shard_optimizer", T_ENUM, FIELD(shard_optimizer), 0, 0, 0, "false", cfg_false_true,
     "several ranks (mpirun): ZeRO-1, each rank keeps and updates only its 1/N of Adam's m and v; the gradient is "
     "reduce-scattered and the parameters all-gathered (CPU and CUDA backends; no effect in one process)", 0},
    {"train", "objective", T_ENUM, FIELD(objective), 0, 0, 0, "elbo", cfg_objectives,
     "elbo (negative ELBO, `samples` draws of z per example), iwae (importance-weighted bound with K = samples), "
     "ae (autoencoder: z = mu, squared error, no KL, no noise)", 0},
    {"train", "samples", T_INT, FIELD(samples), HAS_MIN | HAS_MAX, 1, 4096, "1", NULL,
     "draws of z per example: L of the multi-sample ELBO, or K of the IWAE bound (1 for ae)", 0},
    {"train", "kl", T_ENUM, FIELD(kl), 0, 0, 0, "analytic", k_kl_estimators,
     "objective = elbo: KL term in closed form (analytic) or log q(z|x) - log p(z) at the drawn z (sampled; with "
     "samples = 1 this is the IWAE objective with K = 1)", 0},
    {"train", "beta", T_FLOAT, FIELD(beta), HAS_MIN, 0, 0, "1", NULL,
     "weight of the KL term (beta-VAE; 1 = the ELBO)", 0},
    {"train", "beta_warmup_steps", T_INT64, FIELD(beta_warmup_steps), HAS_MIN, 0, 0, "0", NULL,
     "raise the KL weight linearly from 0 to beta over this many steps; 0 = off", 0},
    {"train", "free_bits", T_FLOAT, FIELD(free_bits), HAS_MIN, 0, 0, "0", NULL,
     "free bits (Kingma et al. 2016), nats per latent dim: the KL term becomes beta sum_j max(free_bits, KL_j), KL_j "
     "the batch mean of dim j's KL, so a dim below the floor gets no KL gradient; 0 = off (objective = elbo with kl = "
     "analytic)", 0},
};
#define N_KEYS ((int)(sizeof cfg_keys / sizeof cfg_keys[0]))
const int cfg_n_keys = N_KEYS;

_Static_assert(sizeof(cuvae_likelihood) == sizeof(int), "enums are stored as int");
_Static_assert(sizeof(cuvae_activation) == sizeof(int), "enums are stored as int");
_Static_assert(sizeof(cuvae_init) == sizeof(int), "enums are stored as int");
_Static_assert(sizeof(cuvae_precision) == sizeof(int), "enums are stored as int");
_Static_assert(sizeof(cuvae_variance) == sizeof(int) && sizeof(cuvae_decoder) == sizeof(int) &&
                   sizeof(cuvae_objective) == sizeof(int) && sizeof(cuvae_kl_estimator) == sizeof(int) &&
                   sizeof(cuvae_binarize) == sizeof(int) && sizeof(cuvae_dequantize) == sizeof(int) && sizeof(cuvae_lr_schedule) == sizeof(int),
               "enums are stored as int");
_Static_assert(sizeof(long long) == sizeof(int64_t), "int64 keys are parsed with strtoll");
_Static_assert(sizeof(unsigned long long) == sizeof(uint64_t), "uint64 keys are parsed with strtoull");

#define MAX_LINE 4096            /* longest accepted INI line, in characters */
#define MAX_FILE ((size_t)1 << 20) /* largest accepted config file */

int cfg_find_key(const char *section, const char *name) {
  for (int i = 0; i < N_KEYS; i++)
    if (strcmp(cfg_keys[i].section, section) == 0 && strcmp(cfg_keys[i].name, name) == 0) return i;
  return -1;
}

static bool section_known(const char *section) {
  for (int i = 0; i < N_KEYS; i++)
    if (strcmp(cfg_keys[i].section, section) == 0) return true;
  return false;
}

/* "[data], [model], [train]": the sections in table order. */
static const char *section_list(char *buf, size_t n) {
  buf[0] = '\0';
  for (int i = 0; i < N_KEYS; i++) {
    if (i > 0 && strcmp(cfg_keys[i].section, cfg_keys[i - 1].section) == 0) continue;
    size_t len = strlen(buf);
    snprintf(buf + len, n - len, "%s[%s]", len ? ", " : "", cfg_keys[i].section);
  }
  return buf;
}

/* "epochs, batch_size, ...": the keys of one section. */
static const char *key_list(const char *section, char *buf, size_t n) {
  buf[0] = '\0';
  for (int i = 0; i < N_KEYS; i++) {
    if (strcmp(cfg_keys[i].section, section) != 0) continue;
    size_t len = strlen(buf);
    snprintf(buf + len, n - len, "%s%s", len ? ", " : "", cfg_keys[i].name);
  }
  return buf;
}

/* "a, b, \"\" (empty)": the choices of an enum or restricted string. */
const char *cfg_choice_list(const char *const *choices, const char *sep, char *buf, size_t n) {
  buf[0] = '\0';
  for (int i = 0; choices[i]; i++) {
    size_t len = strlen(buf);
    snprintf(buf + len, n - len, "%s%s", i ? sep : "", choices[i][0] ? choices[i] : "\"\" (empty)");
  }
  return buf;
}

/* ---- parsing and validating one value ------------------------------------------------------------- */

/* Writes a problem (printf-style) into why and returns -1. */
static int problem(char *why, size_t n, const char *fmt, ...) CUVAE_PRINTF(3, 4);
static int problem(char *why, size_t n, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, n, fmt, ap);
  va_end(ap);
  return -1;
}

/* A number outside the key's range is a problem. */
static int check_bounds(const key_def *k, double x, const char *text, char *why, size_t n) {
  bool has_min = k->bounds & HAS_MIN, has_max = k->bounds & HAS_MAX;
  bool min_excl = k->bounds & MIN_EXCL, max_excl = k->bounds & MAX_EXCL;
  if (has_min && min_excl && !(x > k->min)) return problem(why, n, "'%.100s' must be greater than %.10g", text, k->min);
  if (has_min && !min_excl && x < k->min) return problem(why, n, "'%.100s' is below the minimum %.10g", text, k->min);
  if (has_max && max_excl && !(x < k->max)) return problem(why, n, "'%.100s' must be less than %.10g", text, k->max);
  if (has_max && !max_excl && x > k->max) return problem(why, n, "'%.100s' is above the maximum %.10g", text, k->max);
  return 0;
}

/* Strict base-10 integer: the whole text, no overflow. */
static int parse_ll(const char *text, long long *out, char *why, size_t n) {
  char *end;
  errno = 0;
  long long v = strtoll(text, &end, 10);
  if (end == text || *end != '\0') return problem(why, n, "'%.100s' is not an integer", text);
  if (errno == ERANGE) return problem(why, n, "'%.100s' is out of range", text);
  *out = v;
  return 0;
}

/* Strict float: the whole text, finite, representable as a float (strtof rounds once, straight to float). */
static int parse_float(const char *text, float *out, char *why, size_t n) {
  char *end;
  errno = 0;
  float f = strtof(text, &end);
  if (end == text || *end != '\0') return problem(why, n, "'%.100s' is not a number", text);
  /* ERANGE: overflow, or underflow to a subnormal or zero */
  if (errno == ERANGE) return problem(why, n, "'%.100s' is out of range for a float", text);
  if (!isfinite(f)) return problem(why, n, "'%.100s' is not a finite number", text);
  *out = f;
  return 0;
}

/* Comma-separated list of integers, each within the key's bounds; "" is the empty list. */
static int parse_int_list(const key_def *k, const char *text, int *vals, int *count, char *why, size_t n) {
  int max_count = (int)(k->size / sizeof(int));
  *count = 0;
  if (*text == '\0') return 0;
  for (const char *p = text;; p++) {
    const char *comma = strchr(p, ',');
    size_t len = comma ? (size_t)(comma - p) : strlen(p);
    while (len && (*p == ' ' || *p == '\t')) p++, len--; /* trim the entry */
    while (len && (p[len - 1] == ' ' || p[len - 1] == '\t')) len--;
    char tok[32];
    long long v = 0;
    if (len == 0 || len >= sizeof tok)
      return problem(why, n, "'%.100s' is not a comma-separated list of integers", text);
    memcpy(tok, p, len);
    tok[len] = '\0';
    if (parse_ll(tok, &v, why, n) != 0 || check_bounds(k, (double)v, tok, why, n) != 0) return -1;
    if (*count == max_count) return problem(why, n, "'%.100s' has more than %d entries", text, max_count);
    vals[(*count)++] = (int)v; /* within [min, max], so fits an int */
    if (!comma) return 0;
    p = comma;
  }
}

/* A string value must survive a round trip through an INI file: no control characters, and nothing
 * inih would read as a comment. Restricted strings must be one of their choices. */
static int check_string(const key_def *k, const char *text, char *why, size_t n) {
  char list[256];
  size_t len = strlen(text);
  if (len >= k->size) return problem(why, n, "value is longer than %zu characters", k->size - 1);
  for (size_t i = 0; i < len; i++) {
    unsigned char ch = (unsigned char)text[i];
    bool comment = (ch == ';' || ch == '#') && (i == 0 || text[i - 1] == ' ' || text[i - 1] == '\t');
    if (ch < 0x20 || ch == 0x7f || comment)
      return problem(why, n, "'%.100s' contains a control character or a comment start (';' or '#')", text);
  }
  if (!k->choices) return 0;
  for (int i = 0; k->choices[i]; i++)
    if (strcmp(text, k->choices[i]) == 0) return 0;
  return problem(why, n, "unknown %s '%.100s' (known: %s)", k->name, text,
                 cfg_choice_list(k->choices, ", ", list, sizeof list));
}

/* Parses `text` (already trimmed) for key k and stores it in c. On failure c is unchanged and the problem
 * is written into why. Stored values are canonical (unused string and list bytes zeroed), so two configs
 * with the same values compare equal field by field. */
static int set_value(cuvae_config *c, const key_def *k, const char *text, char *why, size_t n) {
  char *field = (char *)c + k->offset, *end, list[256];
  long long ll = 0;
  unsigned long long u = 0;
  float f = 0;
  int vals[64], count = 0;
  switch (k->type) {
  case T_INT:
    if (parse_ll(text, &ll, why, n) != 0) return -1;
    if (ll < INT_MIN || ll > INT_MAX) return problem(why, n, "'%.100s' is out of range", text);
    if (check_bounds(k, (double)ll, text, why, n) != 0) return -1;
    *(int *)field = (int)ll;
    return 0;
  case T_INT64:
    if (parse_ll(text, &ll, why, n) != 0 || check_bounds(k, (double)ll, text, why, n) != 0) return -1;
    *(int64_t *)field = (int64_t)ll;
    return 0;
  case T_UINT64:
    errno = 0;
    u = strtoull(text, &end, 10);
    if (end == text || *end != '\0' || text[0] == '-') /* strtoull silently negates "-1" */
      return problem(why, n, "'%.100s' is not an unsigned integer", text);
    if (errno == ERANGE) return problem(why, n, "'%.100s' is out of range", text);
    *(uint64_t *)field = (uint64_t)u;
    return 0;
  case T_FLOAT:
    if (parse_float(text, &f, why, n) != 0 || check_bounds(k, f, text, why, n) != 0) return -1;
    *(float *)field = f;
    return 0;
  case T_STRING:
    if (check_string(k, text, why, n) != 0) return -1;
    memset(field, 0, k->size);
    memcpy(field, text, strlen(text));
    return 0;
  case T_ENUM:
    for (int i = 0; k->choices[i]; i++) {
      if (strcmp(text, k->choices[i]) == 0) {
        memcpy(field, &i, sizeof i);
        return 0;
      }
    }
    return problem(why, n, "'%.100s' is not one of: %s", text, cfg_choice_list(k->choices, ", ", list, sizeof list));
  case T_CORRUPT: {
    /* "none", "gaussian:STD" (STD > 0) or "mask:P" (0 < P < 1) */
    cuvae_corrupt cv = {CUVAE_CORRUPT_NONE, 0.0f};
    const char *colon = strchr(text, ':');
    const size_t name_len = colon ? (size_t)(colon - text) : strlen(text);
    int kind = -1;
    for (int i = 0; k->choices[i]; i++)
      if (strlen(k->choices[i]) == name_len && strncmp(text, k->choices[i], name_len) == 0) kind = i;
    if (kind < 0 || (kind == CUVAE_CORRUPT_NONE) != (colon == NULL))
      return problem(why, n, "'%.100s' is not one of: none, gaussian:STD, mask:P", text);
    cv.kind = (cuvae_corrupt_kind)kind;
    if (colon) {
      if (parse_float(colon + 1, &cv.level, why, n) != 0) return -1;
      if (kind == CUVAE_CORRUPT_GAUSSIAN && !(cv.level > 0.0f))
        return problem(why, n, "'%.100s': the noise STD must be greater than 0", text);
      if (kind == CUVAE_CORRUPT_MASK && !(cv.level > 0.0f && cv.level < 1.0f))
        return problem(why, n, "'%.100s': the mask probability P must lie in (0, 1)", text);
    }
    memcpy(field, &cv, sizeof cv);
    return 0;
  }
  case T_INT_LIST:
    if (k->size > sizeof vals || parse_int_list(k, text, vals, &count, why, n) != 0) return -1;
    memset(field, 0, k->size);
    memcpy(field, vals, (size_t)count * sizeof(int));
    *(int *)((char *)c + k->count_offset) = count;
    return 0;
  }
  return problem(why, n, "internal error: key has no type");
}

/* Shortest "%.Ng" text that reads back as exactly f. */
void cfg_format_float(float f, char *buf, size_t n) {
  for (int prec = 1; prec <= 9; prec++) {
    snprintf(buf, n, "%.*g", prec, (double)f);
    if (strtof(buf, NULL) == f) return;
  }
  snprintf(buf, n, "%.9g", (double)f); /* 9 significant digits always identify a float */
}

/* The value of key k in c, as INI text. */
void cfg_format_value(const cuvae_config *c, const key_def *k, char *buf, size_t n) {
  const char *field = (const char *)c + k->offset;
  int i;
  buf[0] = '\0';
  switch (k->type) {
  case T_INT: snprintf(buf, n, "%d", *(const int *)field); break;
  case T_INT64: snprintf(buf, n, "%" PRId64, *(const int64_t *)field); break;
  case T_UINT64: snprintf(buf, n, "%" PRIu64, *(const uint64_t *)field); break;
  case T_FLOAT: cfg_format_float(*(const float *)field, buf, n); break;
  case T_STRING: snprintf(buf, n, "%.*s", (int)k->size, field); break;
  case T_ENUM: {
    memcpy(&i, field, sizeof i);
    int count = 0;
    while (k->choices[count]) count++;
    snprintf(buf, n, "%s", i >= 0 && i < count ? k->choices[i] : "?");
    break;
  }
  case T_CORRUPT: {
    cuvae_corrupt cv;
    memcpy(&cv, field, sizeof cv);
    char level[32];
    cfg_format_float(cv.level, level, sizeof level);
    if (cv.kind == CUVAE_CORRUPT_NONE) snprintf(buf, n, "none");
    else snprintf(buf, n, "%s:%s", cv.kind == CUVAE_CORRUPT_GAUSSIAN ? "gaussian" : "mask", level);
    break;
  }
  case T_INT_LIST: {
    int count = *(const int *)((const char *)c + k->count_offset);
    for (i = 0; i < count && i < (int)(k->size / sizeof(int)); i++) {
      size_t len = strlen(buf);
      snprintf(buf + len, n - len, "%s%d", i ? ", " : "", ((const int *)field)[i]);
    }
    break;
  }
  }
}

/* ---- defaults, files and --set ------------------------------------------------------------------- */

void cuvae_config_defaults(cuvae_config *c) {
  char why[256];
  memset(c, 0, sizeof *c);
  /* The defaults are valid values of their keys (test Config.Defaults checks every one). */
  for (int i = 0; i < N_KEYS; i++) (void)set_value(c, &cfg_keys[i], cfg_keys[i].def, why, sizeof why);
}

/* State shared by the line reader and the key handler during one parse. */
typedef struct {
  cuvae_config *c;
  const char *name;          /* file name for messages */
  const char *text;
  size_t pos, len;
  int lineno;                /* line of the text most recently handed to inih */
  bool at_line_start;
  bool failed;               /* a message is stored; stop */
  int seen_line[N_KEYS];     /* line where each key was set, 0 = not yet (duplicates are errors) */
} parse_state;

/* The name of a section header at the start of line p ("" if the line is not one). */
static void header_name(const char *p, const char *stop, char *out, size_t n) {
  out[0] = '\0';
  while (p < stop && (*p == ' ' || *p == '\t')) p++;
  if (p == stop || *p != '[') return;
  const char *close = memchr(p, ']', (size_t)(stop - p));
  const char *nl = memchr(p, '\n', (size_t)(stop - p));
  if (!close || (nl && nl < close)) return; /* malformed: inih reports it */
  size_t len = (size_t)(close - ++p); /* untrimmed, as inih hands it to the handler */
  if (len >= n) len = n - 1;
  memcpy(out, p, len);
  out[len] = '\0';
}

/* inih's fgets-like reader over the text: counts lines (inih's handler does not get them in this build)
 * and rejects unknown section headers, which inih would not report when the section has no keys. */
static char *read_line(char *str, int num, void *stream) {
  parse_state *st = stream;
  if (st->failed || st->pos >= st->len || num < 2) return NULL;
  const char *p = st->text + st->pos, *stop = st->text + st->len;
  if (st->at_line_start) {
    char section[128], list[128];
    st->lineno++;
    header_name(p, stop, section, sizeof section);
    if (section[0] && !section_known(section)) {
      cuvae_error("%s:%d: unknown section [%s] (valid sections: %s)", st->name, st->lineno, section,
                  section_list(list, sizeof list));
      st->failed = true;
      return NULL;
    }
  }
  size_t n = 0;
  while (n < (size_t)num - 1 && p + n < stop) {
    str[n] = p[n];
    if (p[n++] == '\n') break;
  }
  str[n] = '\0';
  st->pos += n;
  st->at_line_start = str[n - 1] == '\n';
  return str;
}

static int on_pair(void *user, const char *section, const char *name, const char *value) {
  parse_state *st = user;
  char why[512], list[1024];
  if (st->failed) return 0;
  st->failed = true; /* until the pair is accepted */
  int i = cfg_find_key(section, name);
  if (section[0] == '\0') {
    cuvae_error("%s:%d: key '%s' is outside any section (put it under one of %s)", st->name, st->lineno, name,
                section_list(list, sizeof list));
  } else if (!section_known(section)) {
    cuvae_error("%s:%d: unknown section [%s] (valid sections: %s)", st->name, st->lineno, section,
                section_list(list, sizeof list));
  } else if (i < 0) {
    cuvae_error("%s:%d: unknown key '%s' in [%s] (valid keys: %s)", st->name, st->lineno, name, section,
                key_list(section, list, sizeof list));
  } else if (st->seen_line[i]) {
    cuvae_error("%s:%d: [%s] %s: duplicate key (already set on line %d)", st->name, st->lineno, section, name,
                st->seen_line[i]);
  } else if (set_value(st->c, &cfg_keys[i], value, why, sizeof why) != 0) {
    cuvae_error("%s:%d: [%s] %s: %s", st->name, st->lineno, section, name, why);
  } else {
    st->seen_line[i] = st->lineno;
    st->failed = false;
  }
  return !st->failed;
}

/* inih keeps its options in globals (Debian's build makes them run-time variables). parse_text sets ours
 * for one parse and then restores the previous values for any other user of inih in the process: a heap
 * line buffer that holds the longest line; indented lines are keys, not continuations (so a repeated key is
 * a duplicate, not a multi-line value); ';' and '#' start comments, also after a value; stop at an error. */
static char k_comment_chars[] = ";#";
#define INIH_OPTIONS(X)                                                                                      \
  X(bool, ini_use_stack, false) X(bool, ini_allow_realloc, true) X(int, ini_max_line, MAX_LINE + 3)          \
  X(int, ini_initial_alloc, MAX_LINE + 3) X(bool, ini_allow_multiline, false)                                 \
  X(bool, ini_allow_inline_comments, true) X(char *, ini_inline_comment_prefixes, k_comment_chars)           \
  X(char *, ini_start_comment_prefixes, k_comment_chars) X(bool, ini_allow_no_value, false)                  \
  X(bool, ini_stop_on_first_error, true)
#define INIH_SAVE_AND_SET(type, var, value) type saved_##var = var; var = value;
#define INIH_RESTORE(type, var, value) var = saved_##var;

/* Parses INI text over c; c changes only if the whole text is valid. */
static int parse_text(cuvae_config *c, const char *text, size_t len, const char *name) {
  if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) text += 3, len -= 3; /* UTF-8 byte-order mark */
  /* Lines must fit inih's buffer, else inih would split them into two lines silently. */
  int line = 1;
  for (size_t start = 0, i = 0; i <= len; i++) {
    if (i < len && text[i] != '\n') continue;
    if (i - start > MAX_LINE) return cuvae_error("%s:%d: line is longer than %d characters", name, line, MAX_LINE);
    start = i + 1;
    line++;
  }
  cuvae_config tmp = *c;
  parse_state st = {.c = &tmp, .name = name, .text = text, .len = len, .at_line_start = true};
  INIH_OPTIONS(INIH_SAVE_AND_SET)
  int rc = ini_parse_stream(read_line, &st, on_pair, &st);
  INIH_OPTIONS(INIH_RESTORE)
  if (st.failed) return -1;
  if (rc == -2) return cuvae_error("%s: out of memory while parsing", name);
  if (rc > 0) { /* a syntax error inih found on line rc: quote that line */
    size_t start = 0;
    for (int l = 1; l < rc && start < len; start++)
      if (text[start] == '\n') l++;
    int n = 0;
    while (start + (size_t)n < len && text[start + n] != '\n' && text[start + n] != '\r' && n < 80) n++;
    return cuvae_error("%s:%d: cannot parse '%.*s' (expected '[section]' or 'key = value')", name, rc, n,
                       text + start);
  }
  if (rc != 0) return cuvae_error("%s: parse error %d", name, rc);
  *c = tmp;
  return 0;
}

int cuvae_config_load_string(cuvae_config *c, const char *text, const char *name) {
  if (!name) name = "<config>";
  if (!c || !text) return cuvae_error("%s: no config text", name);
  return parse_text(c, text, strlen(text), name);
}

/* Reads at most MAX_FILE + 1 bytes of f into a buffer that grows with what arrives (a small config does not
 * cost a MAX_FILE allocation). Returns 0 with *buf (free()) and *n, or an errno value. */
static int read_config_bytes(FILE *f, char **buf, size_t *n) {
  size_t cap = 0, len = 0;
  char *b = NULL;
  for (;;) {
    if (len == cap) {
      if (cap > MAX_FILE) break; /* MAX_FILE + 1 bytes read: too large, the caller says so */
      size_t ncap = cap ? 2 * cap : 4096;
      if (ncap > MAX_FILE + 1) ncap = MAX_FILE + 1;
      char *nb = realloc(b, ncap);
      if (!nb) {
        free(b);
        return ENOMEM;
      }
      b = nb;
      cap = ncap;
    }
    size_t got = fread(b + len, 1, cap - len, f);
    len += got;
    if (got == 0) break;
  }
  if (ferror(f)) {
    free(b);
    return errno ? errno : EIO;
  }
  *buf = b;
  *n = len;
  return 0;
}

int cuvae_config_load_file(cuvae_config *c, const char *path) {
  if (!c || !path) return cuvae_error("config: no file name");
  FILE *f = fopen(path, "rb");
  if (!f) return cuvae_error("%s: cannot open config: %s", path, strerror(errno));
  char *buf = NULL;
  size_t n = 0;
  int err = read_config_bytes(f, &buf, &n);
  fclose(f);
  int rc;
  if (err) {
    rc = cuvae_error("%s: cannot read config: %s", path, strerror(err));
  } else if (n > MAX_FILE) {
    rc = cuvae_error("%s: config is larger than %zu bytes", path, MAX_FILE);
  } else if (memchr(buf, '\0', n)) {
    rc = cuvae_error("%s: config contains a NUL byte (not a text file?)", path);
  } else {
    rc = parse_text(c, buf, n, path);
  }
  free(buf);
  return rc;
}

static char *trim(char *s) {
  while (*s == ' ' || *s == '\t') s++;
  size_t n = strlen(s);
  while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' || s[n - 1] == '\r')) s[--n] = '\0';
  return s;
}

int cuvae_config_set(cuvae_config *c, const char *assignment) {
  char buf[MAX_LINE + 1], why[512], list[1024];
  if (!c || !assignment) return cuvae_error("--set: no assignment");
  if (strlen(assignment) >= sizeof buf) return cuvae_error("--set: assignment is longer than %d characters", MAX_LINE);
  strcpy(buf, assignment);
  char *eq = strchr(buf, '='), *dot = eq ? memchr(buf, '.', (size_t)(eq - buf)) : NULL;
  if (!eq || !dot) return cuvae_error("--set '%.100s': expected section.key=value, e.g. train.lr=3e-4", assignment);
  *eq = *dot = '\0';
  const char *section = trim(buf), *name = trim(dot + 1), *value = trim(eq + 1);
  int i = cfg_find_key(section, name);
  if (!section_known(section))
    return cuvae_error("--set %s.%s: unknown section [%s] (valid sections: %s)", section, name, section,
                       section_list(list, sizeof list));
  if (i < 0)
    return cuvae_error("--set %s.%s: unknown key '%s' in [%s] (valid keys: %s)", section, name, name, section,
                       key_list(section, list, sizeof list));
  if (set_value(c, &cfg_keys[i], value, why, sizeof why) != 0)
    return cuvae_error("--set %s.%s: %s", section, name, why);
  return 0;
}
