/* The config's cross-key checks and finalize, its INI text, the printed schema and the architecture comparison
 * (the key table they read is in src/core/config.c; src/core/config_internal.h shares it). */
#define _POSIX_C_SOURCE 200809L /* open_memstream */
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config_internal.h"
#include "cuvae/config.h"
#include "cuvae/error.h"

/* ---- cross-key checks and output ------------------------------------------------------------------ */

/* The four paths of a named dataset, under $CUVAE_DATA_DIR when set. */
static int dataset_paths(const char *dataset, char out[4][CUVAE_PATH_MAX]) {
  for (size_t d = 0; d < (size_t)cfg_n_datasets; d++) {
    if (strcmp(dataset, cfg_datasets[d].name) != 0) continue;
    const char *dir = getenv("CUVAE_DATA_DIR");
    if (!dir || !dir[0]) dir = cfg_datasets[d].dir;
    size_t dlen = strlen(dir);
    while (dlen > 1 && dir[dlen - 1] == '/') dlen--; /* "dir/" and "dir" name the same files */
    for (int j = 0; j < 4; j++) {
      int w = snprintf(out[j], CUVAE_PATH_MAX, "%.*s/%s", (int)dlen, dir, cfg_datasets[d].files[j]);
      if (w < 0 || w >= CUVAE_PATH_MAX)
        return cuvae_error("config: [data] dataset %s: CUVAE_DATA_DIR '%.100s...' makes paths longer than %d", dataset,
                           dir, CUVAE_PATH_MAX - 1);
    }
    return 0;
  }
  return cuvae_error("config: [data] dataset: unknown dataset '%s'", dataset);
}

/* Keys of the model family that only make sense together. */
static int check_family(const cuvae_config *c) {
  if (c->binarize != CUVAE_BINARIZE_NONE && c->likelihood != CUVAE_LIK_BERNOULLI)
    return cuvae_error("config: [data] binarize = %s needs [model] likelihood = bernoulli", cfg_binarize[c->binarize]);
  if (c->gaussian_variance != CUVAE_VAR_FIXED && c->likelihood != CUVAE_LIK_GAUSSIAN)
    return cuvae_error("config: [model] gaussian_variance = %s needs [model] likelihood = gaussian",
                       cfg_variances[c->gaussian_variance]);
  /* Dequantization (docs/MATH.md (4.6)) turns 8-bit data into a density for a Gaussian decoder, and reports that
   * decoder's bound on the discrete data; the autoencoder reports no likelihood. */
  if (c->dequantize != CUVAE_DEQUANTIZE_NONE && (c->likelihood != CUVAE_LIK_GAUSSIAN || c->objective == CUVAE_OBJ_AE))
    return cuvae_error("config: [data] dequantize = %s needs [model] likelihood = gaussian and a likelihood objective "
                       "(got likelihood = %s, objective = %s)",
                       cfg_dequantize[c->dequantize], cfg_likelihoods[c->likelihood], cfg_objectives[c->objective]);
  if (c->min_variance > 0.0f && (c->likelihood != CUVAE_LIK_GAUSSIAN || c->gaussian_variance == CUVAE_VAR_FIXED))
    return cuvae_error("config: [model] min_variance = %g floors a learned variance: it needs likelihood = gaussian "
                       "with gaussian_variance = learned_shared or learned_per_dim",
                       (double)c->min_variance);
  if (c->objective == CUVAE_OBJ_AE) {
    if (c->samples != 1)
      return cuvae_error("config: [train] objective = ae has no noise: samples must be 1 (got %d)", c->samples);
    if (c->beta != 1.0f || c->beta_warmup_steps != 0)
      return cuvae_error("config: [train] objective = ae has no KL term: beta and beta_warmup_steps do not apply");
    if (c->gaussian_variance != CUVAE_VAR_FIXED)
      return cuvae_error("config: [train] objective = ae minimises squared error: [model] gaussian_variance must be "
                         "fixed");
  }
  if (c->objective == CUVAE_OBJ_IWAE && (c->beta != 1.0f || c->beta_warmup_steps != 0))
    return cuvae_error("config: [train] objective = iwae is the importance-weighted bound of the model: beta must be "
                       "1 and beta_warmup_steps 0");
  if (c->objective != CUVAE_OBJ_ELBO && c->kl != CUVAE_KL_ANALYTIC)
    return cuvae_error("config: [train] kl = sampled applies to objective = elbo only");
  /* Free bits (docs/MATH.md (3.4)) floor each dimension's closed-form KL: the sampled KL and the IWAE bound have
   * no per-dimension term to floor, and ae has no KL. */
  if (c->free_bits > 0.0f && (c->objective != CUVAE_OBJ_ELBO || c->kl != CUVAE_KL_ANALYTIC))
    return cuvae_error("config: [train] free_bits = %g needs objective = elbo with kl = analytic (the floor applies to "
                       "each latent dim's closed-form KL; got objective = %s, kl = %s)",
                       (double)c->free_bits, cfg_objectives[c->objective],
                       c->kl == CUVAE_KL_ANALYTIC ? "analytic" : "sampled");
  return 0;
}

