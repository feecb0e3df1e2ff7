/* The curves of a training run: metrics.jsonl and steps.jsonl read into columns, the panels chosen from the keys
 * present, drawn on one canvas (include/cuvae/plot.h). */
#include "cuvae/plot.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cuvae/error.h"
#include "jsonl.h"
#include "plot_draw.h"

/* Where a series' values come from: metrics.jsonl; metrics.jsonl when its panel has no series from steps.jsonl;
 * steps.jsonl. */
enum { FROM_EPOCH, FROM_EPOCH_ELSE, FROM_STEP };

typedef struct series_spec {
  const char *key, *name;
  int from;
} series_spec;

typedef struct panel_spec {
  const char *title, *ylabel;
  series_spec series[CUVAE_PLOT_MAX_SERIES];
} panel_spec;

/* The panels and their series, in drawing order (the table of include/cuvae/plot.h). */
static const panel_spec k_panels[CUVAE_PLOT_MAX_PANELS] = {
    {"negative ELBO",
     "nats",
     {{"train_nelbo", "train (mean over the epoch)", FROM_EPOCH},
      {"val_nelbo", "validation", FROM_EPOCH},
      {"test_nelbo", "test", FROM_EPOCH},
      {"ema_val_nelbo", "validation, EMA weights", FROM_EPOCH},
      {"ema_test_nelbo", "test, EMA weights", FROM_EPOCH}}},
    {"reconstruction",
     "nats",
     {{"train_recon", "train", FROM_EPOCH}, {"val_recon", "validation", FROM_EPOCH}, {"recon", "test", FROM_EPOCH}}},
    {"KL", "nats", {{"train_kl", "train", FROM_EPOCH}, {"val_kl", "validation", FROM_EPOCH}, {"kl", "test", FROM_EPOCH}}},
    {"learning rate", "rate", {{"lr", "per logged step", FROM_STEP}, {"lr", "per epoch", FROM_EPOCH_ELSE}}},
    {"gradient norm",
     "norm",
     {{"grad_norm", "per logged step", FROM_STEP},
      {"grad_norm", "mean over the epoch", FROM_EPOCH_ELSE},
      {"grad_norm_max", "largest in the epoch", FROM_EPOCH}}},
    {"skipped steps", "steps", {{"skipped", "per epoch", FROM_EPOCH}}},
};

#define MAX_COLS 32
enum { COL_STEP = 0, COL_EPOCH = 1, COL_COMPLETE = 2 };  /* metrics columns 0..2; steps rows have column 0 only */

/* The rows of one file: the columns read (step, [epoch, complete,] then the plotted keys), row-major. */
typedef struct table {
  const char *path;
  int metrics;      /* 1: metrics.jsonl (columns step, epoch, complete first), 0: steps.jsonl (step first) */
  int first_value;  /* the first plotted column */
  const char *cols[MAX_COLS];
  int n_cols;
  double *v;        /* n rows of n_cols values, NaN where a row lacks the key */
  uint32_t *seen;   /* per row: bit k set when the row has column k */
  size_t *line;     /* per row: its line in the file */
  size_t n, cap;
} table;

static void table_free(table *t) {
  free(t->v);
  free(t->seen);
  free(t->line);
}

static int col_index(const table *t, const char *key) {
  for (int k = 0; k < t->n_cols; k++)
    if (strcmp(t->cols[k], key) == 0) return k;
  return -1;
}

/* The columns of metrics.jsonl (per_step 0) or steps.jsonl (1): the row's position, then each key a series of that
 * file plots, once. */
static void table_columns(table *t, int per_step) {
  t->metrics = !per_step;
  t->n_cols = 0;
  t->cols[t->n_cols++] = "step";
  if (!per_step) {
    t->cols[t->n_cols++] = "epoch";
    t->cols[t->n_cols++] = "complete";
  }
  t->first_value = t->n_cols;
  for (int p = 0; p < CUVAE_PLOT_MAX_PANELS; p++)
    for (int s = 0; s < CUVAE_PLOT_MAX_SERIES && k_panels[p].series[s].key; s++) {
      const series_spec *sp = &k_panels[p].series[s];
      if ((sp->from == FROM_STEP) == per_step && col_index(t, sp->key) < 0) t->cols[t->n_cols++] = sp->key;
    }
}

typedef struct row_ctx {
  table *t;
  double *row;
  uint32_t seen;
} row_ctx;

