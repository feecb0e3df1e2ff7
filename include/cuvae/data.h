/* Data sets: IDX (plain or gzip, e.g. MNIST / Fashion-MNIST) and NumPy .npy (C order; float or integer dtypes). */
#ifndef CUVAE_DATA_H
#define CUVAE_DATA_H
#include <stddef.h>
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif

/* Refuse any file whose header announces more than this many elements (checked before allocating). */
#define CUVAE_MAX_ELEMENTS ((size_t)1 << 32)

typedef struct cuvae_dataset {
  size_t n;          /* examples */
  size_t dim;        /* features per example (product of the trailing dimensions) */
  size_t rows, cols; /* image shape when the source is 3-D (n, rows, cols); else rows = 1, cols = dim */
  float *x;          /* n*dim, row-major; uint8 sources scaled to [0,1] by 1/255 */
  int32_t *labels;   /* n labels, or NULL when no label file was given */
} cuvae_dataset;

/* Loads images (format told by content: .npy magic, gzip magic, else plain IDX) and, when labels_path is
 * non-NULL and non-empty, labels (IDX1 uint8, or 1-D .npy of any 1- to 8-byte integer dtype). The label count must
 * match. Float .npy data must be finite. On failure nothing is left allocated. */
int cuvae_dataset_load(cuvae_dataset *ds, const char *images_path, const char *labels_path);
void cuvae_dataset_free(cuvae_dataset *ds);
/* Labels alone (as cuvae_dataset_load reads them): exactly n of them, for `what` (the rows they label, named in
 * messages). *labels is allocated (free()). */
int cuvae_labels_load(const char *path, size_t n, const char *what, int32_t **labels);

/* A raw IDX / npy array, as read from disk. */
typedef enum { CUVAE_DTYPE_U8 = 0, CUVAE_DTYPE_I32 = 1, CUVAE_DTYPE_F32 = 2, CUVAE_DTYPE_I64 = 3 } cuvae_dtype;
typedef struct cuvae_array {
  cuvae_dtype dtype;
  int ndim;
  size_t shape[4];
  size_t count;      /* product of shape */
  void *data;        /* count elements of dtype, host byte order */
} cuvae_array;

int cuvae_idx_read(const char *path, cuvae_array *out);   /* plain or gzip; types u8, i32, f32 */
/* .npy, C order only. Floats (f2, f4, f8; either byte order) come back as float32 (f8 rounded to nearest; non-finite
 * values and f8 values beyond float32's range refused), u1 as uint8, i1 i2 u2 i4 as int32, u4 i8 u8 as int64. */
int cuvae_npy_read(const char *path, cuvae_array *out);
void cuvae_array_free(cuvae_array *a);

/* Writes a C-order float32 array as .npy (format 1.0, '<f4', little-endian), atomically: to PATH.tmp.PID next to
 * PATH, flushed and fsynced, then renamed over PATH. On failure PATH is untouched and no temporary file is left. */
int cuvae_npy_write_f32(const char *path, const float *data, int ndim, const size_t *shape);

#ifdef __cplusplus
}
#endif
#endif
