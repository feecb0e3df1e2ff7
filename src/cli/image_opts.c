/* Options and helpers of the picture commands (src/cli/image_opts.h). */
#include <errno.h>
#include <stdarg.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "image_opts.h"
#include "cuvae/device.h"
#include "cuvae/error.h"
#include "cuvae/image.h"
#include "inference.h"

/* ---- options --------------------------------------------------------------------------------------------- */


int img_usage_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "error: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  return CUVAE_EXIT_USAGE;
}

/* The values that are more than an integer in a range: 0, or CUVAE_EXIT_USAGE after a message. */
static int parse_seed(const char *v, image_opts *o) {
  char *end;
  errno = 0;
  o->seed = strtoull(v, &end, 0);
  if (end == v || *end || errno || *v == '-') return img_usage_error("--seed '%s': expected a non-negative integer", v);
  o->have_seed = 1;
  return 0;
}

static int parse_split(const char *v, image_opts *o) {
  if (strcmp(v, "test") == 0)
    o->split = CUVAE_SPLIT_TEST;
  else if (strcmp(v, "train") == 0)
    o->split = CUVAE_SPLIT_TRAIN;
  else
    return img_usage_error("--split '%s': expected test or train", v);
  return 0;
}

static int parse_pair(const char *v, image_opts *o) {
  char first[32];
  const char *comma = strchr(v, ',');
  if (!comma || (size_t)(comma - v) >= sizeof first)
    return img_usage_error("--pair '%s': expected two example indices I,J (e.g. --pair 0,1)", v);
  memcpy(first, v, (size_t)(comma - v));
  first[comma - v] = '\0';
  if (cli_flag_ll("--pair (first index)", first, 0, INT32_MAX, &o->pair_i) ||
      cli_flag_ll("--pair (second index)", comma + 1, 0, INT32_MAX, &o->pair_j))
    return CUVAE_EXIT_USAGE;
  return 0;
}

static int parse_range(const char *v, image_opts *o) {
  char *end;
  o->range = strtod(v, &end);
  if (end == v || *end || !isfinite(o->range) || o->range <= 0 || o->range > 100)
    return img_usage_error("--range '%s': expected a number in (0, 100]", v);
  return 0;
}

/* A word that is no flag of the command: the CHECKPOINT, or an error. */
static int take_positional(const char *a, image_opts *o) {
  if (a[0] == '-') {
    fprintf(stderr, "error: unknown option '%s' for %s (see cuvae %s --help)\n", a, o->cmd, o->cmd);
    return CUVAE_EXIT_USAGE;
  }
  if (o->ckpt) {
    fprintf(stderr, "error: %s takes one CHECKPOINT, got '%s' and '%s'\n", o->cmd, o->ckpt, a);
    return CUVAE_EXIT_USAGE;
  }
  o->ckpt = a;
  return 0;
}

