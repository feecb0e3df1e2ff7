/* cuvae sample | reconstruct | interpolate | traverse | latent-plot | manifold CHECKPOINT [options]: pictures of a
 * trained model, as PNG files (src/image.c). Each opens the checkpoint with cuvae_inference_open, works through the
 * backend's encode / decode (so on the CPU or the GPU), writes one PNG and prints one JSON line describing it.
 * Exit codes: 0 written; 2 a bad flag or a bad argument for this model / data (index out of range, K > Z, ...);
 * 1 any other failure (unreadable checkpoint or data, unwritable output). */
#include <cblas.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cuvae/error.h"
#include "cuvae/image.h"
#include "inference.h"

/* ---- options --------------------------------------------------------------------------------------------- */

enum {
  F_N = 1 << 0, F_SEED = 1 << 1, F_SPLIT = 1 << 2, F_PAIR = 1 << 3, F_STEPS = 1 << 4, F_SPHERICAL = 1 << 5,
  F_INDEX = 1 << 6, F_DIMS = 1 << 7, F_RANGE = 1 << 8, F_GRID = 1 << 9, F_SCALE = 1 << 10, F_SIZE = 1 << 11,
  F_LABEL = 1 << 12
};

enum { MAX_N = 10000, MAX_STEPS = 200, MAX_GRID = 100, MAX_SCALE = 16 };

typedef struct opts {
  const char *cmd, *ckpt, *out, *device;
  int split;                  /* CUVAE_SPLIT_TEST | CUVAE_SPLIT_TRAIN */
  int n, steps, dims, grid, scale, width, height;
  long long index, pair_i, pair_j;
  int label;                  /* --label: the class a conditional model generates; -1 = not given */
  double range;
  uint64_t seed;
  int have_seed, spherical;
} opts;

static int usage_error(const char *fmt, ...) CUVAE_PRINTF(1, 2);
static int usage_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "error: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  return CUVAE_EXIT_USAGE;
}

static int parse_ll(const char *flag, const char *v, long long lo, long long hi, long long *out) {
  char *end;
  errno = 0;
  const long long x = strtoll(v, &end, 10);
  if (end == v || *end || errno || x < lo || x > hi) {
    fprintf(stderr, "error: %s '%s': expected an integer from %lld to %lld\n", flag, v, lo, hi);
    return CUVAE_EXIT_USAGE;
  }
  *out = x;
  return 0;
}

static int parse_int(const char *flag, const char *v, int lo, int hi, int *out) {
  long long x;
  if (parse_ll(flag, v, lo, hi, &x)) return CUVAE_EXIT_USAGE;
  *out = (int)x;
  return 0;
}