/* Keys of the optimizer's schedule that only make sense together. */
static int check_schedule(const cuvae_config *c) {
  if (c->lr_min > c->lr)
    return cuvae_error("config: [train] lr_min = %g is above lr = %g (the cosine decay goes down to it)", c->lr_min,
                       c->lr);
  if (c->early_stop > 0 && c->validation == 0)
    return cuvae_error("config: [train] early_stop needs [data] validation, the examples it watches");
  if (c->lr_schedule == CUVAE_LR_STEP && c->lr_decay_steps == 0)
    return cuvae_error("config: [train] lr_schedule = step needs lr_decay_steps, the steps between two decays");
  return 0;
}

int cuvae_config_finalize(cuvae_config *c) {
  if (!c) return cuvae_error("config: no config");
  if (check_family(c) || check_schedule(c)) return -1;
  if (c->dataset[0] == '\0') {
    if (!c->train_images[0]) return cuvae_error("config: [data] train_images is required when dataset is empty");
    if (!c->test_images[0]) return cuvae_error("config: [data] test_images is required when dataset is empty");
    return 0;
  }
  char paths[4][CUVAE_PATH_MAX];
  if (dataset_paths(c->dataset, paths) != 0) return -1;
  /* A path already equal to the dataset's own is fine, so finalizing twice is harmless. */
  for (int j = 0; j < 4; j++) {
    const key_def *k = &cfg_keys[cfg_find_key("data", cfg_path_keys[j])];
    const char *field = (const char *)c + k->offset;
    if (field[0] && strcmp(field, paths[j]) != 0)
      return cuvae_error("config: [data] dataset = %s and %s = %.200s are both set (ambiguous); set dataset = "
                         "\"\" to use explicit paths, or remove the paths",
                         c->dataset, k->name, field);
  }
  for (int j = 0; j < 4; j++) {
    char *field = (char *)c + cfg_keys[cfg_find_key("data", cfg_path_keys[j])].offset;
    memset(field, 0, CUVAE_PATH_MAX);
    strcpy(field, paths[j]);
  }
  return 0;
}

char *cuvae_config_to_ini(const cuvae_config *c) {
  char *text = NULL, value[CUVAE_PATH_MAX + 64], paths[4][CUVAE_PATH_MAX];
  size_t size = 0;
  if (!c) {
    cuvae_error("config: no config");
    return NULL;
  }
  FILE *f = open_memstream(&text, &size);
  if (!f) {
    cuvae_error("config: out of memory writing the config");
    return NULL;
  }
  /* With a dataset, paths equal to its own are written as comments: reloading then finalizing gives them
   * back, and the text stays valid if the data directory moves. Other paths are written as they are. */
  bool resolved = c->dataset[0] && dataset_paths(c->dataset, paths) == 0;
  fprintf(f, "; cuvae configuration (every key; `cuvae help config` describes them)\n");
  for (int i = 0; i < cfg_n_keys; i++) {
    const key_def *k = &cfg_keys[i];
    if (i == 0 || strcmp(k->section, cfg_keys[i - 1].section) != 0) fprintf(f, "%s[%s]\n", i ? "\n" : "", k->section);
    cfg_format_value(c, k, value, sizeof value);
    bool from_dataset = false;
    for (int j = 0; j < 4; j++)
      if (resolved && strcmp(k->name, cfg_path_keys[j]) == 0 && strcmp(value, paths[j]) == 0) from_dataset = true;
    fprintf(f, "%s%s = %s\n", from_dataset ? "; (from dataset) " : "", k->name, value);
  }
  bool failed = ferror(f) != 0;
  if (fclose(f) != 0 || failed) {
    free(text);
    cuvae_error("config: out of memory writing the config");
    return NULL;
  }
  return text;
}