/* Returns 0 to go on, -1 after --help (exit 0), or CUVAE_EXIT_USAGE. */
int img_parse(int argc, char **argv, unsigned flags, image_opts *o, void (*help)(void)) {
  const char *v;
  for (int i = 1; i < argc; i++) {
    int missing = 0, rc = 0;
    const char *a = argv[i];
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      help();
      return -1;
    } else if ((v = cli_flag_value(argc, argv, &i, "--out", &missing))) {
      if (!*v) return img_usage_error("--out needs a file name");
      o->out = v;
    } else if (!missing && (v = cli_flag_value(argc, argv, &i, "--device", &missing))) {
      if (cuvae_device_check(v)) return img_usage_error("%s", cuvae_last_error());
      o->device = v;
    } else if (!missing && (flags & F_N) && (v = cli_flag_value(argc, argv, &i, "--n", &missing))) {
      rc = cli_flag_int("--n", v, 1, MAX_N, &o->n);
    } else if (!missing && (flags & F_SEED) && (v = cli_flag_value(argc, argv, &i, "--seed", &missing))) {
      rc = parse_seed(v, o);
    } else if (!missing && (flags & F_SPLIT) && (v = cli_flag_value(argc, argv, &i, "--split", &missing))) {
      rc = parse_split(v, o);
    } else if (!missing && (flags & F_PAIR) && (v = cli_flag_value(argc, argv, &i, "--pair", &missing))) {
      rc = parse_pair(v, o);
    } else if (!missing && (flags & F_STEPS) && (v = cli_flag_value(argc, argv, &i, "--steps", &missing))) {
      rc = cli_flag_int("--steps", v, 2, MAX_STEPS, &o->steps);
    } else if ((flags & F_SPHERICAL) && strcmp(a, "--spherical") == 0) {
      o->spherical = 1;
    } else if (!missing && (flags & F_INDEX) && (v = cli_flag_value(argc, argv, &i, "--index", &missing))) {
      rc = cli_flag_ll("--index", v, 0, INT32_MAX, &o->index);
    } else if (!missing && (flags & F_DIMS) && (v = cli_flag_value(argc, argv, &i, "--dims", &missing))) {
      rc = cli_flag_int("--dims", v, 1, 1 << 20, &o->dims);
    } else if (!missing && (flags & F_RANGE) && (v = cli_flag_value(argc, argv, &i, "--range", &missing))) {
      rc = parse_range(v, o);
    } else if (!missing && (flags & F_GRID) && (v = cli_flag_value(argc, argv, &i, "--grid", &missing))) {
      rc = cli_flag_int("--grid", v, 2, MAX_GRID, &o->grid);
    } else if (!missing && (flags & F_SCALE) && (v = cli_flag_value(argc, argv, &i, "--scale", &missing))) {
      rc = cli_flag_int("--scale", v, 0, MAX_SCALE, &o->scale);
    } else if (!missing && (flags & F_LABEL) && (v = cli_flag_value(argc, argv, &i, "--label", &missing))) {
      rc = cli_flag_int("--label", v, 0, 65535, &o->label);
    } else if (!missing && (flags & F_SIZE) && (v = cli_flag_value(argc, argv, &i, "--width", &missing))) {
      rc = cli_flag_int("--width", v, 160, 8192, &o->width);
    } else if (!missing && (flags & F_SIZE) && (v = cli_flag_value(argc, argv, &i, "--height", &missing))) {
      rc = cli_flag_int("--height", v, 160, 8192, &o->height);
    } else {
      rc = missing ? CUVAE_EXIT_USAGE : take_positional(a, o);
    }
    if (rc) return rc;
  }
  if (!o->ckpt) {
    fprintf(stderr, "error: %s needs a CHECKPOINT (see cuvae %s --help)\n", o->cmd, o->cmd);
    return CUVAE_EXIT_USAGE;
  }
  return 0;
}

void img_help_options(unsigned flags, const char *out_default) {
  printf("  --out FILE     the PNG to write (default %s)\n", out_default);
  if (flags & F_SPLIT) printf("  --split S      test (default) or train\n");
  if (flags & F_SIZE)
    printf("  --width W      picture width in pixels, 160..8192 (default 800)\n"
           "  --height H     picture height in pixels, 160..8192 (default 640)\n");
  if (flags & F_SCALE) printf("  --scale P      pixels per data pixel, 1..%d; 0 (default) automatic\n", MAX_SCALE);
  printf("  --device D     auto (default), cpu or cuda\n"
         "  -h, --help     this help\n");
}

int img_begin(int argc, char **argv, unsigned flags, void (*help)(void), int need_data, image_opts *o,
              cuvae_inference *inf) {
  const int rc = img_parse(argc, argv, flags, o, help);
  return rc ? rc : img_open_model(o, need_data, inf);
}

int img_close(cuvae_inference *inf, int rc) {
  cuvae_inference_close(inf);
  return rc;
}

void img_defaults(image_opts *o, const char *cmd, const char *out) {
  memset(o, 0, sizeof *o);
  o->cmd = cmd;
  o->label = -1;
  o->out = out;
  o->device = "auto";
  o->split = CUVAE_SPLIT_TEST;
  o->width = 800;
  o->height = 640;
}

const char *img_split_name(int split) { return split == CUVAE_SPLIT_TRAIN ? "train" : "test"; }

/* Opens the checkpoint with o->split loaded (need_data), or, for the commands that only decode, with the test
 * split when it can be read (it tells the picture shape of 3-D data) and without data otherwise. */
