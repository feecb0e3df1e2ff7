/* Loading the data splits a config names, checked against the model it configures, with the binarization or the
 * dequantization drawn at load (see data_split.h); and mkdir -p for run directories. */
#include "data_split.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cuvae/cpu.h"
#include "cuvae/error.h"
#include "cuvae/rng.h"

/* op(x, u, x) for every value of ds (binarize_cpu: x ~ Bernoulli(x); dequantize_cpu: (255 x + u) / 256), u the
 * uniforms of stream `seed` in row order, a chunk of rows at a time. */
static int draw_split(cuvae_dataset *ds, uint64_t seed, void (*op)(const float *, const float *, float *, size_t)) {
  enum { CHUNK_ROWS = 4096 };  /* a multiple of 4, so every chunk starts at a multiple-of-4 offset */
  cuvae_noise *g = cuvae_noise_create(seed);
  float *u = malloc((size_t)CHUNK_ROWS * ds->dim * sizeof *u);
  int rc = g && u ? 0 : cuvae_error("out of memory drawing the data's noise");
  for (size_t start = 0; rc == 0 && start < ds->n; start += CHUNK_ROWS) {
    const size_t rows = ds->n - start < CHUNK_ROWS ? ds->n - start : CHUNK_ROWS;
    const size_t n = rows * ds->dim;
    rc = cuvae_noise_uniform(g, (uint64_t)start * ds->dim, u, n);
    if (rc == 0) op(ds->x + start * ds->dim, u, ds->x + start * ds->dim, n);
  }
  free(u);
  cuvae_noise_destroy(g);
  return rc;
}

/* 8-bit data, as dequantization needs (docs/MATH.md (4.6)): every value k/255 for an integer k in [0, 255]. A float
 * nearest k/255 gives 255 x within 255 2^-24 < 1.6e-5 of k, one computed as k * fl(1/255) within 2 such roundings
 * (3.1e-5); 1e-4 allows them with a margin of 3 and is far below the spacing 1 of the integers. */
static int check_8bit(const cuvae_dataset *ds, const char *images) {
  const size_t total = ds->n * ds->dim;
  for (size_t i = 0; i < total; i++) {
    const double v = 255.0 * ds->x[i], k = rint(v);
    if (!(k >= 0.0 && k <= 255.0 && fabs(v - k) <= 1e-4))
      return cuvae_error("%s: value %.9g at example %zu, feature %zu is not k/255 for an integer k in 0..255, which "
                         "[data] dequantize = uniform needs (8-bit data, e.g. uint8 images)",
                         images, (double)ds->x[i], i / ds->dim, i % ds->dim);
  }
  return 0;
}

int cuvae_dequantize_split(const cuvae_config *cfg, int which, cuvae_dataset *ds) {
  if (cfg->dequantize != CUVAE_DEQUANTIZE_UNIFORM) return 0;
  return draw_split(ds, cfg->seed ^ CUVAE_SEED_STATIC ^ (uint64_t)which, dequantize_cpu);
}

