/* The curves of a training run as one PNG of line panels (`cuvae plot RUN_DIR`, training's curves.png), read from
 * RUN_DIR/metrics.jsonl (a row per epoch) and, when present, RUN_DIR/steps.jsonl (a row every log_every steps).
 *
 * Panels, in this order (a key absent from every row leaves its series out; a panel left without series is left
 * out, so a figure has 1..CUVAE_PLOT_MAX_PANELS panels):
 *   negative ELBO    train_nelbo, val_nelbo, test_nelbo, ema_val_nelbo, ema_test_nelbo
 *   reconstruction   train_recon, val_recon, recon (test)
 *   KL               train_kl, val_kl, kl (test)
 *   learning rate    lr of steps.jsonl (per logged step); without it, lr of metrics.jsonl (per epoch)
 *   gradient norm    grad_norm of steps.jsonl (per logged step); without it, grad_norm of metrics.jsonl (the epoch's
 *                    mean); and grad_norm_max (the epoch's largest)
 *   skipped steps    skipped of metrics.jsonl (steps skipped in the epoch)
 * x, one axis shared by every panel: the epoch, step / steps_per_epoch as training's loss.png draws it (a whole
 * number for a complete row, a fraction for a row whose "complete" is false), steps_per_epoch = step / epoch of the
 * complete rows (which must agree). A run without a complete row is drawn against the step. A metrics row of the
 * same epoch as the row before it replaces that row (a resumed epoch's complete row replaces its partial one).
 * Rows: flat JSON objects, one a line (blank lines skipped); metrics rows need "epoch" and "step", steps rows
 * "step" (whole numbers >= 1); a plotted key holds a number (nan, inf and null are gaps in its line), "complete"
 * true or false (absent: true); other keys are not read. A non-finite point is left out of its line.
 * Layout: panels of CUVAE_PLOT_PANEL_W x CUVAE_PLOT_PANEL_H pixels, two a row (one when there is one panel), in
 * the order above (cuvae_plot_panel_box).
 *
 * Functions return 0, or -1 with a message in cuvae_last_error() naming the directory, or the file and line, at
 * fault. The PNG is written to PATH.tmp and renamed over PATH. */
#ifndef CUVAE_PLOT_H
#define CUVAE_PLOT_H
#include <stddef.h>
#include <stdint.h>

#include "cuvae/image.h"
#ifdef __cplusplus
extern "C" {
#endif

#define CUVAE_PLOT_FILE "curves.png"  /* the default picture, in the run directory */
#define CUVAE_PLOT_PANEL_W 600
#define CUVAE_PLOT_PANEL_H 360
#define CUVAE_PLOT_MAX_PANELS 6
#define CUVAE_PLOT_MAX_SERIES 5   /* series in one panel */
#define CUVAE_PLOT_MAX_MARKED 60  /* a series of at most this many points has a marker on each point */

typedef struct cuvae_plot_panel {
  const char *title, *ylabel;
  int n_series;
  cuvae_plot_series series[CUVAE_PLOT_MAX_SERIES];  /* x and y point into the curves' storage */
  const char *keys[CUVAE_PLOT_MAX_SERIES];           /* each series' row key */
  int per_step[CUVAE_PLOT_MAX_SERIES];               /* 1: from steps.jsonl, 0: from metrics.jsonl */
} cuvae_plot_panel;

typedef struct cuvae_run_curves {
  const char *xlabel;                /* "epoch", or "step" when no row completes an epoch */
  int64_t steps_per_epoch;           /* 0 when no row completes an epoch */
  size_t n_rows, n_step_rows;        /* metrics rows drawn (after replacements), steps.jsonl rows read */
  int n_panels;
  cuvae_plot_panel panels[CUVAE_PLOT_MAX_PANELS];
  double *data;                      /* every x and y */
} cuvae_run_curves;

/* Reads the run's rows and chooses the panels and series (above). Free with cuvae_run_curves_free, also after a
 * failure. */
int cuvae_run_curves_read(const char *run_dir, cuvae_run_curves *c);
void cuvae_run_curves_free(cuvae_run_curves *c);
/* The figure's size for n_panels panels, and panel i's box {left, top, width, height} in pixels. */
void cuvae_plot_size(int n_panels, int *width, int *height);
void cuvae_plot_panel_box(int n_panels, int i, int box[4]);
/* Draws the panels into the PNG at path. */
int cuvae_run_curves_write_png(const cuvae_run_curves *c, const char *path);
/* run_dir/CUVAE_PLOT_FILE (malloc'd; free it), or NULL with the message. */
char *cuvae_plot_default_path(const char *run_dir);
/* Both: the curves of run_dir into out_png (NULL: cuvae_plot_default_path). */
int cuvae_plot_run(const char *run_dir, const char *out_png);

#ifdef __cplusplus
}
#endif
#endif
