/* Pictures of a model: PNG grids of images (libpng) and plots with text (cairo, written through libpng), plus the
 * two pictures that training and `cuvae sample` / `cuvae reconstruct` share, so both draw them the same way.
 *
 * Grid layout (cuvae_write_grid_png): rows x cols tiles of h x w pixels, each pixel enlarged to a scale x scale
 * square, with 1-pixel separator lines of grey CUVAE_GRID_SEPARATOR between the tiles and around the grid:
 *   width  = cols * (w * scale + 1) + 1,   height = rows * (h * scale + 1) + 1.
 * Tile t (row-major in the grid: t = r * cols + c) has its top-left pixel at (1 + c (w s + 1), 1 + r (h s + 1)).
 * Values are floats in [0, 1] (clamped; NaN reads as 0), stored as round(255 v). Cells after the last tile are
 * filled with the separator grey. channels = 1: an 8-bit grey PNG; channels = 3: 8-bit RGB (pixel-interleaved).
 *
 * Every function returns 0, or -1 with a message in cuvae_last_error() naming the argument or the path at fault.
 * Files are written to PATH.tmp and renamed over PATH, so a reader never sees half a picture. */
#ifndef CUVAE_IMAGE_H
#define CUVAE_IMAGE_H
#include <stddef.h>
#include <stdint.h>

#include "cuvae/data.h"
#include "cuvae/model.h"
#ifdef __cplusplus
extern "C" {
#endif

#define CUVAE_GRID_SEPARATOR 128  /* grey level of the separator lines and of empty cells */
#define CUVAE_GRID_MIN_TILE 56    /* the automatic scale enlarges tiles to at least this many pixels (longer side) */
#define CUVAE_GRID_MAX_PIXELS ((size_t)1 << 28)  /* refuse grids larger than this (256 Mpixel) */

/* Prior samples z ~ N(0, I) for pictures: n x Z normals (row-major) from the Philox host stream (cuvae_noise)
 * seeded with seed ^ CUVAE_SEED_SAMPLES, offset 0. Training's samples.png and `cuvae sample` (default --seed: the
 * checkpoint's [train] seed) use this, so the same seed gives the same z. */
#define CUVAE_SEED_SAMPLES UINT64_C(0x5A3B1E55A3B1E55A)
int cuvae_prior_samples(uint64_t seed, size_t n, size_t Z, float *z);

/* The automatic integer scale: the smallest s >= 1 with max(h, w) * s >= CUVAE_GRID_MIN_TILE (28 x 28 -> 2). */
int cuvae_grid_auto_scale(int h, int w);
/* Picture size of a grid (the formula above); scale 0 means automatic. */
void cuvae_grid_size(int rows, int cols, int h, int w, int scale, int *width, int *height);
/* Writes n_tiles tiles (tile t at tiles + t * h * w * channels, row-major pixels) into a rows x cols grid;
 * n_tiles <= rows * cols. scale 0 = cuvae_grid_auto_scale(h, w). */
int cuvae_write_grid_png(const char *path, const float *tiles, size_t n_tiles, int rows, int cols, int h, int w,
                         int channels, int scale);

/* One line of a line plot: n points (x[i], y[i]); non-finite points are skipped. */
typedef struct cuvae_plot_series {
  const char *name;      /* legend entry */
  const double *x, *y;
  size_t n;
} cuvae_plot_series;

/* A line plot (with point markers) of n_series series (1..8) on shared axes: title, axis labels, ticks, grid
 * lines and a legend. width, height in pixels, 160..8192. */
int cuvae_write_line_plot_png(const char *path, int width, int height, const char *title, const char *xlabel,
                              const char *ylabel, const cuvae_plot_series *series, int n_series);
/* A scatter plot of n points (x[i], y[i]), coloured by labels[i] (NULL: one colour, no legend), with a legend of
 * the labels present (label_names[l] for 0 <= l < n_names when given, else the number). Non-finite points are
 * skipped; all of them non-finite is an error. */
int cuvae_write_scatter_png(const char *path, int width, int height, const char *title, const char *xlabel,
                            const char *ylabel, const float *x, const float *y, const int32_t *labels, size_t n,
                            const char *const *label_names, int n_names);

/* The picture shape of a data point of dim features: the data set's rows x cols when rows > 1 (3-D sources),
 * else sqrt(dim) x sqrt(dim) when dim is a perfect square (e.g. 784 flat -> 28 x 28), else 1 x dim. */
void cuvae_image_shape(size_t dim, size_t rows, size_t cols, int *h, int *w);

/* The two pictures training writes at every epoch end, through the backend's decode / encode (any backend):
 * samples: decoder means of n prior samples (cuvae_prior_samples(seed, n, Z)), grid ceil(sqrt n) wide; for a
 *   conditional model every sample gets class `label`, or with label < 0 the grid has one row per class, each row
 *   decoding the same ceil(n / C) prior samples with that row's class (label is ignored by other models);
 * recon: the first n rows of ds and their reconstructions (decoder mean at z = mu) in pairs of grid rows: a row of
 *   inputs, below it the same inputs reconstructed; cuvae_recon_grid_cols(n) tiles per row (a conditional model
 *   encodes and decodes with the examples' own labels).
 * h x w: the picture shape (cuvae_image_shape); scale 0 = automatic. out_w, out_h (may be NULL): the size. */
typedef struct cuvae_backend cuvae_backend;
int cuvae_recon_grid_cols(int n);
int cuvae_write_samples_png(cuvae_backend *be, const cuvae_model *m, uint64_t seed, int n, int h, int w, int scale,
                            int label, const char *path, int *out_w, int *out_h);
int cuvae_write_recon_png(cuvae_backend *be, const cuvae_model *m, const cuvae_dataset *ds, int n, int h, int w,
                          int scale, const char *path, int *out_w, int *out_h);

#ifdef __cplusplus
}
#endif
#endif