void cuvae_config_print_schema(FILE *out) {
  char range[256], list[256];
  static const char *const type_names[] = {"int", "int64", "uint64", "float", "string", "enum", "int list", "string"};
  fprintf(out, "Config keys (INI sections [data] [model] [train]; override with --set section.key=value):\n");
  for (int i = 0; i < cfg_n_keys; i++) {
    const key_def *k = &cfg_keys[i];
    if (i == 0 || strcmp(k->section, cfg_keys[i - 1].section) != 0) fprintf(out, "\n[%s]\n", k->section);
    range[0] = '\0';
    if (k->type == T_CORRUPT) {
      snprintf(range, sizeof range, "one of: none | gaussian:STD | mask:P");
    } else if (k->choices) {
      snprintf(range, sizeof range, "one of: %s", cfg_choice_list(k->choices, " | ", list, sizeof list));
    } else if (k->bounds & (HAS_MIN | HAS_MAX)) {
      char lo[64] = "", hi[64] = "";
      if (k->bounds & HAS_MIN) snprintf(lo, sizeof lo, "%s %.10g", k->bounds & MIN_EXCL ? ">" : ">=", k->min);
      if (k->bounds & HAS_MAX) snprintf(hi, sizeof hi, "%s %.10g", k->bounds & MAX_EXCL ? "<" : "<=", k->max);
      snprintf(range, sizeof range, "%s%s%s%s", k->type == T_INT_LIST ? "each " : "", lo, lo[0] && hi[0] ? ", " : "",
               hi);
    }
    fprintf(out, "  %-18s %-9s default %-*s%s%s\n", k->name, type_names[k->type], range[0] ? 16 : 0,
            k->def[0] ? k->def : "\"\"", range[0] ? " " : "", range);
    fprintf(out, "      %s\n", k->help);
  }
}

static void hidden_text(const cuvae_config *c, char *buf, size_t n) {
  cfg_format_value(c, &cfg_keys[cfg_find_key("model", "hidden")], buf, n);
  if (!buf[0]) snprintf(buf, n, "(none)");
}

int cuvae_config_same_architecture(const cuvae_config *a, const cuvae_config *b) {
  char va[256], vb[256];
  if (!a || !b) return cuvae_error("config: no config to compare");
  hidden_text(a, va, sizeof va);
  hidden_text(b, vb, sizeof vb);
  if (strcmp(va, vb) != 0) return cuvae_error("[model] hidden: checkpoint has %s, config has %s", va, vb);
  if (a->latent != b->latent)
    return cuvae_error("[model] latent: checkpoint has %d, config has %d", a->latent, b->latent);
  if (a->likelihood != b->likelihood)
    return cuvae_error("[model] likelihood: checkpoint has %s, config has %s", cuvae_likelihood_name(a->likelihood),
                       cuvae_likelihood_name(b->likelihood));
  /* sigma only enters the model through the gaussian likelihood */
  if (a->likelihood == CUVAE_LIK_GAUSSIAN && a->gaussian_variance == CUVAE_VAR_FIXED &&
      b->gaussian_variance == CUVAE_VAR_FIXED && a->sigma != b->sigma) {
    cfg_format_float(a->sigma, va, sizeof va);
    cfg_format_float(b->sigma, vb, sizeof vb);
    return cuvae_error("[model] sigma: checkpoint has %s, config has %s", va, vb);
  }
  if (a->activation != b->activation)
    return cuvae_error("[model] activation: checkpoint has %s, config has %s", cuvae_activation_name(a->activation),
                       cuvae_activation_name(b->activation));
  if (a->gaussian_variance != b->gaussian_variance)
    return cuvae_error("[model] gaussian_variance: checkpoint has %s, config has %s",
                       cfg_variances[a->gaussian_variance], cfg_variances[b->gaussian_variance]);
  if (a->decoder != b->decoder)
    return cuvae_error("[model] decoder: checkpoint has %s, config has %s", cfg_decoders[a->decoder],
                       cfg_decoders[b->decoder]);
  if (a->conditional != b->conditional)
    return cuvae_error("[model] conditional: checkpoint has %s, config has %s", cfg_false_true[a->conditional],
                       cfg_false_true[b->conditional]);
  if (a->conditional && a->classes != b->classes)
    return cuvae_error("[model] classes: checkpoint has %d, config has %d", a->classes, b->classes);
  return 0;
}

/* list[i], or "unknown" when i is outside the NULL-terminated list. */
static const char *choice_name(const char *const *list, int i) {
  for (int k = 0; list[k]; k++)
    if (k == i) return list[k];
  return "unknown";
}

const char *cuvae_activation_name(cuvae_activation a) {
  return a == CUVAE_ACT_NONE ? "none" : choice_name(cfg_activations, (int)a);
}

const char *cuvae_likelihood_name(cuvae_likelihood l) { return choice_name(cfg_likelihoods, (int)l); }

const char *cuvae_objective_name(cuvae_objective o) { return choice_name(cfg_objectives, (int)o); }

const char *cuvae_init_name(cuvae_init i) { return choice_name(cfg_inits, (int)i); }
const char *cuvae_precision_name(cuvae_precision p) { return choice_name(cfg_precisions, (int)p); }

int cuvae_precision_parse(const char *name, int *out) {
  for (int k = 0; cfg_precisions[k]; k++)
    if (strcmp(name, cfg_precisions[k]) == 0) {
      *out = k;
      return 0;
    }
  return cuvae_error("precision '%s': expected fp32, tf32 or bf16", name);
}
