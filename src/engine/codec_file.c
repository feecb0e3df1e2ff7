/* `cuvae encode` / `cuvae decode` on files: .npy / IDX rows through a checkpoint's backend (include/cuvae/export.h). */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "cuvae/data.h"
#include "cuvae/error.h"
#include "cuvae/export.h"
#include "inference.h"

/* ---- encode / decode --------------------------------------------------------------------------------------- */

static void fill_info(cuvae_codec_info *info, const cuvae_inference *inf, size_t rows, size_t cols) {
  if (!info) return;
  info->rows = rows;
  info->cols = cols;
  snprintf(info->device, sizeof info->device, "%s", inf->be && inf->be->name ? inf->be->name : "?");
}

/* A conditional model needs one label per row (from labels_path); other models take none. */
static int codec_labels(const cuvae_inference *inf, const char *labels_path, size_t n, const char *what,
                        int32_t **labels) {
  *labels = NULL;
  if (!inf->model.cond) {
    if (labels_path && labels_path[0])
      return cuvae_error("--labels: the model is not conditional ([model] conditional = false)");
    return 0;
  }
  if (!labels_path || !labels_path[0])
    return cuvae_error("the model is conditional: give each row's class with --labels FILE (IDX or .npy, 1-D)");
  if (cuvae_labels_load(labels_path, n, what, labels)) return -1;
  return cuvae_backend_check_labels(&inf->model, *labels, n, labels_path);
}

int cuvae_encode_file(const char *checkpoint_path, const char *device, const char *data_path, const char *labels_path,
                      const char *out_path, cuvae_codec_info *info) {
  if (!data_path || !out_path) return cuvae_error("encode: need an input and an output path");
  cuvae_inference inf;
  cuvae_dataset ds;
  memset(&ds, 0, sizeof ds);
  if (cuvae_inference_open(&inf, checkpoint_path, device ? device : "auto", CUVAE_SPLIT_NONE)) return -1;
  int rc = cuvae_dataset_load(&ds, data_path, NULL);
  const size_t D = inf.model.input_dim, Z2 = 2 * inf.model.latent;
  if (rc == 0 && ds.dim != D)
    rc = cuvae_error("%s: has %zu features per row, but the model in %s takes D = %zu", data_path, ds.dim,
                     checkpoint_path, D);
  float *mulv = NULL;
  if (rc == 0 && ds.n > SIZE_MAX / sizeof(float) / Z2) rc = cuvae_error("%s: too many rows", data_path);
  if (rc == 0 && !(mulv = malloc(ds.n * Z2 * sizeof *mulv)))
    rc = cuvae_error("%s: out of memory for %zu x %zu outputs", out_path, ds.n, Z2);
  int32_t *labels = NULL;
  if (rc == 0) rc = codec_labels(&inf, labels_path, ds.n, data_path, &labels);
  if (rc == 0) rc = inf.be->encode(inf.be, ds.x, labels, ds.n, mulv);
  free(labels);
  if (rc == 0) {
    const size_t shape[2] = {ds.n, Z2};
    rc = cuvae_npy_write_f32(out_path, mulv, 2, shape);
  }
  if (rc == 0) fill_info(info, &inf, ds.n, Z2);
  free(mulv);
  cuvae_dataset_free(&ds);
  cuvae_inference_close(&inf);
  return rc;
}

int cuvae_decode_file(const char *checkpoint_path, const char *device, const char *z_path, const char *labels_path,
                      const char *out_path, cuvae_codec_info *info) {
  if (!z_path || !out_path) return cuvae_error("decode: need an input and an output path");
  cuvae_inference inf;
  cuvae_array z;
  memset(&z, 0, sizeof z);
  if (cuvae_inference_open(&inf, checkpoint_path, device ? device : "auto", CUVAE_SPLIT_NONE)) return -1;
  const size_t D = inf.model.input_dim, Z = inf.model.latent;
  int rc = cuvae_npy_read(z_path, &z);
  if (rc == 0 && z.dtype != CUVAE_DTYPE_F32)
    rc = cuvae_error("%s: latent vectors must be floating point (f2, f4 or f8), not integers", z_path);
  if (rc == 0 && z.ndim != 2)
    rc = cuvae_error("%s: expected a 2-D array [N, Z] of latent vectors, got %d dimension%s", z_path, z.ndim,
                     z.ndim == 1 ? "" : "s");
  if (rc == 0 && z.shape[1] != Z)
    rc = cuvae_error("%s: has %zu columns, but the model in %s has latent size Z = %zu", z_path, z.shape[1],
                     checkpoint_path, Z);
  float *mean = NULL;
  const size_t n = rc == 0 ? z.shape[0] : 0;
  if (rc == 0 && n > SIZE_MAX / sizeof(float) / D) rc = cuvae_error("%s: too many rows", z_path);
  if (rc == 0 && !(mean = malloc(n * D * sizeof *mean)))
    rc = cuvae_error("%s: out of memory for %zu x %zu outputs", out_path, n, D);
  int32_t *labels = NULL;
  if (rc == 0) rc = codec_labels(&inf, labels_path, n, z_path, &labels);
  if (rc == 0) rc = inf.be->decode(inf.be, (const float *)z.data, labels, n, mean);
  free(labels);
  if (rc == 0) {
    const size_t shape[2] = {n, D};
    rc = cuvae_npy_write_f32(out_path, mean, 2, shape);
  }
  if (rc == 0) fill_info(info, &inf, n, D);
  free(mean);
  cuvae_array_free(&z);
  cuvae_inference_close(&inf);
  return rc;
}
