/* PNG grids (libpng's simplified write API) and plots (drawn with cairo into an RGB image, written through the
 * same PNG writer), and the sample / reconstruction pictures shared by training and the CLI. See
 * include/cuvae/image.h for the layout and the conventions. */
#include "cuvae/image.h"

#include <cairo.h>
#include <errno.h>
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "cuvae/error.h"
#include "cuvae/rng.h"

#define PI 3.14159265358979323846

#if defined(__SANITIZE_ADDRESS__)
/* LeakSanitizer (the -DCUVAE_SANITIZE=ON build): fontconfig, which cairo's text API loads fonts through, keeps a few
 * hundred bytes of font patterns unreachable at exit (cairo 1.16 / fontconfig 2.14 on Debian 12; a plain C program
 * that draws one string with cairo shows the same 651 bytes). They are not cuvae's; every other leak is still
 * reported. The sanitizer runtime calls this hook in any program that links this file. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) { return "leak:libfontconfig.so\n"; }
#endif

/* ---- PNG writing ------------------------------------------------------------------------------------------ */

/* pixels: height rows of width * channels bytes (channels 1: grey, 3: RGB), written to path via path.tmp. */
static int write_png(const char *path, int width, int height, int channels, const uint8_t *pixels) {
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
  const int rc = write_png(path, (int)W, (int)H, channels, px);
  free(px);
  return rc;
}

/* ---- plots (cairo) --------------------------------------------------------------------------------------- */

/* Ten well-separated colours, then further hues spaced by the golden angle. */
static void palette(int i, double rgb[3]) {
  static const double k[10][3] = {
      {0.86, 0.15, 0.15}, {0.13, 0.42, 0.80}, {0.16, 0.62, 0.22}, {0.95, 0.55, 0.07}, {0.55, 0.27, 0.74},
      {0.50, 0.32, 0.18}, {0.93, 0.40, 0.70}, {0.42, 0.42, 0.42}, {0.70, 0.70, 0.10}, {0.08, 0.72, 0.78}};
  if (i >= 0 && i < 10) {
    memcpy(rgb, k[i], sizeof k[i]);
    return;
  }
  /* HSV with s = 0.7, v = 0.85 */
  const double hue = fmod((double)i * 137.508, 360.0) / 60.0, s = 0.7, v = 0.85;
  const int sector = (int)hue;
  const double fr = hue - sector, p = v * (1 - s), q = v * (1 - s * fr), t = v * (1 - s * (1 - fr));
  const double table[6][3] = {{v, t, p}, {q, v, p}, {p, v, t}, {p, q, v}, {t, p, v}, {v, p, q}};
  memcpy(rgb, table[sector % 6], sizeof table[0]);
}

typedef struct axis {
  double lo, hi;    /* the data range shown */
  double step;      /* tick spacing */
  double first;     /* first tick >= lo */
} axis;

/* Range of the finite values with 5% padding on each side, and "nice" ticks (1, 2 or 5 x 10^k) about 6 apart;
 * integral: every value is a whole number (ticks at whole numbers only). */
static void axis_make(axis *a, double mn, double mx, int integral) {
  if (!(mn <= mx)) {
    mn = 0.0;
    mx = 1.0;
  }
  double span = mx - mn;
  if (span <= 0.0) span = fabs(mn) > 0 ? fabs(mn) * 0.2 : 1.0;
  const double pad = mn == mx ? span / 2 : span * 0.05;
  a->lo = mn - pad;
  a->hi = mx + pad;
  const double raw = (a->hi - a->lo) / 6.0, mag = pow(10.0, floor(log10(raw))), norm = raw / mag;
  a->step = (norm < 1.5 ? 1.0 : norm < 3.0 ? 2.0 : norm < 7.0 ? 5.0 : 10.0) * mag;
  if (integral && a->step < 1.0) a->step = 1.0;
  a->first = ceil(a->lo / a->step - 1e-9) * a->step;
}