static int visit_field(void *ctx, const char *key, cuvae_jsonl_kind kind, double value) {
  row_ctx *r = ctx;
  const int k = col_index(r->t, key);
  if (k < 0) return 0;
  static const char *const kind_name[] = {"a number", "true or false", "null", "a string"};
  const int want_bool = r->t->metrics && k == COL_COMPLETE;
  const int ok = want_bool ? kind == CUVAE_JSONL_BOOL
                           : kind == CUVAE_JSONL_NUMBER || (kind == CUVAE_JSONL_NULL && k >= r->t->first_value);
  if (!ok)
    return cuvae_error("\"%s\" is %s; expected %s", key, kind_name[kind], want_bool ? "true or false" : "a number");
  r->row[k] = value;
  r->seen |= 1u << k;
  return 0;
}

/* A whole number >= 1 in column k of the row just read. */
static int check_count(const table *t, const row_ctx *r, int k) {
  const double v = r->row[k];
  if (!(r->seen & (1u << k))) return cuvae_error("the row has no \"%s\"", t->cols[k]);
  if (!(v >= 1 && v <= 9.0e15 && v == floor(v)))
    return cuvae_error("\"%s\" is %g; expected a whole number >= 1", t->cols[k], v);
  return 0;
}

/* One line into the next row (blank lines: none); a metrics row of the epoch of the row before it replaces it. */
static int table_add(table *t, const char *line, size_t len, size_t lineno) {
  if (strspn(line, " \t\r\n") == len) return 0;
  if (strlen(line) != len) return cuvae_error("a NUL byte");
  if (t->n == t->cap) {
    const size_t cap = t->cap ? 2 * t->cap : 256;
    double *v = realloc(t->v, cap * (size_t)t->n_cols * sizeof *v);
    if (v) t->v = v;
    uint32_t *seen = realloc(t->seen, cap * sizeof *seen);
    if (seen) t->seen = seen;
    size_t *ln = realloc(t->line, cap * sizeof *ln);
    if (ln) t->line = ln;
    if (!v || !seen || !ln) return cuvae_error("out of memory");
    t->cap = cap;
  }
  row_ctx r = {t, t->v + t->n * (size_t)t->n_cols, 0};
  for (int k = 0; k < t->n_cols; k++) r.row[k] = NAN;
  if (cuvae_jsonl_parse(line, visit_field, &r) || check_count(t, &r, COL_STEP)) return -1;
  const int metrics = t->metrics;
  if (metrics && check_count(t, &r, COL_EPOCH)) return -1;
  if (metrics && !(r.seen & (1u << COL_COMPLETE))) r.row[COL_COMPLETE] = 1;  /* absent: complete */
  size_t at = t->n;
  if (metrics && at > 0 && t->v[(at - 1) * (size_t)t->n_cols + COL_EPOCH] == r.row[COL_EPOCH]) {
    at--;  /* the same epoch again: this row replaces the one before */
    memcpy(t->v + at * (size_t)t->n_cols, r.row, (size_t)t->n_cols * sizeof *r.row);
  }
  t->seen[at] = r.seen;
  t->line[at] = lineno;
  t->n = at + 1;
  return 0;
}

/* The rows of path into t; a missing file is an error only when required. */
static int table_read(table *t, const char *path, int required) {
  t->path = path;
  FILE *f = fopen(path, "r");
  if (!f) {
    const int err = errno;
    if (!required && err == ENOENT) return 0;
    return cuvae_error("cannot read %s: %s%s", path, strerror(err),
                       err == ENOENT ? " (cuvae train writes it into the run directory)" : "");
  }
  char *line = NULL;
  size_t cap = 0, lineno = 0;
  ssize_t len;
  int rc = 0;
  while (rc == 0 && (len = getline(&line, &cap, f)) >= 0) {
    if (table_add(t, line, (size_t)len, ++lineno)) {
      char why[512];
      snprintf(why, sizeof why, "%s", cuvae_last_error());
      rc = cuvae_error("%s line %zu: %s", path, lineno, why);
    }
  }
  if (rc == 0 && ferror(f)) rc = cuvae_error("cannot read %s: %s", path, strerror(errno));
  free(line);
  fclose(f);
  return rc;
}

/* Steps per epoch from the complete rows (0 when there is none); they must agree. */
static int steps_per_epoch(const table *m, int64_t *spe) {
  size_t first = 0;
  *spe = 0;
  for (size_t i = 0; i < m->n; i++) {
    const double *row = m->v + i * (size_t)m->n_cols;
    if (row[COL_COMPLETE] == 0) continue;
    const int64_t step = (int64_t)row[COL_STEP], epoch = (int64_t)row[COL_EPOCH];
    if (step % epoch != 0)
      return cuvae_error("%s line %zu: the complete epoch %lld ends at step %lld, which is not a multiple of it",
                         m->path, m->line[i], (long long)epoch, (long long)step);
    if (*spe == 0) {
      *spe = step / epoch;
      first = m->line[i];
    } else if (step / epoch != *spe) {
      return cuvae_error("%s line %zu: the complete epoch %lld ends at step %lld, but line %zu has %lld steps per "
                         "epoch", m->path, m->line[i], (long long)epoch, (long long)step, first, (long long)*spe);
    }
  }
  return 0;
}