/* Returns 0 to go on, -1 after --help (exit 0), or CUVAE_EXIT_USAGE. */
static int parse(int argc, char **argv, unsigned flags, opts *o, void (*help)(void)) {
  const char *v;
  for (int i = 1; i < argc; i++) {
    int missing = 0, rc = 0;
    const char *a = argv[i];
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      help();
      return -1;
    } else if ((v = cli_flag_value(argc, argv, &i, "--out", &missing))) {
      if (!*v) return usage_error("--out needs a file name");
      o->out = v;
    } else if (!missing && (v = cli_flag_value(argc, argv, &i, "--device", &missing))) {
      if (strcmp(v, "auto") && strcmp(v, "cpu") && strcmp(v, "cuda"))
        return usage_error("--device '%s': expected auto, cpu or cuda", v);
      o->device = v;
    } else if (!missing && (flags & F_N) && (v = cli_flag_value(argc, argv, &i, "--n", &missing))) {
      rc = parse_int("--n", v, 1, MAX_N, &o->n);
    } else if (!missing && (flags & F_SEED) && (v = cli_flag_value(argc, argv, &i, "--seed", &missing))) {
      char *end;
      errno = 0;
      o->seed = strtoull(v, &end, 0);
      if (end == v || *end || errno || *v == '-')
        return usage_error("--seed '%s': expected a non-negative integer", v);
      o->have_seed = 1;
    } else if (!missing && (flags & F_SPLIT) && (v = cli_flag_value(argc, argv, &i, "--split", &missing))) {
      if (strcmp(v, "test") == 0)
        o->split = CUVAE_SPLIT_TEST;
      else if (strcmp(v, "train") == 0)
        o->split = CUVAE_SPLIT_TRAIN;
      else
        return usage_error("--split '%s': expected test or train", v);
    } else if (!missing && (flags & F_PAIR) && (v = cli_flag_value(argc, argv, &i, "--pair", &missing))) {
      char first[32];
      const char *comma = strchr(v, ',');
      if (!comma || (size_t)(comma - v) >= sizeof first)
        return usage_error("--pair '%s': expected two example indices I,J (e.g. --pair 0,1)", v);
      memcpy(first, v, (size_t)(comma - v));
      first[comma - v] = '\0';
      if (parse_ll("--pair (first index)", first, 0, INT32_MAX, &o->pair_i) ||
          parse_ll("--pair (second index)", comma + 1, 0, INT32_MAX, &o->pair_j))
        return CUVAE_EXIT_USAGE;
    } else if (!missing && (flags & F_STEPS) && (v = cli_flag_value(argc, argv, &i, "--steps", &missing))) {
      rc = parse_int("--steps", v, 2, MAX_STEPS, &o->steps);
    } else if ((flags & F_SPHERICAL) && strcmp(a, "--spherical") == 0) {
      o->spherical = 1;
    } else if (!missing && (flags & F_INDEX) && (v = cli_flag_value(argc, argv, &i, "--index", &missing))) {
      rc = parse_ll("--index", v, 0, INT32_MAX, &o->index);
    } else if (!missing && (flags & F_DIMS) && (v = cli_flag_value(argc, argv, &i, "--dims", &missing))) {
      rc = parse_int("--dims", v, 1, 1 << 20, &o->dims);
    } else if (!missing && (flags & F_RANGE) && (v = cli_flag_value(argc, argv, &i, "--range", &missing))) {
      char *end;
      o->range = strtod(v, &end);
      if (end == v || *end || !isfinite(o->range) || o->range <= 0 || o->range > 100)
        return usage_error("--range '%s': expected a number in (0, 100]", v);
    } else if (!missing && (flags & F_GRID) && (v = cli_flag_value(argc, argv, &i, "--grid", &missing))) {
      rc = parse_int("--grid", v, 2, MAX_GRID, &o->grid);
    } else if (!missing && (flags & F_SCALE) && (v = cli_flag_value(argc, argv, &i, "--scale", &missing))) {
      rc = parse_int("--scale", v, 0, MAX_SCALE, &o->scale);
    } else if (!missing && (flags & F_LABEL) && (v = cli_flag_value(argc, argv, &i, "--label", &missing))) {
      rc = parse_int("--label", v, 0, 65535, &o->label);
    } else if (!missing && (flags & F_SIZE) && (v = cli_flag_value(argc, argv, &i, "--width", &missing))) {
      rc = parse_int("--width", v, 160, 8192, &o->width);
    } else if (!missing && (flags & F_SIZE) && (v = cli_flag_value(argc, argv, &i, "--height", &missing))) {
      rc = parse_int("--height", v, 160, 8192, &o->height);
    } else if (missing) {
      return CUVAE_EXIT_USAGE;
    } else if (a[0] == '-') {
      fprintf(stderr, "error: unknown option '%s' for %s (see cuvae %s --help)\n", a, o->cmd, o->cmd);
      return CUVAE_EXIT_USAGE;
    } else if (o->ckpt) {
      fprintf(stderr, "error: %s takes one CHECKPOINT, got '%s' and '%s'\n", o->cmd, o->ckpt, a);
      return CUVAE_EXIT_USAGE;
    } else {
      o->ckpt = a;
    }
    if (rc) return rc;
  }
  if (!o->ckpt) {
    fprintf(stderr, "error: %s needs a CHECKPOINT (see cuvae %s --help)\n", o->cmd, o->cmd);
    return CUVAE_EXIT_USAGE;
  }
  return 0;
}

static void defaults(opts *o, const char *cmd, const char *out) {
  memset(o, 0, sizeof *o);
  o->cmd = cmd;
  o->label = -1;
  o->out = out;
  o->device = "auto";
  o->split = CUVAE_SPLIT_TEST;
  o->width = 800;
  o->height = 640;
}

static const char *split_name(int split) { return split == CUVAE_SPLIT_TRAIN ? "train" : "test"; }

/* Opens the checkpoint with o->split loaded (need_data), or, for the commands that only decode, with the test
 * split when it can be read (it tells the picture shape of 3-D data) and without data otherwise. */
static int open_model(const opts *o, int need_data, cuvae_inference *inf) {
  int rc = cuvae_inference_open(inf, o->ckpt, o->device, need_data ? o->split : CUVAE_SPLIT_TEST);
  if (rc != 0 && !need_data) rc = cuvae_inference_open(inf, o->ckpt, o->device, CUVAE_SPLIT_NONE);
  if (rc != 0) {
    fprintf(stderr, "error: %s\n", cuvae_last_error());
    return CUVAE_EXIT_FAIL;
  }
  /* --label: the class a conditional model generates. */
  if (o->label >= 0 && !inf->model.cond) {
    cuvae_inference_close(inf);
    return usage_error("--label %d: the model is not conditional ([model] conditional = false)", o->label);
  }
  if (o->label >= 0 && (size_t)o->label >= inf->model.cond) {
    const size_t classes = inf->model.cond;
    cuvae_inference_close(inf);
    return usage_error("--label %d is outside the model's classes 0..%zu", o->label, classes - 1);
  }
  return 0;
}