typedef struct frame {
  cairo_surface_t *surface;
  cairo_t *cr;
  int width, height;
  double x0, y0, x1, y1;  /* the plot area, pixels (y0 top) */
  axis ax, ay;
} frame;

static double px_x(const frame *f, double v) { return f->x0 + (v - f->ax.lo) / (f->ax.hi - f->ax.lo) * (f->x1 - f->x0); }
static double px_y(const frame *f, double v) { return f->y1 - (v - f->ay.lo) / (f->ay.hi - f->ay.lo) * (f->y1 - f->y0); }

static void text_at(cairo_t *cr, const char *s, double x, double y, double align_x, double align_y) {
  cairo_text_extents_t e;
  cairo_text_extents(cr, s, &e);
  cairo_move_to(cr, x - e.x_bearing - align_x * e.width, y - e.y_bearing - align_y * e.height);
  cairo_show_text(cr, s);
}

static double text_width(cairo_t *cr, const char *s) {
  cairo_text_extents_t e;
  cairo_text_extents(cr, s, &e);
  return e.x_advance;
}

static void tick_label(char *buf, size_t n, double v, double step) {
  if (fabs(v) < step * 1e-6) v = 0.0;
  snprintf(buf, n, "%.6g", v);
}

static int check_plot_args(const char *path, int width, int height) {
  if (!path || !*path) return cuvae_error("plot: no output path given");
  if (width < 160 || height < 160 || width > 8192 || height > 8192)
    return cuvae_error("plot: %d x %d pixels (each side must be in 160..8192)", width, height);
  return 0;
}

/* Surface, white background, title, axes, ticks, grid lines and axis labels; right: space kept for a legend. */
static int frame_begin(frame *f, const axis *ax, const axis *ay, int width, int height, double right,
                       const char *title, const char *xlabel, const char *ylabel) {
  memset(f, 0, sizeof *f);
  f->ax = *ax;
  f->ay = *ay;
  f->width = width;
  f->height = height;
  f->surface = cairo_image_surface_create(CAIRO_FORMAT_RGB24, width, height);
  f->cr = cairo_create(f->surface);
  if (cairo_status(f->cr) != CAIRO_STATUS_SUCCESS)
    return cuvae_error("plot: cairo: %s", cairo_status_to_string(cairo_status(f->cr)));
  cairo_t *cr = f->cr;
  cairo_set_source_rgb(cr, 1, 1, 1);
  cairo_paint(cr);
  cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
  /* Left margin: the widest tick label + the rotated y label. */
  cairo_set_font_size(cr, 12);
  double label_w = 0;
  for (double v = f->ay.first; v <= f->ay.hi + 1e-9 * f->ay.step; v += f->ay.step) {
    char buf[48];
    tick_label(buf, sizeof buf, v, f->ay.step);
    const double w = text_width(cr, buf);
    if (w > label_w) label_w = w;
  }
  f->x0 = 16 + 18 + label_w + 8;
  f->x1 = width - 16 - right;
  f->y0 = 40;
  f->y1 = height - 50;
  if (f->x1 - f->x0 < 40 || f->y1 - f->y0 < 40) return cuvae_error("plot: %d x %d pixels leaves no room", width, height);
  /* grid lines and ticks */
  cairo_set_line_width(cr, 1);
  for (double v = f->ax.first; v <= f->ax.hi + 1e-9 * f->ax.step; v += f->ax.step) {
    const double x = floor(px_x(f, v)) + 0.5;
    cairo_set_source_rgb(cr, 0.9, 0.9, 0.9);
    cairo_move_to(cr, x, f->y0);
    cairo_line_to(cr, x, f->y1);
    cairo_stroke(cr);
    cairo_set_source_rgb(cr, 0, 0, 0);
    cairo_move_to(cr, x, f->y1);
    cairo_line_to(cr, x, f->y1 + 5);
    cairo_stroke(cr);
    char buf[48];
    tick_label(buf, sizeof buf, v, f->ax.step);
    text_at(cr, buf, x, f->y1 + 8, 0.5, 0.0);
  }
  for (double v = f->ay.first; v <= f->ay.hi + 1e-9 * f->ay.step; v += f->ay.step) {
    const double y = floor(px_y(f, v)) + 0.5;
    cairo_set_source_rgb(cr, 0.9, 0.9, 0.9);
    cairo_move_to(cr, f->x0, y);
    cairo_line_to(cr, f->x1, y);
    cairo_stroke(cr);
    cairo_set_source_rgb(cr, 0, 0, 0);
    cairo_move_to(cr, f->x0 - 5, y);
    cairo_line_to(cr, f->x0, y);
    cairo_stroke(cr);
    char buf[48];
    tick_label(buf, sizeof buf, v, f->ay.step);
    text_at(cr, buf, f->x0 - 8, y, 1.0, 0.5);
  }
  cairo_set_source_rgb(cr, 0, 0, 0);
  cairo_rectangle(cr, floor(f->x0) + 0.5, floor(f->y0) + 0.5, floor(f->x1 - f->x0), floor(f->y1 - f->y0));
  cairo_stroke(cr);
  /* labels */
  cairo_set_font_size(cr, 14);
  if (xlabel) text_at(cr, xlabel, (f->x0 + f->x1) / 2, height - 22, 0.5, 0.0);
  if (ylabel) {
    cairo_save(cr);
    cairo_translate(cr, 16, (f->y0 + f->y1) / 2);
    cairo_rotate(cr, -PI / 2);
    text_at(cr, ylabel, 0, 0, 0.5, 0.0);
    cairo_restore(cr);
  }
  cairo_set_font_size(cr, 16);
  if (title) text_at(cr, title, (f->x0 + f->x1) / 2, 12, 0.5, 0.0);
  return 0;
}