static int table_has(const table *t, int k) {
  for (size_t i = 0; k >= 0 && i < t->n; i++)
    if (t->seen[i] & (1u << k)) return 1;
  return 0;
}

/* The rows of t column-major into dst: x (step / spe, or the step when spe is 0), then each column; n values each. */
static void table_transpose(const table *t, int64_t spe, double *dst) {
  const size_t n = t->n, nc = (size_t)t->n_cols;
  for (size_t i = 0; i < n; i++) {
    const double step = t->v[i * nc + COL_STEP];
    dst[i] = spe > 0 ? step / (double)spe : step;
  }
  for (size_t k = 0; k < nc; k++)
    for (size_t i = 0; i < n; i++) dst[(1 + k) * n + i] = t->v[i * nc + k];
}

/* Panel p's series from the columns present (m: metrics.jsonl at md, s: steps.jsonl at sd); returns how many. */
static int panel_fill(cuvae_plot_panel *out, int p, const table *m, const double *md, const table *s,
                      const double *sd) {
  const panel_spec *ps = &k_panels[p];
  int steps = 0, n = 0;
  for (int j = 0; j < CUVAE_PLOT_MAX_SERIES && ps->series[j].key; j++)
    if (ps->series[j].from == FROM_STEP && table_has(s, col_index(s, ps->series[j].key))) steps = 1;
  memset(out, 0, sizeof *out);
  out->title = ps->title;
  out->ylabel = ps->ylabel;
  for (int j = 0; j < CUVAE_PLOT_MAX_SERIES && ps->series[j].key; j++) {
    const series_spec *sp = &ps->series[j];
    const int per_step = sp->from == FROM_STEP;
    const table *t = per_step ? s : m;
    const double *d = per_step ? sd : md;
    const int k = col_index(t, sp->key);
    if ((sp->from == FROM_EPOCH_ELSE && steps) || !table_has(t, k)) continue;
    out->series[n] = (cuvae_plot_series){sp->name, d, d + (1 + (size_t)k) * t->n, t->n};
    out->keys[n] = sp->key;
    out->per_step[n] = per_step;
    n++;
  }
  out->n_series = n;
  return n;
}

/* The curves' storage and panels from the two tables. */
static int curves_fill(cuvae_run_curves *c, const table *m, const table *s) {
  const size_t len_m = m->n * (1 + (size_t)m->n_cols), len_s = s->n * (1 + (size_t)s->n_cols);
  c->data = malloc((len_m + len_s) * sizeof *c->data);
  if (!c->data) return cuvae_error("plot: out of memory for %zu rows", m->n + s->n);
  table_transpose(m, c->steps_per_epoch, c->data);
  table_transpose(s, c->steps_per_epoch, c->data + len_m);
  c->xlabel = c->steps_per_epoch > 0 ? "epoch" : "step";
  c->n_rows = m->n;
  c->n_step_rows = s->n;
  c->n_panels = 0;
  for (int p = 0; p < CUVAE_PLOT_MAX_PANELS; p++)
    if (panel_fill(&c->panels[c->n_panels], p, m, c->data, s, c->data + len_m)) c->n_panels++;
  if (c->n_panels == 0)
    return cuvae_error("%s: no row has a key that a panel draws (train_nelbo, test_nelbo, recon, kl, lr, grad_norm, "
                       "skipped, ...; see cuvae plot --help)", m->path);
  return 0;
}

/* dir/name, without a doubled '/'; NULL when out of memory. */
static char *join(const char *dir, const char *name) {
  size_t n = strlen(dir);
  while (n > 1 && dir[n - 1] == '/') n--;
  char *p = malloc(n + strlen(name) + 2);
  if (p) sprintf(p, "%.*s/%s", (int)n, dir, name);
  return p;
}