static void shape_of(const cuvae_inference *inf, int *h, int *w) {
  if (inf->data.n)
    cuvae_image_shape(inf->model.input_dim, inf->data.rows, inf->data.cols, h, w);
  else
    cuvae_image_shape(inf->model.input_dim, 1, inf->model.input_dim, h, w);
}

static int failed(cuvae_inference *inf) {
  fprintf(stderr, "error: %s\n", cuvae_last_error());
  cuvae_inference_close(inf);
  return CUVAE_EXIT_FAIL;
}

static void print_head(const opts *o, int width, int height) {
  printf("{\"command\": ");
  cli_json_string(stdout, o->cmd);
  printf(", \"out\": ");
  cli_json_string(stdout, o->out);
  printf(", \"width\": %d, \"height\": %d", width, height);
}

/* The class every decoded row of a conditional model gets (the example's own, or --label); NULL for other models.
 * n labels, freed by the caller. */
static int32_t *same_labels(const cuvae_inference *inf, int label, size_t n) {
  if (!inf->model.cond) return NULL;
  int32_t *l = malloc(n * sizeof *l);
  if (l)
    for (size_t i = 0; i < n; i++) l[i] = label;
  return l;
}

/* Writes a grid of decoder means of the n latent rows z (a conditional model decodes them with class `label`), and
 * prints the JSON head (the caller ends the line). */
static int decode_grid(const opts *o, cuvae_inference *inf, const float *z, int n, int rows, int cols, int label) {
  const size_t D = inf->model.input_dim;
  float *mean = malloc((size_t)n * D * sizeof *mean);
  int32_t *labels = same_labels(inf, label, (size_t)n);
  if (!mean || (inf->model.cond && !labels)) {
    free(mean);
    free(labels);
    return cuvae_error("out of memory for %d decoded examples", n);
  }
  int h, w, rc = inf->be->decode(inf->be, z, labels, (size_t)n, mean);
  free(labels);
  shape_of(inf, &h, &w);
  if (rc == 0) rc = cuvae_write_grid_png(o->out, mean, (size_t)n, rows, cols, h, w, 1, o->scale);
  free(mean);
  if (rc == 0) {
    int W, H;
    cuvae_grid_size(rows, cols, h, w, o->scale, &W, &H);
    print_head(o, W, H);
  }
  return rc;
}