/* Checks cairo's state, converts the RGB24 surface to RGB bytes and writes the PNG (path NULL: nothing written,
 * after an earlier failure); frees the frame. */
static int frame_end(frame *f, const char *path) {
  int rc = 0;
  if (!path) {
    /* nothing to write */
  } else if (f->cr && cairo_status(f->cr) != CAIRO_STATUS_SUCCESS) {
    rc = cuvae_error("plot: cairo: %s", cairo_status_to_string(cairo_status(f->cr)));
  } else if (f->cr) {
    cairo_surface_flush(f->surface);
    const unsigned char *data = cairo_image_surface_get_data(f->surface);
    const int stride = cairo_image_surface_get_stride(f->surface);
    uint8_t *rgb = malloc((size_t)f->width * (size_t)f->height * 3);
    if (!rgb) {
      rc = cuvae_error("plot: out of memory");
    } else {
      for (int y = 0; y < f->height; y++) {
        const uint32_t *src = (const uint32_t *)(const void *)(data + (size_t)y * (size_t)stride);
        uint8_t *dst = rgb + (size_t)y * (size_t)f->width * 3;
        for (int x = 0; x < f->width; x++) {
          dst[3 * x + 0] = (uint8_t)(src[x] >> 16);
          dst[3 * x + 1] = (uint8_t)(src[x] >> 8);
          dst[3 * x + 2] = (uint8_t)src[x];
        }
      }
      rc = write_png(path, f->width, f->height, 3, rgb);
      free(rgb);
    }
  }
  if (f->cr) cairo_destroy(f->cr);
  if (f->surface) cairo_surface_destroy(f->surface);
  return rc;
}

