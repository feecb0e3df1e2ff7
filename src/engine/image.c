/* PNG grids (libpng's simplified write API), the PNG writer the plots (plot_draw.c) share, and the sample /
 * reconstruction pictures shared by training and the CLI. See include/cuvae/image.h for the layout and the
 * conventions. */
#include "cuvae/image.h"

#include <errno.h>
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "cuvae/error.h"
#include "cuvae/rng.h"
#include "plot_draw.h"

/* ---- PNG writing ------------------------------------------------------------------------------------------ */

int cuvae_png_write(const char *path, int width, int height, int channels, const uint8_t *pixels) {
  if (!path || !*path) return cuvae_error("image: no output path given");
  const size_t len = strlen(path);
  char *tmp = malloc(len + 5);
  if (!tmp) return cuvae_error("cannot write %s: out of memory", path);
  memcpy(tmp, path, len);
  memcpy(tmp + len, ".tmp", 5);
  FILE *f = fopen(tmp, "wb");
  if (!f) {
    const int err = errno;
    free(tmp);
    return cuvae_error("cannot write %s: %s", path, strerror(err));
  }
  png_image img;
  memset(&img, 0, sizeof img);
  img.version = PNG_IMAGE_VERSION;
  img.width = (png_uint_32)width;
  img.height = (png_uint_32)height;
  img.format = channels == 1 ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
  const int wrote = png_image_write_to_stdio(&img, f, 0, pixels, 0, NULL);
  const int closed = fclose(f) == 0;
  const int err = errno;
  if (!wrote || !closed) {
    remove(tmp);
    free(tmp);
    if (!wrote) {
      cuvae_error("cannot write %s: libpng: %s", path, img.message);
      png_image_free(&img);
      return -1;
    }
    return cuvae_error("cannot write %s: %s", path, strerror(err));
  }
  if (rename(tmp, path) != 0) {
    const int rerr = errno;
    remove(tmp);
    free(tmp);
    return cuvae_error("cannot write %s: %s", path, strerror(rerr));
  }
  free(tmp);
  return 0;
}

/* ---- grids -------------------------------------------------------------------------------------------------- */

static uint8_t to_byte(float v) {
  if (!(v > 0.0f)) return 0;  /* also NaN */
  if (v >= 1.0f) return 255;
  return (uint8_t)(v * 255.0f + 0.5f);
}

int cuvae_grid_auto_scale(int h, int w) {
  const int side = h > w ? h : w;
  if (side <= 0) return 1;
  const int s = (CUVAE_GRID_MIN_TILE + side - 1) / side;
  return s < 1 ? 1 : s;
}

void cuvae_grid_size(int rows, int cols, int h, int w, int scale, int *width, int *height) {
  if (scale == 0) scale = cuvae_grid_auto_scale(h, w);
  *width = cols * (w * scale + 1) + 1;
  *height = rows * (h * scale + 1) + 1;
}