/* mulv of the whole loaded split (n x 2Z). */
static float *encode_all(cuvae_inference *inf) {
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
static int example_label(const cuvae_inference *inf, long long i) {
  return inf->data.labels ? inf->data.labels[i] : 0;
}

static int check_index(const opts *o, const cuvae_inference *inf, const char *flag, long long i) {
  if (i >= 0 && (size_t)i < inf->data.n) return 0;
  fprintf(stderr, "error: %s %lld is out of range: the %s split has %zu examples (0..%zu)\n", flag, i,
          split_name(o->split), inf->data.n, inf->data.n ? inf->data.n - 1 : 0);
  return CUVAE_EXIT_USAGE;
}

/* ---- sample ------------------------------------------------------------------------------------------------ */

void help_sample(void) {
  printf("usage: cuvae sample CHECKPOINT [--n 64] [--out samples.png] [--seed S] [--label Y] [--scale P] [--device D]\n\n"
         "Draws n latent vectors z ~ N(0, I) and writes the decoder's means (sigmoid of the logits for a Bernoulli\n"
         "decoder, f for a Gaussian one) as a PNG grid ceil(sqrt n) tiles wide. z comes from the Philox host\n"
         "stream seeded with S ^ 0x5A3B1E55A3B1E55A at offset 0 (n x Z normals, row-major); the default S is the\n"
         "checkpoint's [train] seed, which is what training's samples.png uses: `cuvae sample RUN/checkpoint.cuvae`\n"
         "redraws the run's last samples.png. A conditional model ([model] conditional = true) generates class Y\n"
         "with --label Y; without it the grid has one row per class, every row decoding the same ceil(n / C) z's.\n"
         "One JSON line on stdout names the file and its size.\n\n"
         "options:\n"
         "  --n N        number of samples, 1..%d (default 64)\n"
         "  --out FILE   the PNG to write (default samples.png)\n"
         "  --seed S     noise seed (default: the checkpoint's [train] seed)\n"
         "  --label Y    conditional model: the class to generate (default: one row per class)\n"
         "  --scale P    pixels per data pixel, 1..%d; 0 (default) enlarges tiles to >= %d pixels\n"
         "  --device D   auto (default), cpu or cuda\n"
         "  -h, --help   this help\n",
         MAX_N, MAX_SCALE, CUVAE_GRID_MIN_TILE);
}

int cmd_sample(int argc, char **argv) {
  opts o;
  defaults(&o, "sample", "samples.png");
  o.n = 64;
  int rc = parse(argc, argv, F_N | F_SEED | F_SCALE | F_LABEL, &o, help_sample);
  if (rc) return rc < 0 ? 0 : rc;
  cuvae_inference inf;
  if ((rc = open_model(&o, 0, &inf))) return rc;
  const uint64_t seed = o.have_seed ? o.seed : inf.cfg.seed;
  int h, w, W, H;
  shape_of(&inf, &h, &w);
  if (cuvae_write_samples_png(inf.be, &inf.model, seed, o.n, h, w, o.scale, o.label, o.out, &W, &H)) return failed(&inf);
  print_head(&o, W, H);
  printf(", \"n\": %d, \"seed\": %" PRIu64 "}\n", o.n, seed);
  cuvae_inference_close(&inf);
  return 0;
}

/* ---- reconstruct ------------------------------------------------------------------------------------------- */

void help_reconstruct(void) {
  printf("usage: cuvae reconstruct CHECKPOINT [--n 32] [--out recon.png] [--split test|train] [--scale P]\n"
         "                          [--device D]\n\n"
         "Encodes the first n examples of a data split, decodes z = mu (the mean of q(z|x)) and writes a PNG grid\n"
         "of pairs of rows: a row of inputs, below it the same inputs reconstructed (decoder means). The grid is\n"
         "ceil(sqrt(2n)) tiles wide (32 -> 8 wide, 4 pairs). This is the picture training writes as recon.png.\n\n"
         "options:\n"
         "  --n N          number of examples, 1..%d (default 32; at most the split's size)\n"
         "  --out FILE     the PNG to write (default recon.png)\n"
         "  --split S      test (default) or train\n"
         "  --scale P      pixels per data pixel, 1..%d; 0 (default) automatic\n"
         "  --device D     auto (default), cpu or cuda\n"
         "  -h, --help     this help\n",
         MAX_N, MAX_SCALE);
}

int cmd_reconstruct(int argc, char **argv) {
  opts o;
  defaults(&o, "reconstruct", "recon.png");
  o.n = 32;
  int rc = parse(argc, argv, F_N | F_SPLIT | F_SCALE, &o, help_reconstruct);
  if (rc) return rc < 0 ? 0 : rc;
  cuvae_inference inf;
  if ((rc = open_model(&o, 1, &inf))) return rc;
  if ((size_t)o.n > inf.data.n) {
    fprintf(stderr, "error: --n %d is more than the %zu examples of the %s split\n", o.n, inf.data.n,
            split_name(o.split));
    cuvae_inference_close(&inf);
    return CUVAE_EXIT_USAGE;
  }
  int h, w, W, H;
  shape_of(&inf, &h, &w);
  if (cuvae_write_recon_png(inf.be, &inf.model, &inf.data, o.n, h, w, o.scale, o.out, &W, &H)) return failed(&inf);
  print_head(&o, W, H);
  printf(", \"n\": %d, \"split\": \"%s\"}\n", o.n, split_name(o.split));
  cuvae_inference_close(&inf);
  return 0;
}

/* ---- interpolate ------------------------------------------------------------------------------------------- */

void help_interpolate(void) {
  printf("usage: cuvae interpolate CHECKPOINT [--pair I,J] [--steps 10] [--spherical] [--out interp.png]\n"
         "                          [--split test|train] [--label Y] [--scale P] [--device D]\n\n"
         "Encodes examples I and J of a data split and decodes `steps` points evenly spaced (t = 0 .. 1) on the\n"
         "line between mu(x_I) and mu(x_J), or with --spherical on the great-circle arc (slerp: angle and length\n"
         "interpolated together; the line when the two are parallel). Writes one row of `steps` tiles, x_I's end\n"
         "on the left.\n\n"
         "options:\n"
         "  --pair I,J     example indices (default 0,1)\n"
         "  --steps N      points on the path including both ends, 2..%d (default 10)\n"
         "  --spherical    slerp instead of the straight line\n"
         "  --label Y      conditional model: decode with class Y (default: example I's label)\n"
         "  --out FILE     the PNG to write (default interp.png)\n"
         "  --split S      test (default) or train\n"
         "  --scale P      pixels per data pixel, 1..%d; 0 (default) automatic\n"
         "  --device D     auto (default), cpu or cuda\n"
         "  -h, --help     this help\n",
         MAX_STEPS, MAX_SCALE);
}

int cmd_interpolate(int argc, char **argv) {
  opts o;
  defaults(&o, "interpolate", "interp.png");
  o.pair_i = 0;
  o.pair_j = 1;
  o.steps = 10;
  int rc = parse(argc, argv, F_PAIR | F_STEPS | F_SPHERICAL | F_SPLIT | F_SCALE | F_LABEL, &o, help_interpolate);
  if (rc) return rc < 0 ? 0 : rc;
  cuvae_inference inf;
  if ((rc = open_model(&o, 1, &inf))) return rc;
  if ((rc = check_index(&o, &inf, "--pair", o.pair_i)) || (rc = check_index(&o, &inf, "--pair", o.pair_j))) {
    cuvae_inference_close(&inf);
    return rc;
  }
  const size_t Z = inf.model.latent, D = inf.model.input_dim;
  float *x = malloc(2 * D * sizeof *x), *mulv = malloc(4 * Z * sizeof *mulv),
        *z = malloc((size_t)o.steps * Z * sizeof *z);
  rc = x && mulv && z ? 0 : cuvae_error("out of memory");
  if (rc == 0) {
    memcpy(x, inf.data.x + (size_t)o.pair_i * D, D * sizeof *x);
    memcpy(x + D, inf.data.x + (size_t)o.pair_j * D, D * sizeof *x);
    const int32_t pair_labels[2] = {inf.data.labels ? inf.data.labels[o.pair_i] : 0,
                                    inf.data.labels ? inf.data.labels[o.pair_j] : 0};
    rc = inf.be->encode(inf.be, x, inf.model.cond ? pair_labels : NULL, 2, mulv);
  }
  if (rc == 0) {
    const float *a = mulv, *b = mulv + 2 * Z;  /* the two mu */
    double dot = 0, na = 0, nb = 0;
    for (size_t j = 0; j < Z; j++) {
      dot += (double)a[j] * b[j];
      na += (double)a[j] * a[j];
      nb += (double)b[j] * b[j];
    }
    double omega = 0.0;
    if (o.spherical && na > 0 && nb > 0) omega = acos(fmax(-1.0, fmin(1.0, dot / sqrt(na * nb))));
    const int slerp = o.spherical && sin(omega) > 1e-6;
    for (int s = 0; s < o.steps; s++) {
      const double t = (double)s / (o.steps - 1);
      const double ca = slerp ? sin((1 - t) * omega) / sin(omega) : 1 - t, cb = slerp ? sin(t * omega) / sin(omega) : t;
      for (size_t j = 0; j < Z; j++) z[(size_t)s * Z + j] = (float)(ca * a[j] + cb * b[j]);
    }
    rc = decode_grid(&o, &inf, z, o.steps, 1, o.steps, o.label >= 0 ? o.label : example_label(&inf, o.pair_i));
  }
  free(x);
  free(mulv);
  free(z);
  if (rc) return failed(&inf);
  printf(", \"pair\": [%lld, %lld], \"steps\": %d, \"spherical\": %s, \"split\": \"%s\"}\n", o.pair_i, o.pair_j,
         o.steps, o.spherical ? "true" : "false", split_name(o.split));
  cuvae_inference_close(&inf);
  return 0;
}

/* ---- traverse ------------------------------------------------------------------------------------------------ */

void help_traverse(void) {
  printf("usage: cuvae traverse CHECKPOINT [--index I] [--dims K] [--range R] [--steps 9] [--out traverse.png]\n"
         "                       [--split test|train] [--label Y] [--scale P] [--device D]\n\n"
         "Latent traversal: ranks the latent dimensions by their mean KL(q(z_j|x) || N(0, 1)) over the split (the\n"
         "informative ones first), then, for each of the top K, starts from z = mu(x_I) and sets z_j to `steps`\n"
         "values evenly spaced in [-R, +R], decoding each. Writes K rows (most informative dim on top) of `steps`\n"
         "tiles; the JSON line lists the dims and their mean KL (nats).\n\n"
         "options:\n"
         "  --index I      example index in the split (default 0)\n"
         "  --label Y      conditional model: decode with class Y (default: the example's label)\n"
         "  --dims K       number of dims, 1..Z (default min(Z, 8))\n"
         "  --range R      traverse z_j over [-R, R], R in (0, 100] (default 3)\n"
         "  --steps N      values per dim, 2..%d (default 9)\n"
         "  --out FILE     the PNG to write (default traverse.png)\n"
         "  --split S      test (default) or train\n"
         "  --scale P      pixels per data pixel, 1..%d; 0 (default) automatic\n"
         "  --device D     auto (default), cpu or cuda\n"
         "  -h, --help     this help\n",
         MAX_STEPS, MAX_SCALE);
}

int cmd_traverse(int argc, char **argv) {
  opts o;
  defaults(&o, "traverse", "traverse.png");
  o.steps = 9;
  o.range = 3.0;
  int rc = parse(argc, argv, F_INDEX | F_DIMS | F_RANGE | F_STEPS | F_SPLIT | F_SCALE | F_LABEL, &o, help_traverse);
  if (rc) return rc < 0 ? 0 : rc;
  cuvae_inference inf;
  if ((rc = open_model(&o, 1, &inf))) return rc;
  const size_t Z = inf.model.latent, n = inf.data.n;
  if (o.dims == 0) o.dims = Z < 8 ? (int)Z : 8;
  if ((size_t)o.dims > Z) {
    fprintf(stderr, "error: --dims %d is more than the model's %zu latent dimensions\n", o.dims, Z);
    cuvae_inference_close(&inf);
    return CUVAE_EXIT_USAGE;
  }
  if ((rc = check_index(&o, &inf, "--index", o.index))) {
    cuvae_inference_close(&inf);
    return rc;
  }
  float *mulv = encode_all(&inf);
  if (!mulv) return failed(&inf);
  /* Mean KL per dim: 0.5 (mu^2 + exp(lv) - 1 - lv), averaged over the split, in double. */
  double *kl = calloc(Z, sizeof *kl);
  int *order = malloc(Z * sizeof *order);
  float *z = malloc((size_t)o.dims * (size_t)o.steps * Z * sizeof *z);
  rc = kl && order && z ? 0 : cuvae_error("out of memory");
  if (rc == 0) {
    for (size_t i = 0; i < n; i++)
      for (size_t j = 0; j < Z; j++) {
        const double mu = mulv[i * 2 * Z + j], lv = mulv[i * 2 * Z + Z + j];
        kl[j] += 0.5 * (mu * mu + exp(lv) - 1.0 - lv);
      }
    for (size_t j = 0; j < Z; j++) {
      kl[j] /= (double)n;
      order[j] = (int)j;
    }
    /* Insertion sort by KL, descending; ties keep the lower index first. */
    for (size_t a = 1; a < Z; a++) {
      const int t = order[a];
      size_t b = a;
      while (b > 0 && kl[order[b - 1]] < kl[t]) {
        order[b] = order[b - 1];
        b--;
      }
      order[b] = t;
    }
    const float *mu0 = mulv + (size_t)o.index * 2 * Z;
    for (int r = 0; r < o.dims; r++)
      for (int s = 0; s < o.steps; s++) {
        float *row = z + ((size_t)r * (size_t)o.steps + (size_t)s) * Z;
        memcpy(row, mu0, Z * sizeof *row);
        row[order[r]] = (float)(-o.range + 2.0 * o.range * s / (o.steps - 1));
      }
    rc = decode_grid(&o, &inf, z, o.dims * o.steps, o.dims, o.steps,
                     o.label >= 0 ? o.label : example_label(&inf, o.index));
  }
  if (rc == 0) {
    printf(", \"index\": %lld, \"range\": %g, \"steps\": %d, \"split\": \"%s\", \"dims\": [", o.index, o.range,
           o.steps, split_name(o.split));
    for (int r = 0; r < o.dims; r++) printf("%s%d", r ? ", " : "", order[r]);
    printf("], \"kl\": [");
    for (int r = 0; r < o.dims; r++) printf("%s%.6g", r ? ", " : "", kl[order[r]]);
    printf("]}\n");
  }
  free(mulv);
  free(kl);
  free(order);
  free(z);
  if (rc) return failed(&inf);
  cuvae_inference_close(&inf);
  return 0;
}

/* ---- latent-plot ----------------------------------------------------------------------------------------------- */

void help_latent_plot(void) {
  printf("usage: cuvae latent-plot CHECKPOINT [--out latent.png] [--split test|train] [--width 800] [--height 640]\n"
         "                          [--device D]\n\n"
         "Encodes every example of the split and draws a scatter plot of mu(x), coloured by label with a legend\n"
         "(one colour when the split has no labels). Z = 2: the two coordinates; Z > 2: the first two principal\n"
         "components of the mu's (power iteration on their covariance; the axis labels give the share of the\n"
         "variance each explains); Z = 1: mu against 0.\n\n"
         "options:\n"
         "  --out FILE     the PNG to write (default latent.png)\n"
         "  --split S      test (default) or train\n"
         "  --width W      picture width in pixels, 160..8192 (default 800)\n"
         "  --height H     picture height in pixels, 160..8192 (default 640)\n"
         "  --device D     auto (default), cpu or cuda\n"
         "  -h, --help     this help\n");
}

/* The top two eigenvectors of the symmetric Z x Z matrix C (power iteration with deflation by orthogonalisation),
 * their eigenvalues in lambda[0..1]. Deterministic: fixed start vectors, sign fixed by the largest component. */
static int top2_eigen(const double *C, size_t Z, double *v, double *lambda) {
  double *w = malloc(Z * sizeof *w);
  if (!w) return cuvae_error("out of memory");
  for (int k = 0; k < 2; k++) {
    double *vk = v + (size_t)k * Z;
    for (size_t i = 0; i < Z; i++) vk[i] = 1.0 + 0.01 * (double)((i * 7 + (size_t)k * 3) % 11);
    lambda[k] = 0.0;
    for (int it = 0; it < 5000; it++) {
      if (k == 1) {  /* stay orthogonal to the first component */
        double d = 0;
        for (size_t i = 0; i < Z; i++) d += vk[i] * v[i];
        for (size_t i = 0; i < Z; i++) vk[i] -= d * v[i];
      }
      double nv = 0;
      for (size_t i = 0; i < Z; i++) nv += vk[i] * vk[i];
      nv = sqrt(nv);
      if (nv == 0) break;
      for (size_t i = 0; i < Z; i++) vk[i] /= nv;
      cblas_dsymv(CblasRowMajor, CblasUpper, (int)Z, 1.0, C, (int)Z, vk, 1, 0.0, w, 1);
      double nw = 0, change = 0;
      for (size_t i = 0; i < Z; i++) nw += w[i] * w[i];
      nw = sqrt(nw);
      lambda[k] = nw;
      if (nw == 0) break;
      for (size_t i = 0; i < Z; i++) {
        const double u = w[i] / nw;
        change += (u - vk[i]) * (u - vk[i]);
        vk[i] = u;
      }
      if (change < 1e-24) break;
    }
    size_t big = 0;
    for (size_t i = 1; i < Z; i++)
      if (fabs(vk[i]) > fabs(vk[big])) big = i;
    if (vk[big] < 0)
      for (size_t i = 0; i < Z; i++) vk[i] = -vk[i];
  }
  free(w);
  return 0;
}

int cmd_latent_plot(int argc, char **argv) {
  static const char *const fashion_names[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  opts o;
  defaults(&o, "latent-plot", "latent.png");
  int rc = parse(argc, argv, F_SPLIT | F_SIZE, &o, help_latent_plot);
  if (rc) return rc < 0 ? 0 : rc;
  cuvae_inference inf;
  if ((rc = open_model(&o, 1, &inf))) return rc;
  const size_t Z = inf.model.latent, n = inf.data.n;
  float *mulv = encode_all(&inf);
  if (!mulv) return failed(&inf);
  float *px = malloc(n * sizeof *px), *py = malloc(n * sizeof *py);
  const int pca = Z > 2;
  double *X = pca ? malloc(n * Z * sizeof *X) : NULL, *C = pca ? calloc(Z * Z, sizeof *C) : NULL;
  double *v = pca ? malloc(2 * Z * sizeof *v) : NULL, *mean = pca ? calloc(Z, sizeof *mean) : NULL;
  double lambda[2] = {0, 0}, trace = 0;
  char xlabel[96] = "z1 (mu)", ylabel[96] = "z2 (mu)";
  rc = px && py && (!pca || (X && C && v && mean)) ? 0 : cuvae_error("out of memory");
  if (rc == 0 && pca) {
    /* Centre the mu's, covariance C = X^T X / n (upper triangle, dsyrk), its top two eigenvectors. */
    for (size_t i = 0; i < n; i++)
      for (size_t j = 0; j < Z; j++) mean[j] += mulv[i * 2 * Z + j];
    for (size_t j = 0; j < Z; j++) mean[j] /= (double)n;
    for (size_t i = 0; i < n; i++)
      for (size_t j = 0; j < Z; j++) X[i * Z + j] = mulv[i * 2 * Z + j] - mean[j];
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)Z, (int)n, 1.0 / (double)n, X, (int)Z, 0.0, C, (int)Z);
    for (size_t j = 0; j < Z; j++) trace += C[j * Z + j];
    rc = top2_eigen(C, Z, v, lambda);
    if (rc == 0) {
      for (size_t i = 0; i < n; i++) {
        double a = 0, b = 0;
        for (size_t j = 0; j < Z; j++) {
          a += X[i * Z + j] * v[j];
          b += X[i * Z + j] * v[Z + j];
        }
        px[i] = (float)a;
        py[i] = (float)b;
      }
      snprintf(xlabel, sizeof xlabel, "PC1 of mu (%.1f%% of the variance)", trace > 0 ? 100 * lambda[0] / trace : 0);
      snprintf(ylabel, sizeof ylabel, "PC2 of mu (%.1f%% of the variance)", trace > 0 ? 100 * lambda[1] / trace : 0);
    }
  } else if (rc == 0) {
    for (size_t i = 0; i < n; i++) {
      px[i] = mulv[i * 2 * Z];
      py[i] = Z == 2 ? mulv[i * 2 * Z + 1] : 0.0f;
    }
    if (Z == 1) snprintf(ylabel, sizeof ylabel, "(Z = 1)");
  }
  char title[160];
  snprintf(title, sizeof title, "q(z|x) means of the %s split (%zu examples, Z = %zu)", split_name(o.split), n, Z);
  const int fashion = strcmp(inf.cfg.dataset, "fashion-mnist") == 0;
  if (rc == 0 && !inf.data.labels)
    fprintf(stderr, "note: the %s split has no labels; the points get one colour\n", split_name(o.split));
  if (rc == 0)
    rc = cuvae_write_scatter_png(o.out, o.width, o.height, title, xlabel, ylabel, px, py, inf.data.labels, n,
                                 fashion ? fashion_names : NULL, fashion ? 10 : 0);
  if (rc == 0) {
    print_head(&o, o.width, o.height);
    printf(", \"split\": \"%s\", \"points\": %zu, \"labels\": %s, \"axes\": \"%s\"", split_name(o.split), n,
           inf.data.labels ? "true" : "false", Z > 2 ? "pca" : "mu");
    if (Z > 2)
      printf(", \"explained\": [%.6g, %.6g]", trace > 0 ? lambda[0] / trace : 0, trace > 0 ? lambda[1] / trace : 0);
    printf("}\n");
  }
  free(mulv);
  free(px);
  free(py);
  free(X);
  free(C);
  free(v);
  free(mean);
  if (rc) return failed(&inf);
  cuvae_inference_close(&inf);
  return 0;
}