int cuvae_run_curves_read(const char *run_dir, cuvae_run_curves *c) {
  memset(c, 0, sizeof *c);
  c->xlabel = "epoch";
  struct stat st;
  if (!run_dir || !*run_dir) return cuvae_error("plot: no run directory given");
  if (stat(run_dir, &st) != 0)
    return cuvae_error("%s: %s (expected the run directory of cuvae train)", run_dir, strerror(errno));
  if (!S_ISDIR(st.st_mode))
    return cuvae_error("%s is not a directory (expected the run directory of cuvae train, which holds metrics.jsonl)",
                       run_dir);
  char *mpath = join(run_dir, "metrics.jsonl"), *spath = join(run_dir, "steps.jsonl");
  table m, s;
  memset(&m, 0, sizeof m);
  memset(&s, 0, sizeof s);
  table_columns(&m, 0);
  table_columns(&s, 1);
  int rc = !mpath || !spath ? cuvae_error("plot: out of memory") : 0;
  if (rc == 0) rc = table_read(&m, mpath, 1);
  if (rc == 0 && m.n == 0)
    rc = cuvae_error("%s has no rows (cuvae train writes one at the end of each epoch)", mpath);
  if (rc == 0) rc = table_read(&s, spath, 0);
  if (rc == 0) rc = steps_per_epoch(&m, &c->steps_per_epoch);
  if (rc == 0) rc = curves_fill(c, &m, &s);
  table_free(&m);
  table_free(&s);
  free(mpath);
  free(spath);
  return rc;
}

void cuvae_run_curves_free(cuvae_run_curves *c) {
  free(c->data);
  c->data = NULL;
  c->n_panels = 0;
}

void cuvae_plot_size(int n_panels, int *width, int *height) {
  const int cols = n_panels > 1 ? 2 : 1, rows = n_panels > 1 ? (n_panels + 1) / 2 : 1;
  *width = cols * CUVAE_PLOT_PANEL_W;
  *height = rows * CUVAE_PLOT_PANEL_H;
}

void cuvae_plot_panel_box(int n_panels, int i, int box[4]) {
  const int cols = n_panels > 1 ? 2 : 1;
  box[0] = (i % cols) * CUVAE_PLOT_PANEL_W;
  box[1] = (i / cols) * CUVAE_PLOT_PANEL_H;
  box[2] = CUVAE_PLOT_PANEL_W;
  box[3] = CUVAE_PLOT_PANEL_H;
}

/* The x range of every finite point of every panel (one axis for all), whole-number ticks when every x is whole. */
static plot_xrange shared_x(const cuvae_run_curves *c) {
  plot_xrange r = {INFINITY, -INFINITY, 1};
  for (int p = 0; p < c->n_panels; p++)
    for (int j = 0; j < c->panels[p].n_series; j++) {
      const cuvae_plot_series *s = &c->panels[p].series[j];
      for (size_t i = 0; i < s->n; i++) {
        if (!isfinite(s->x[i]) || !isfinite(s->y[i])) continue;
        r.lo = fmin(r.lo, s->x[i]);
        r.hi = fmax(r.hi, s->x[i]);
        if (s->x[i] != floor(s->x[i])) r.integral = 0;
      }
    }
  if (!(r.lo <= r.hi)) r = (plot_xrange){0, 1, 1};
  return r;
}

int cuvae_run_curves_write_png(const cuvae_run_curves *c, const char *path) {
  if (!path || !*path) return cuvae_error("plot: no output path given");
  if (c->n_panels < 1 || c->n_panels > CUVAE_PLOT_MAX_PANELS)
    return cuvae_error("plot: %d panels (1..%d)", c->n_panels, CUVAE_PLOT_MAX_PANELS);
  int width, height;
  cuvae_plot_size(c->n_panels, &width, &height);
  plot_frame *f = plot_canvas_open(width, height);
  if (!f) return -1;
  const plot_xrange x = shared_x(c);
  int rc = 0;
  for (int p = 0; rc == 0 && p < c->n_panels; p++) {
    int b[4];
    cuvae_plot_panel_box(c->n_panels, p, b);
    const double box[4] = {b[0], b[1], b[2], b[3]};
    const cuvae_plot_panel *pn = &c->panels[p];
    rc = plot_canvas_line_panel(f, box, pn->title, c->xlabel, pn->ylabel, pn->series, pn->n_series,
                                CUVAE_PLOT_MAX_MARKED, &x);
  }
  const int written = plot_canvas_close(f, rc == 0 ? path : NULL);
  return rc || written ? -1 : 0;
}

char *cuvae_plot_default_path(const char *run_dir) {
  char *p = join(run_dir, CUVAE_PLOT_FILE);
  if (!p) cuvae_error("plot: out of memory");
  return p;
}

int cuvae_plot_run(const char *run_dir, const char *out_png) {
  cuvae_run_curves c;
  char *fallback = NULL;
  int rc = cuvae_run_curves_read(run_dir, &c);
  if (rc == 0 && !out_png && !(out_png = fallback = cuvae_plot_default_path(run_dir))) rc = -1;
  if (rc == 0) rc = cuvae_run_curves_write_png(&c, out_png);
  free(fallback);
  cuvae_run_curves_free(&c);
  return rc;
}