int cuvae_write_grid_png(const char *path, const float *tiles, size_t n_tiles, int rows, int cols, int h, int w,
                         int channels, int scale) {
  if (rows < 1 || cols < 1) return cuvae_error("image grid: %d x %d tiles (rows and cols must be >= 1)", rows, cols);
  if (h < 1 || w < 1) return cuvae_error("image grid: tiles of %d x %d pixels (must be >= 1)", h, w);
  if (channels != 1 && channels != 3) return cuvae_error("image grid: %d channels (1 grey or 3 RGB)", channels);
  if (scale < 0 || scale > 64) return cuvae_error("image grid: scale %d (0 = automatic, or 1..64)", scale);
  if (n_tiles > (size_t)rows * (size_t)cols)
    return cuvae_error("image grid: %zu tiles do not fit %d x %d cells", n_tiles, rows, cols);
  if (n_tiles > 0 && !tiles) return cuvae_error("image grid: no pixel data");
  if (scale == 0) scale = cuvae_grid_auto_scale(h, w);
  const size_t tw = (size_t)w * (size_t)scale + 1, th = (size_t)h * (size_t)scale + 1;
  const size_t W = (size_t)cols * tw + 1, H = (size_t)rows * th + 1;
  if (W > 65535 || H > 65535 || W * H > CUVAE_GRID_MAX_PIXELS)
    return cuvae_error("image grid: %zu x %zu pixels is too large (at most 65535 a side, %zu in all); use fewer "
                       "tiles or a smaller scale",
                       W, H, (size_t)CUVAE_GRID_MAX_PIXELS);
  const size_t C = (size_t)channels, stride = W * C;
  uint8_t *px = malloc(stride * H);
  if (!px) return cuvae_error("image grid: out of memory for %zu x %zu pixels", W, H);
  memset(px, CUVAE_GRID_SEPARATOR, stride * H);
  const size_t tile_len = (size_t)h * (size_t)w * C;
  for (size_t t = 0; t < n_tiles; t++) {
    const size_t x0 = 1 + (t % (size_t)cols) * tw, y0 = 1 + (t / (size_t)cols) * th;
    const float *src = tiles + t * tile_len;
    for (int i = 0; i < h; i++) {
      uint8_t *row = px + (y0 + (size_t)i * (size_t)scale) * stride + x0 * C;
      for (int j = 0; j < w; j++)
        for (size_t c = 0; c < C; c++) {
          const uint8_t v = to_byte(src[((size_t)i * (size_t)w + (size_t)j) * C + c]);
          for (int k = 0; k < scale; k++) row[((size_t)j * (size_t)scale + (size_t)k) * C + c] = v;
        }
      for (int k = 1; k < scale; k++)  /* the other rows of the scale x scale squares */
        memcpy(row + (size_t)k * stride, row, (size_t)w * (size_t)scale * C);
    }
  }
  const int rc = cuvae_png_write(path, (int)W, (int)H, channels, px);
  free(px);
  return rc;
}

/* ---- pictures of a model ------------------------------------------------------------------------------------ */

int cuvae_prior_samples(uint64_t seed, size_t n, size_t Z, float *z) {
  cuvae_noise *g = cuvae_noise_create(seed ^ CUVAE_SEED_SAMPLES);
  if (!g) return -1;
  const int rc = cuvae_noise_normal(g, 0, z, n * Z);
  cuvae_noise_destroy(g);
  return rc;
}

void cuvae_image_shape(size_t dim, size_t rows, size_t cols, int *h, int *w) {
  if (rows > 1 && rows * cols == dim) {
    *h = (int)rows;
    *w = (int)cols;
    return;
  }
  size_t r = (size_t)sqrt((double)dim);
  while (r * r > dim) r--;
  while ((r + 1) * (r + 1) <= dim) r++;
  if (r > 1 && r * r == dim) {
    *h = *w = (int)r;
  } else {
    *h = 1;
    *w = (int)dim;
  }
}

static int ceil_sqrt(int n) {
  int c = (int)ceil(sqrt((double)n));
  while (c > 1 && (c - 1) * (c - 1) >= n) c--;
  while (c * c < n) c++;
  return c < 1 ? 1 : c;
}

int cuvae_recon_grid_cols(int n) {
  const int c = ceil_sqrt(2 * n);
  return c > n ? n : c;
}

static int check_picture(const cuvae_model *m, int n, int h, int w) {
  if (n < 1) return cuvae_error("picture: n = %d (must be >= 1)", n);
  if (h < 1 || w < 1 || (size_t)h * (size_t)w != m->input_dim)
    return cuvae_error("picture: a %d x %d picture does not hold the model's %zu features", h, w, m->input_dim);
  return 0;
}

