/* Loading the data splits a config names, checked against the model it configures, with the binarization drawn
 * at load (see data_split.h); and mkdir -p for run directories. */
#include "data_split.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cuvae/cpu.h"
#include "cuvae/error.h"
#include "cuvae/rng.h"

/* x ~ Bernoulli(x) for every value of ds, the uniforms of stream `seed` in row order, a chunk of rows at a time. */
static int binarize_split(cuvae_dataset *ds, uint64_t seed) {
  enum { CHUNK_ROWS = 4096 };  /* a multiple of 4, so every chunk starts at a multiple-of-4 offset */
  cuvae_noise *g = cuvae_noise_create(seed);
  float *u = malloc((size_t)CHUNK_ROWS * ds->dim * sizeof *u);
  int rc = g && u ? 0 : cuvae_error("out of memory binarizing the data");
  for (size_t start = 0; rc == 0 && start < ds->n; start += CHUNK_ROWS) {
    const size_t rows = ds->n - start < CHUNK_ROWS ? ds->n - start : CHUNK_ROWS;
    const size_t n = rows * ds->dim;
    rc = cuvae_noise_uniform(g, (uint64_t)start * ds->dim, u, n);
    if (rc == 0) binarize_cpu(ds->x + start * ds->dim, u, ds->x + start * ds->dim, n);
  }
  free(u);
  cuvae_noise_destroy(g);
  return rc;
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
   * dynamic, so every evaluation of a run sees the same binary test set. */
  if (cfg->binarize == CUVAE_BINARIZE_STATIC || (cfg->binarize == CUVAE_BINARIZE_DYNAMIC && which == CUVAE_SPLIT_TEST)) {
    if (binarize_split(ds, cfg->seed ^ CUVAE_SEED_STATIC ^ (uint64_t)which)) {
      cuvae_dataset_free(ds);
      return -1;
    }
  }
  return 0;
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