int cuvae_load_split(const cuvae_config *cfg, int which, cuvae_dataset *ds) {
  const char *images = which == CUVAE_SPLIT_TRAIN ? cfg->train_images : cfg->test_images;
  const char *labels = which == CUVAE_SPLIT_TRAIN ? cfg->train_labels : cfg->test_labels;
  if (cuvae_dataset_load(ds, images, labels)) return -1;
  if (cfg->conditional) {  /* the conditional VAE reads every example's class */
    const char *problem = NULL;
    if (!ds->labels) problem = "has no label file ([data] train_labels / test_labels)";
    for (size_t i = 0; !problem && i < ds->n; i++)
      if (ds->labels[i] >= cfg->classes) problem = "has a label outside 0..classes-1";
    if (problem) {
      cuvae_error("%s: [model] conditional = true, but the %s split %s (classes = %d)", images,
                  which == CUVAE_SPLIT_TRAIN ? "train" : "test", problem, cfg->classes);
      cuvae_dataset_free(ds);
      return -1;
    }
  }
  if (cfg->likelihood == CUVAE_LIK_BERNOULLI) {
    /* A Bernoulli decoder models x in [0, 1]; anything else makes the loss meaningless. */
    const size_t total = ds->n * ds->dim;
    for (size_t i = 0; i < total; i++) {
      if (!(ds->x[i] >= 0.0f && ds->x[i] <= 1.0f)) {
        cuvae_error("%s: value %g at example %zu, feature %zu is outside [0, 1], which the Bernoulli decoder "
                    "needs (use likelihood = gaussian for other data)",
                    images, (double)ds->x[i], i / ds->dim, i % ds->dim);
        cuvae_dataset_free(ds);
        return -1;
      }
    }
  }
  /* Binarization drawn once (include/cuvae/rng.h): both splits with binarize = static; the test split also with
   * dynamic, so every evaluation of a run sees the same binary test set. Dequantization: 8-bit data checked in both
   * splits, the test split dequantized once (the training split is dequantized afresh every step). */
  int rc = 0;
  if (cfg->binarize == CUVAE_BINARIZE_STATIC ||
      (cfg->binarize == CUVAE_BINARIZE_DYNAMIC && which == CUVAE_SPLIT_TEST))
    rc = draw_split(ds, cfg->seed ^ CUVAE_SEED_STATIC ^ (uint64_t)which, binarize_cpu);
  if (rc == 0 && cfg->dequantize == CUVAE_DEQUANTIZE_UNIFORM) {
    rc = check_8bit(ds, images);
    if (rc == 0 && which == CUVAE_SPLIT_TEST) rc = cuvae_dequantize_split(cfg, which, ds);
  }
  if (rc) cuvae_dataset_free(ds);
  return rc;
}

int cuvae_hold_out(const cuvae_config *cfg, cuvae_dataset *train, cuvae_dataset *val) {
  memset(val, 0, sizeof *val);
  const size_t n = (size_t)cfg->validation;
  if (n == 0) return 0;
  if (n >= train->n)
    return cuvae_error("[data] validation = %zu leaves nothing of the %zu training examples to train on", n, train->n);
  *val = *train;
  val->n = n;
  val->x = malloc(n * train->dim * sizeof *val->x);
  val->labels = train->labels ? malloc(n * sizeof *val->labels) : NULL;
  if (!val->x || (train->labels && !val->labels)) {
    cuvae_dataset_free(val);
    return cuvae_error("out of memory holding out %zu validation examples", n);
  }
  const size_t first = train->n - n;
  memcpy(val->x, train->x + first * train->dim, n * train->dim * sizeof *val->x);
  if (val->labels) memcpy(val->labels, train->labels + first, n * sizeof *val->labels);
  train->n = first;
  const uint64_t seed = cfg->seed ^ CUVAE_SEED_STATIC ^ (uint64_t)CUVAE_SPLIT_VALIDATION;
  int rc = cfg->binarize == CUVAE_BINARIZE_DYNAMIC ? draw_split(val, seed, binarize_cpu) : 0;
  if (rc == 0) rc = cuvae_dequantize_split(cfg, CUVAE_SPLIT_VALIDATION, val);
  if (rc) cuvae_dataset_free(val);
  return rc;
}

int cuvae_make_dirs(const char *path) {
  char buf[CUVAE_PATH_MAX];
  if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) return cuvae_error("path too long: %s", path);
  for (char *p = buf + 1;; p++) {
    if (*p == '/' || *p == '\0') {
      const char saved = *p;
      *p = '\0';
      if (mkdir(buf, 0777) != 0 && errno != EEXIST) return cuvae_error("cannot create directory %s: %s", buf, strerror(errno));
      *p = saved;
      if (saved == '\0') break;
    }
  }
  struct stat st;
  if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) return cuvae_error("%s is not a directory", path);
  return 0;
}