/* ---- manifold ------------------------------------------------------------------------------------------------ */

void help_manifold(void) {
  printf("usage: cuvae manifold CHECKPOINT [--grid 20] [--out manifold.png] [--label Y] [--scale P] [--device D]\n\n"
         "For a model with a 2-D latent space (Z = 2): decodes a G x G grid of latent points at Gaussian quantiles,\n"
         "z = (Phi^-1(p_c), Phi^-1(1 - p_r)) with p_k = (k + 0.5) / G (Phi^-1: the inverse normal CDF), so each\n"
         "cell covers an equal share of the prior's mass; z1 grows to the right, z2 upwards.\n\n"
         "options:\n"
         "  --grid G       tiles per side, 2..%d (default 20)\n"
         "  --label Y      conditional model: decode with class Y (default 0)\n"
         "  --out FILE     the PNG to write (default manifold.png)\n"
         "  --scale P      pixels per data pixel, 1..%d; 0 (default) automatic\n"
         "  --device D     auto (default), cpu or cuda\n"
         "  -h, --help     this help\n",
         MAX_GRID, MAX_SCALE);
}

/* Phi^-1(p) for p in (0, 1): bisection on Phi(x) = erfc(-x / sqrt 2) / 2 to double precision. */
static double normal_quantile(double p) {
  double lo = -40.0, hi = 40.0;
  for (int it = 0; it < 200 && hi - lo > 1e-15; it++) {
    const double mid = 0.5 * (lo + hi);
    if (0.5 * erfc(-mid / sqrt(2.0)) < p)
      lo = mid;
    else
      hi = mid;
  }
  return 0.5 * (lo + hi);
}