int cuvae_write_samples_png(cuvae_backend *be, const cuvae_model *m, uint64_t seed, int n, int h, int w, int scale,
                            int label, const char *path, int *out_w, int *out_h) {
  if (check_picture(m, n, h, w)) return -1;
  const size_t C = m->cond, Z = m->latent, D = m->input_dim;
  if (C && label >= (int)C) return cuvae_error("samples: label %d is outside 0..%zu", label, C - 1);
  /* A conditional model with label < 0: one grid row per class, the same cols prior samples in every row. */
  const int per_class = C && label < 0;
  int cols = ceil_sqrt(n), rows = (n + cols - 1) / cols;
  if (per_class) {
    cols = (n + (int)C - 1) / (int)C;
    rows = (int)C;
  }
  const size_t n_z = per_class ? (size_t)cols : (size_t)n, N = per_class ? C * (size_t)cols : (size_t)n;
  float *z = malloc(N * Z * sizeof *z), *mean = malloc(N * D * sizeof *mean);
  int32_t *labels = C ? malloc(N * sizeof *labels) : NULL;
  int rc = z && mean && (!C || labels) ? 0 : cuvae_error("samples: out of memory");
  if (rc == 0) rc = cuvae_prior_samples(seed, n_z, Z, z);
  if (rc == 0 && C)
    for (size_t i = 0; i < N; i++) {
      if (per_class && i >= n_z) memcpy(z + i * Z, z + (i % n_z) * Z, Z * sizeof *z);
      labels[i] = per_class ? (int32_t)(i / n_z) : label;
    }
  if (rc == 0) rc = be->decode(be, z, labels, N, mean);
  if (rc == 0) rc = cuvae_write_grid_png(path, mean, N, rows, cols, h, w, 1, scale);
  if (rc == 0) {
    int W, H;
    cuvae_grid_size(rows, cols, h, w, scale, &W, &H);
    if (out_w) *out_w = W;
    if (out_h) *out_h = H;
  }
  free(z);
  free(mean);
  free(labels);
  return rc;
}

int cuvae_write_recon_png(cuvae_backend *be, const cuvae_model *m, const cuvae_dataset *ds, int n, int h, int w,
                          int scale, const char *path, int *out_w, int *out_h) {
  if (check_picture(m, n, h, w)) return -1;
  if (ds->dim != m->input_dim) return cuvae_error("reconstruction: data has %zu features, the model %zu", ds->dim, m->input_dim);
  if ((size_t)n > ds->n) return cuvae_error("reconstruction: %d examples asked for, the data has %zu", n, ds->n);
  const size_t N = (size_t)n, Z = m->latent, D = m->input_dim;
  const int cols = cuvae_recon_grid_cols(n), pairs = (n + cols - 1) / cols;
  float *mulv = malloc(N * 2 * Z * sizeof *mulv), *z = malloc(N * Z * sizeof *z),
        *mean = malloc(N * D * sizeof *mean), *tiles = malloc((size_t)pairs * 2 * (size_t)cols * D * sizeof *tiles);
  int rc = mulv && z && mean && tiles ? 0 : cuvae_error("reconstruction: out of memory");
  const int32_t *labels = m->cond ? ds->labels : NULL;  /* a conditional model: the examples' own labels */
  if (rc == 0) rc = be->encode(be, ds->x, labels, N, mulv);
  if (rc == 0) {
    for (size_t i = 0; i < N; i++) memcpy(z + i * Z, mulv + i * 2 * Z, Z * sizeof *z);  /* z = mu */
    rc = be->decode(be, z, labels, N, mean);
  }
  if (rc == 0) {
    /* Pair p: grid row 2p = inputs p*cols.., row 2p+1 = their reconstructions; unused cells stay grey. */
    const size_t total = (size_t)pairs * 2 * (size_t)cols;
    for (size_t t = 0; t < total; t++) {
      const size_t r = t / (size_t)cols, c = t % (size_t)cols, i = (r / 2) * (size_t)cols + c;
      float *dst = tiles + t * D;
      if (i >= N) {  /* a cell of the last pair after the last example: separator grey, like an empty cell */
        for (size_t k = 0; k < D; k++) dst[k] = (float)CUVAE_GRID_SEPARATOR / 255.0f;
      } else {
        memcpy(dst, (r % 2 ? mean : ds->x) + i * D, D * sizeof *dst);
      }
    }
    rc = cuvae_write_grid_png(path, tiles, total, 2 * pairs, cols, h, w, 1, scale);
  }
  if (rc == 0) {
    int W, H;
    cuvae_grid_size(2 * pairs, cols, h, w, scale, &W, &H);
    if (out_w) *out_w = W;
    if (out_h) *out_h = H;
  }
  free(mulv);
  free(z);
  free(mean);
  free(tiles);
  return rc;
}
