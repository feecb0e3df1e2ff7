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

typedef int (*codec_op)(cuvae_backend *be, const float *in, const int32_t *labels, size_t n, float *out);

/* Runs the backend's encode or decode (op) on the n rows of `in` (read from in_path) and writes the n x cols result
 * to out_path as a float32 .npy. */
static int codec_run(const cuvae_inference *inf, codec_op op, const float *in, size_t n, size_t cols,
                     const char *in_path, const char *labels_path, const char *out_path, cuvae_codec_info *info) {
  float *out = NULL;
  int rc = 0;
  if (n > SIZE_MAX / sizeof(float) / cols) rc = cuvae_error("%s: too many rows", in_path);
  if (rc == 0 && !(out = malloc(n * cols * sizeof *out)))
    rc = cuvae_error("%s: out of memory for %zu x %zu outputs", out_path, n, cols);
  int32_t *labels = NULL;
  if (rc == 0) rc = codec_labels(inf, labels_path, n, in_path, &labels);
  if (rc == 0) rc = op(inf->be, in, labels, n, out);
  free(labels);
  if (rc == 0) {
    const size_t shape[2] = {n, cols};
    rc = cuvae_npy_write_f32(out_path, out, 2, shape);
  }
  if (rc == 0) fill_info(info, inf, n, cols);
  free(out);
  return rc;
}

/* The rows encode / decode read: data rows (a data set file) or latent vectors (a .npy). */
typedef struct codec_input {
  cuvae_dataset ds;
  cuvae_array z;
  const float *rows;
  size_t n;
} codec_input;

/* Data rows of the model's input dimension D, from any file cuvae_dataset_load reads. */
static int read_data_rows(codec_input *in, const char *path, const char *checkpoint_path, size_t D) {
  if (cuvae_dataset_load(&in->ds, path, NULL)) return -1;
  if (in->ds.dim != D)
    return cuvae_error("%s: has %zu features per row, but the model in %s takes D = %zu", path, in->ds.dim,
                       checkpoint_path, D);
  in->rows = in->ds.x;
  in->n = in->ds.n;
  return 0;
}

/* Latent vectors: a 2-D floating-point .npy of Z columns. */
static int read_latent_rows(codec_input *in, const char *path, const char *checkpoint_path, size_t Z) {
  const cuvae_array *z = &in->z;
  if (cuvae_npy_read(path, &in->z)) return -1;
  if (z->dtype != CUVAE_DTYPE_F32)
    return cuvae_error("%s: latent vectors must be floating point (f2, f4 or f8), not integers", path);
  if (z->ndim != 2)
    return cuvae_error("%s: expected a 2-D array [N, Z] of latent vectors, got %d dimension%s", path, z->ndim,
                       z->ndim == 1 ? "" : "s");
  if (z->shape[1] != Z)
    return cuvae_error("%s: has %zu columns, but the model in %s has latent size Z = %zu", path, z->shape[1],
                       checkpoint_path, Z);
  in->rows = (const float *)z->data;
  in->n = z->shape[0];
  return 0;
}

/* encode (decode = 0) or decode (decode = 1) of a file's rows through the checkpoint's backend. */
static int codec_file(const char *checkpoint_path, const char *device, const char *in_path, const char *labels_path,
                      const char *out_path, cuvae_codec_info *info, int decode) {
  if (!in_path || !out_path) return cuvae_error("%s: need an input and an output path", decode ? "decode" : "encode");
  cuvae_inference inf;
  if (cuvae_inference_open(&inf, checkpoint_path, device ? device : "auto", CUVAE_SPLIT_NONE)) return -1;
  const size_t D = inf.model.input_dim, Z = inf.model.latent;
  codec_input in;
  memset(&in, 0, sizeof in);
  int rc = decode ? read_latent_rows(&in, in_path, checkpoint_path, Z)
                  : read_data_rows(&in, in_path, checkpoint_path, D);
  if (rc == 0)
    rc = codec_run(&inf, decode ? inf.be->decode : inf.be->encode, in.rows, in.n, decode ? D : 2 * Z, in_path,
                   labels_path, out_path, info);
  cuvae_dataset_free(&in.ds);
  cuvae_array_free(&in.z);
  cuvae_inference_close(&inf);
  return rc;
}

int cuvae_encode_file(const char *checkpoint_path, const char *device, const char *data_path, const char *labels_path,
                      const char *out_path, cuvae_codec_info *info) {
  return codec_file(checkpoint_path, device, data_path, labels_path, out_path, info, 0);
}

int cuvae_decode_file(const char *checkpoint_path, const char *device, const char *z_path, const char *labels_path,
                      const char *out_path, cuvae_codec_info *info) {
  return codec_file(checkpoint_path, device, z_path, labels_path, out_path, info, 1);
}