/* A legend box at (x, y) (top-left): one row per entry, a colour mark and the text. */
static void legend(cairo_t *cr, double x, double y, int n, const char *const *names, const int *colours, int lines) {
  cairo_set_font_size(cr, 12);
  double w = 0;
  for (int i = 0; i < n; i++) {
    const double tw = text_width(cr, names[i]);
    if (tw > w) w = tw;
  }
  const double row = 18, box_w = w + 40, box_h = n * row + 8;
  cairo_set_source_rgb(cr, 1, 1, 1);
  cairo_rectangle(cr, x, y, box_w, box_h);
  cairo_fill_preserve(cr);
  cairo_set_source_rgb(cr, 0.6, 0.6, 0.6);
  cairo_set_line_width(cr, 1);
  cairo_stroke(cr);
  for (int i = 0; i < n; i++) {
    double rgb[3];
    palette(colours[i], rgb);
    cairo_set_source_rgb(cr, rgb[0], rgb[1], rgb[2]);
    const double cy = y + 4 + row * i + row / 2;
    if (lines) {
      cairo_set_line_width(cr, 2);
      cairo_move_to(cr, x + 6, cy);
      cairo_line_to(cr, x + 26, cy);
      cairo_stroke(cr);
    }
    cairo_arc(cr, x + 16, cy, 4, 0, 2 * PI);
    cairo_fill(cr);
    cairo_set_source_rgb(cr, 0, 0, 0);
    text_at(cr, names[i], x + 32, cy, 0.0, 0.5);
  }
}

int cuvae_write_line_plot_png(const char *path, int width, int height, const char *title, const char *xlabel,
                              const char *ylabel, const cuvae_plot_series *series, int n_series) {
  if (check_plot_args(path, width, height)) return -1;
  if (!series || n_series < 1 || n_series > 8) return cuvae_error("line plot: %d series (1..8)", n_series);
  double xmn = INFINITY, xmx = -INFINITY, ymn = INFINITY, ymx = -INFINITY;
  int integral = 1;
  size_t points = 0;
  for (int s = 0; s < n_series; s++) {
    if (series[s].n && (!series[s].x || !series[s].y)) return cuvae_error("line plot: series %d has no data", s);
    for (size_t i = 0; i < series[s].n; i++) {
      const double x = series[s].x[i], y = series[s].y[i];
      if (!isfinite(x) || !isfinite(y)) continue;
      points++;
      xmn = fmin(xmn, x);
      xmx = fmax(xmx, x);
      ymn = fmin(ymn, y);
      ymx = fmax(ymx, y);
      if (x != floor(x)) integral = 0;
    }
  }
  if (points == 0) {  /* empty axes, still a valid picture */
    xmn = ymn = 0;
    xmx = ymx = 1;
  }
  axis ax, ay;
  axis_make(&ax, xmn, xmx, integral);
  axis_make(&ay, ymn, ymx, 0);
  frame f;
  int rc = frame_begin(&f, &ax, &ay, width, height, 0, title, xlabel, ylabel);
  if (rc == 0) {
    cairo_t *cr = f.cr;
    cairo_save(cr);
    cairo_rectangle(cr, f.x0, f.y0, f.x1 - f.x0, f.y1 - f.y0);
    cairo_clip(cr);
    for (int s = 0; s < n_series; s++) {
      double rgb[3];
      palette(s, rgb);
      cairo_set_source_rgb(cr, rgb[0], rgb[1], rgb[2]);
      cairo_set_line_width(cr, 2);
      int pen = 0;
      for (size_t i = 0; i < series[s].n; i++) {
        const double x = series[s].x[i], y = series[s].y[i];
        if (!isfinite(x) || !isfinite(y)) {
          pen = 0;
          continue;
        }
        if (pen)
          cairo_line_to(cr, px_x(&f, x), px_y(&f, y));
        else
          cairo_move_to(cr, px_x(&f, x), px_y(&f, y));
        pen = 1;
      }
      cairo_stroke(cr);
      for (size_t i = 0; i < series[s].n; i++) {
        const double x = series[s].x[i], y = series[s].y[i];
        if (!isfinite(x) || !isfinite(y)) continue;
        cairo_arc(cr, px_x(&f, x), px_y(&f, y), 3.5, 0, 2 * PI);
        cairo_fill(cr);
      }
    }
    cairo_restore(cr);
    const char *names[8];
    int colours[8];
    cairo_set_font_size(cr, 12);
    double lw = 0;
    for (int s = 0; s < n_series; s++) {
      names[s] = series[s].name ? series[s].name : "";
      colours[s] = s;
      lw = fmax(lw, text_width(cr, names[s]));
    }
    legend(cr, f.x1 - lw - 40 - 8, f.y0 + 8, n_series, names, colours, 1);
  }
  const int written = frame_end(&f, rc == 0 ? path : NULL);
  return rc || written ? -1 : 0;
}