int img_open_model(const image_opts *o, int need_data, cuvae_inference *inf) {
  int rc = cuvae_inference_open(inf, o->ckpt, o->device, need_data ? o->split : CUVAE_SPLIT_TEST);
  if (rc != 0 && !need_data) rc = cuvae_inference_open(inf, o->ckpt, o->device, CUVAE_SPLIT_NONE);
  if (rc != 0) {
    fprintf(stderr, "error: %s\n", cuvae_last_error());
    return CUVAE_EXIT_FAIL;
  }
  /* --label: the class a conditional model generates. */
  if (o->label >= 0 && !inf->model.cond) {
    cuvae_inference_close(inf);
    return img_usage_error("--label %d: the model is not conditional ([model] conditional = false)", o->label);
  }
  if (o->label >= 0 && (size_t)o->label >= inf->model.cond) {
    const size_t classes = inf->model.cond;
    cuvae_inference_close(inf);
    return img_usage_error("--label %d is outside the model's classes 0..%zu", o->label, classes - 1);
  }
  return 0;
}

void img_shape_of(const cuvae_inference *inf, int *h, int *w) {
  if (inf->data.n)
    cuvae_image_shape(inf->model.input_dim, inf->data.rows, inf->data.cols, h, w);
  else
    cuvae_image_shape(inf->model.input_dim, 1, inf->model.input_dim, h, w);
}

int img_failed(cuvae_inference *inf) {
  fprintf(stderr, "error: %s\n", cuvae_last_error());
  cuvae_inference_close(inf);
  return CUVAE_EXIT_FAIL;
}

void img_print_head(const image_opts *o, int width, int height) {
  printf("{\"command\": ");
  cli_json_string(stdout, o->cmd);
  printf(", \"out\": ");
  cli_json_string(stdout, o->out);
  printf(", \"width\": %d, \"height\": %d", width, height);
}

/* The class every decoded row of a conditional model gets (the example's own, or --label); NULL for other models.
 * n labels, freed by the caller. */
int32_t *img_same_labels(const cuvae_inference *inf, int label, size_t n) {
  if (!inf->model.cond) return NULL;
  int32_t *l = malloc(n * sizeof *l);
  if (l)
    for (size_t i = 0; i < n; i++) l[i] = label;
  return l;
}

/* Writes a grid of decoder means of the n latent rows z (a conditional model decodes them with class `label`), and
 * prints the JSON head (the caller ends the line). */
int img_decode_grid(const image_opts *o, cuvae_inference *inf, const float *z, int n, int rows, int cols, int label) {
  const size_t D = inf->model.input_dim;
  float *mean = malloc((size_t)n * D * sizeof *mean);
  int32_t *labels = img_same_labels(inf, label, (size_t)n);
  if (!mean || (inf->model.cond && !labels)) {
    free(mean);
    free(labels);
    return cuvae_error("out of memory for %d decoded examples", n);
  }
  int h, w, rc = inf->be->decode(inf->be, z, labels, (size_t)n, mean);
  free(labels);
  img_shape_of(inf, &h, &w);
  if (rc == 0) rc = cuvae_write_grid_png(o->out, mean, (size_t)n, rows, cols, h, w, 1, o->scale);
  free(mean);
  if (rc == 0) {
    int W, H;
    cuvae_grid_size(rows, cols, h, w, o->scale, &W, &H);
    img_print_head(o, W, H);
  }
  return rc;
}

/* mulv of the whole loaded split (n x 2Z). */
float *img_encode_all(cuvae_inference *inf) {
  const size_t n = inf->data.n, Z2 = 2 * inf->model.latent;
  float *mulv = malloc(n * Z2 * sizeof *mulv);
  if (!mulv) {
    cuvae_error("out of memory encoding %zu examples", n);
    return NULL;
  }
  if (inf->be->encode(inf->be, inf->data.x, inf->model.cond ? inf->data.labels : NULL, n, mulv)) {
    free(mulv);
    return NULL;
  }
  return mulv;
}

/* Example i's label (0 when the split has none: only conditional models read it, and they need labels). */
int img_example_label(const cuvae_inference *inf, long long i) {
  return inf->data.labels ? inf->data.labels[i] : 0;
}

int img_check_index(const image_opts *o, const cuvae_inference *inf, const char *flag, long long i) {
  if (i >= 0 && (size_t)i < inf->data.n) return 0;
  fprintf(stderr, "error: %s %lld is out of range: the %s split has %zu examples (0..%zu)\n", flag, i,
          img_split_name(o->split), inf->data.n, inf->data.n ? inf->data.n - 1 : 0);
  return CUVAE_EXIT_USAGE;
}
