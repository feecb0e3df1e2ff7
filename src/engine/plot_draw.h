/* Line panels on a shared canvas (plot_draw.c): several plots drawn into boxes of one picture, written as one PNG
 * (the run's curves, plot.c); and image.c's PNG writer, which the plots share. Same conventions as
 * include/cuvae/image.h: 0 or -1 with the message. */
#ifndef CUVAE_PLOT_DRAW_H
#define CUVAE_PLOT_DRAW_H
#include <stddef.h>
#include <stdint.h>

#include "cuvae/image.h"

/* pixels: height rows of width * channels bytes (channels 1: grey, 3: RGB), written to path via path.tmp (image.c). */
int cuvae_png_write(const char *path, int width, int height, int channels, const uint8_t *pixels);

typedef struct plot_frame plot_frame;

/* An x axis chosen by the caller (shared by panels): the data range [lo, hi] (padded by 5% as any axis), and
 * integral: ticks at whole numbers only. */
typedef struct plot_xrange {
  double lo, hi;
  int integral;
} plot_xrange;

/* A white canvas of width x height pixels (each 160..8192), or NULL with the message. */
plot_frame *plot_canvas_open(int width, int height);
/* A line plot as cuvae_write_line_plot_png draws one (title, axes, ticks, grid, lines, legend; 1..8 series) inside
 * box = {left, top, width, height} of the canvas. Series of at most max_marked points get a marker on each point;
 * x: the x axis (NULL: from the finite points). */
int plot_canvas_line_panel(plot_frame *c, const double box[4], const char *title, const char *xlabel,
                           const char *ylabel, const cuvae_plot_series *series, int n_series, size_t max_marked,
                           const plot_xrange *x);
/* Writes the canvas to path (via path.tmp; NULL: writes nothing) and frees it. */
int plot_canvas_close(plot_frame *c, const char *path);

#endif