static int cmp_i32(const void *a, const void *b) {
  const int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
  return (x > y) - (x < y);
}

/* Index of v in the sorted distinct values u[0..n). */
static int find_label(const int32_t *u, int n, int32_t v) {
  int lo = 0, hi = n - 1;
  while (lo <= hi) {
    const int mid = (lo + hi) / 2;
    if (u[mid] == v) return mid;
    if (u[mid] < v) lo = mid + 1; else hi = mid - 1;
  }
  return 0;
}

/* The points' bounding box over the finite points; returns how many points are finite. */
static size_t scatter_bounds(const float *x, const float *y, size_t n, double box[4]) {
  double xmn = INFINITY, xmx = -INFINITY, ymn = INFINITY, ymx = -INFINITY;
  size_t points = 0;
  for (size_t i = 0; i < n; i++) {
    if (!isfinite(x[i]) || !isfinite(y[i])) continue;
    points++;
    xmn = fmin(xmn, x[i]);
    xmx = fmax(xmx, x[i]);
    ymn = fmin(ymn, y[i]);
    ymx = fmax(ymx, y[i]);
  }
  box[0] = xmn;
  box[1] = xmx;
  box[2] = ymn;
  box[3] = ymx;
  return points;
}

/* A scatter plot's labels: the distinct ones sorted (colour k for the k-th), and the legend's entries. */
typedef struct scatter_legend {
  int32_t *uniq;
  int n_uniq;
  int n;                  /* legend entries: as many as fit the height, the rest summarised in a last line */
  char (*text)[64];
  const char **names;
  int *colours;
} scatter_legend;

static void scatter_legend_free(scatter_legend *lg) {
  free(lg->uniq);
  free(lg->text);
  free(lg->names);
  free(lg->colours);
}

static int scatter_legend_make(scatter_legend *lg, const int32_t *labels, size_t n, int height,
                               const char *const *label_names, int n_names) {
  memset(lg, 0, sizeof *lg);
  if (labels) {
    lg->uniq = malloc(n * sizeof *lg->uniq);
    if (!lg->uniq) return cuvae_error("scatter plot: out of memory");
    memcpy(lg->uniq, labels, n * sizeof *lg->uniq);
    qsort(lg->uniq, n, sizeof *lg->uniq, cmp_i32);
    for (size_t i = 0; i < n; i++)
      if (i == 0 || lg->uniq[i] != lg->uniq[lg->n_uniq - 1]) lg->uniq[lg->n_uniq++] = lg->uniq[i];
  }
  const int max_rows = (height - 40 - 50 - 8) / 18;
  lg->n = lg->n_uniq;
  if (lg->n > max_rows) lg->n = max_rows > 1 ? max_rows : 1;
  if (!lg->n) return 0;
  lg->text = malloc((size_t)lg->n * sizeof *lg->text);
  lg->names = malloc((size_t)lg->n * sizeof *lg->names);
  lg->colours = malloc((size_t)lg->n * sizeof *lg->colours);
  if (!lg->text || !lg->names || !lg->colours) {
    scatter_legend_free(lg);
    return cuvae_error("scatter plot: out of memory");
  }
  for (int k = 0; k < lg->n; k++) {
    const int32_t l = lg->uniq[k];
    if (k == lg->n - 1 && lg->n < lg->n_uniq)
      snprintf(lg->text[k], sizeof lg->text[k], "... %d more", lg->n_uniq - k);
    else if (label_names && l >= 0 && l < n_names && label_names[l])
      snprintf(lg->text[k], sizeof lg->text[k], "%d %s", (int)l, label_names[l]);
    else
      snprintf(lg->text[k], sizeof lg->text[k], "%d", (int)l);
    lg->names[k] = lg->text[k];
    lg->colours[k] = k;
  }
  return 0;
}