int cmd_manifold(int argc, char **argv) {
  opts o;
  defaults(&o, "manifold", "manifold.png");
  o.grid = 20;
  int rc = parse(argc, argv, F_GRID | F_SCALE | F_LABEL, &o, help_manifold);
  if (rc) return rc < 0 ? 0 : rc;
  cuvae_inference inf;
  if ((rc = open_model(&o, 0, &inf))) return rc;
  if (inf.model.latent != 2) {
    fprintf(stderr, "error: manifold needs a model with a 2-D latent space; %s has Z = %zu (latent-plot and "
            "traverse work for any Z)\n", o.ckpt, inf.model.latent);
    cuvae_inference_close(&inf);
    return CUVAE_EXIT_USAGE;
  }
  const int G = o.grid;
  float *z = malloc((size_t)G * (size_t)G * 2 * sizeof *z);
  if (!z) {
    cuvae_error("out of memory");
    return failed(&inf);
  }
  for (int r = 0; r < G; r++)
    for (int c = 0; c < G; c++) {
      z[((size_t)r * G + c) * 2 + 0] = (float)normal_quantile((c + 0.5) / G);
      z[((size_t)r * G + c) * 2 + 1] = (float)normal_quantile(1.0 - (r + 0.5) / G);
    }
  rc = decode_grid(&o, &inf, z, G * G, G, G, o.label >= 0 ? o.label : 0);
  free(z);
  if (rc) return failed(&inf);
  printf(", \"grid\": %d, \"z_max\": %.6g}\n", G, normal_quantile(1.0 - 0.5 / G));
  cuvae_inference_close(&inf);
  return 0;
}
