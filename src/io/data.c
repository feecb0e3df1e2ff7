/* Data set loading: images (n, ...) and optional labels (n,) from IDX (plain/gzip) or .npy files,
 * converted to the engine's form: float32 rows in [0,1] for uint8 sources, int32 labels >= 0. */
#define _POSIX_C_SOURCE 200809L

#include "cuvae/data.h"
#include "cuvae/error.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cuvae_array_free(cuvae_array *a) {
  if (!a) return;
  free(a->data);
  memset(a, 0, sizeof *a);
}

void cuvae_dataset_free(cuvae_dataset *ds) {
  if (!ds) return;
  free(ds->x);
  free(ds->labels);
  memset(ds, 0, sizeof *ds);
}

static const char *dtype_name(cuvae_dtype t) {
  switch (t) {
    case CUVAE_DTYPE_U8: return "uint8";
    case CUVAE_DTYPE_I32: return "int32";
    case CUVAE_DTYPE_F32: return "float32";
    case CUVAE_DTYPE_I64: return "int64";
  }
  return "unknown";
}

/* Reads an array in whichever format the content shows: .npy magic, else IDX (which handles gzip itself).
 * *is_npy tells the caller which reader ran. */
static int read_any(const char *path, cuvae_array *a, int *is_npy) {
  memset(a, 0, sizeof *a);
  FILE *f = fopen(path, "rb");
  if (!f) return cuvae_error("cannot open %s: %s", path, strerror(errno));
  unsigned char magic[6];
  size_t got = fread(magic, 1, sizeof magic, f);
  fclose(f);
  *is_npy = got == sizeof magic && memcmp(magic, "\x93NUMPY", 6) == 0;
  return *is_npy ? cuvae_npy_read(path, a) : cuvae_idx_read(path, a);
}

/* Float data must be finite (the .npy reader checks its own; this covers IDX float32). */
static int check_finite(const char *path, const float *x, size_t count) {
  for (size_t i = 0; i < count; i++) {
    if (isnan(x[i])) return cuvae_error("%s: element %zu is NaN", path, i);
    if (isinf(x[i])) return cuvae_error("%s: element %zu is %sInf", path, i, x[i] < 0 ? "-" : "+");
  }
  return 0;
}

/* Images: at least 2 dims; the first is n, the rest flatten to dim. uint8 scales by 1/255, float32 is taken
 * over as is (no copy), integer types are refused. */
static int load_images(cuvae_dataset *ds, const char *path) {
  cuvae_array a;
  int is_npy;
  if (read_any(path, &a, &is_npy) != 0) return -1;
  if (a.ndim < 2) {
    cuvae_array_free(&a);
    return cuvae_error("%s: image data needs at least 2 dimensions (examples, features...), got 1", path);
  }
  ds->n = a.shape[0];
  ds->dim = a.count / a.shape[0];
  ds->rows = a.ndim == 3 ? a.shape[1] : 1;
  ds->cols = a.ndim == 3 ? a.shape[2] : ds->dim;

  if (a.dtype == CUVAE_DTYPE_U8) {
    float *x = malloc(a.count * sizeof *x);
    if (!x) {
      cuvae_array_free(&a);
      return cuvae_error("%s: out of memory converting %zu pixels to float", path, a.count);
    }
    const uint8_t *u = a.data;
    for (size_t i = 0; i < a.count; i++) x[i] = (float)u[i] / 255.0f;
    ds->x = x;
    cuvae_array_free(&a);
    return 0;
  }
  if (a.dtype == CUVAE_DTYPE_F32) {
    if (!is_npy && check_finite(path, a.data, a.count) != 0) {
      cuvae_array_free(&a);
      return -1;
    }
    ds->x = a.data; /* ownership moves to the data set */
    a.data = NULL;
    return 0;
  }
  const char *tn = dtype_name(a.dtype);
  cuvae_array_free(&a);
  return cuvae_error("%s: %s image data is not supported (use uint8 pixels or float32 values)", path, tn);
}

/* Labels: 1-D, integer, one per example, each within 0..INT32_MAX. */
static int load_labels(cuvae_dataset *ds, const char *path, const char *images_path) {
  cuvae_array a;
  int is_npy;
  if (read_any(path, &a, &is_npy) != 0) return -1;
  int rc = -1;
  if (a.ndim != 1) {
    cuvae_error("%s: labels must be 1-D, got %d dimensions", path, a.ndim);
    goto done;
  }
  if (a.dtype == CUVAE_DTYPE_F32) {
    cuvae_error("%s: float32 labels are not supported (use uint8, int32 or int64)", path);
    goto done;
  }
  if (a.count != ds->n) {
    cuvae_error("%s has %zu labels but %s has %zu examples", path, a.count, images_path, ds->n);
    goto done;
  }
  int32_t *lab = malloc(a.count * sizeof *lab);
  if (!lab) {
    cuvae_error("%s: out of memory for %zu labels", path, a.count);
    goto done;
  }
  for (size_t i = 0; i < a.count; i++) {
    int64_t v = a.dtype == CUVAE_DTYPE_U8    ? ((const uint8_t *)a.data)[i]
                : a.dtype == CUVAE_DTYPE_I32 ? ((const int32_t *)a.data)[i]
                                             : ((const int64_t *)a.data)[i];
    if (v < 0 || v > INT32_MAX) {
      free(lab);
      cuvae_error("%s: label %zu is %" PRId64 " (labels must be in 0..%d)", path, i, v, INT32_MAX);
      goto done;
    }
    lab[i] = (int32_t)v;
  }
  ds->labels = lab;
  rc = 0;
done:
  cuvae_array_free(&a);
  return rc;
}

int cuvae_dataset_load(cuvae_dataset *ds, const char *images_path, const char *labels_path) {
  memset(ds, 0, sizeof *ds);
  if (!images_path || !images_path[0]) return cuvae_error("no image file given");
  if (load_images(ds, images_path) != 0 ||
      (labels_path && labels_path[0] && load_labels(ds, labels_path, images_path) != 0)) {
    cuvae_dataset_free(ds); /* also zeroes *ds */
    return -1;
  }
  return 0;
}

int cuvae_labels_load(const char *path, size_t n, const char *what, int32_t **labels) {
  cuvae_dataset ds;
  memset(&ds, 0, sizeof ds);
  ds.n = n;
  *labels = NULL;
  if (load_labels(&ds, path, what)) return -1;
  *labels = ds.labels;
  return 0;
}