/* Room on the right of the plot for the legend (0 without one). */
static double scatter_legend_room(const scatter_legend *lg) {
  if (!lg->n) return 0;
  cairo_surface_t *probe = cairo_image_surface_create(CAIRO_FORMAT_RGB24, 1, 1);
  cairo_t *pc = cairo_create(probe);
  cairo_select_font_face(pc, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
  cairo_set_font_size(pc, 12);
  double right = 0;
  for (int k = 0; k < lg->n; k++) right = fmax(right, text_width(pc, lg->names[k]));
  right += 40 + 16;
  cairo_destroy(pc);
  cairo_surface_destroy(probe);
  return right;
}

/* The finite points as discs coloured by label, clipped to the plot area, then the legend on the right. */
static void scatter_draw(const frame *f, const float *x, const float *y, const int32_t *labels, size_t n,
                         size_t points, const scatter_legend *lg) {
  cairo_t *cr = f->cr;
  cairo_save(cr);
  cairo_rectangle(cr, f->x0, f->y0, f->x1 - f->x0, f->y1 - f->y0);
  cairo_clip(cr);
  const double radius = points > 5000 ? 2.0 : points > 500 ? 2.5 : 3.0;
  /* Opaque, aliased points: thousands of anti-aliased translucent discs make the PNG 3x larger (~290 KB at
   * 800 x 640 for 10,000 points, against ~90 KB). */
  cairo_set_antialias(cr, CAIRO_ANTIALIAS_NONE);
  for (size_t i = 0; i < n; i++) {
    if (!isfinite(x[i]) || !isfinite(y[i])) continue;
    double rgb[3];
    palette(labels ? find_label(lg->uniq, lg->n_uniq, labels[i]) : 1, rgb);
    cairo_set_source_rgb(cr, rgb[0], rgb[1], rgb[2]);
    cairo_arc(cr, px_x(f, x[i]), px_y(f, y[i]), radius, 0, 2 * PI);
    cairo_fill(cr);
  }
  cairo_restore(cr);
  if (lg->n) legend(cr, f->x1 + 16, f->y0, lg->n, lg->names, lg->colours, 0);
}

int cuvae_write_scatter_png(const char *path, int width, int height, const char *title, const char *xlabel,
                            const char *ylabel, const float *x, const float *y, const int32_t *labels, size_t n,
                            const char *const *label_names, int n_names) {
  if (check_plot_args(path, width, height)) return -1;
  if (n < 1 || !x || !y) return cuvae_error("scatter plot: no points");
  double box[4];
  const size_t points = scatter_bounds(x, y, n, box);
  if (points == 0) return cuvae_error("scatter plot: none of the %zu points is finite", n);
  scatter_legend lg;
  if (scatter_legend_make(&lg, labels, n, height, label_names, n_names)) return -1;
  axis ax, ay;
  axis_make(&ax, box[0], box[1], 0);
  axis_make(&ay, box[2], box[3], 0);
  frame f;
  int rc = frame_begin(&f, &ax, &ay, width, height, scatter_legend_room(&lg), title, xlabel, ylabel);
  if (rc == 0) scatter_draw(&f, x, y, labels, n, points, &lg);
  scatter_legend_free(&lg);
  const int written = frame_end(&f, rc == 0 ? path : NULL);
  return rc || written ? -1 : 0;
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
