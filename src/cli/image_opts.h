/* The options and helpers shared by the picture commands (src/cli/cmd_images.c: sample, reconstruct, interpolate,
 * traverse; src/cli/cmd_latent.c: latent-plot, manifold), defined in src/cli/image_opts.c. Private to src/cli/. */
#ifndef CUVAE_CLI_IMAGE_OPTS_H
#define CUVAE_CLI_IMAGE_OPTS_H
#include <stddef.h>
#include <stdint.h>

#include "cuvae/error.h"
#include "inference.h"

enum {
  F_N = 1 << 0, F_SEED = 1 << 1, F_SPLIT = 1 << 2, F_PAIR = 1 << 3, F_STEPS = 1 << 4, F_SPHERICAL = 1 << 5,
  F_INDEX = 1 << 6, F_DIMS = 1 << 7, F_RANGE = 1 << 8, F_GRID = 1 << 9, F_SCALE = 1 << 10, F_SIZE = 1 << 11,
  F_LABEL = 1 << 12
};

enum { MAX_N = 10000, MAX_STEPS = 200, MAX_GRID = 100, MAX_SCALE = 16 };

typedef struct image_opts {
  const char *cmd, *ckpt, *out, *device;
  int split;                  /* CUVAE_SPLIT_TEST | CUVAE_SPLIT_TRAIN */
  int n, steps, dims, grid, scale, width, height;
  long long index, pair_i, pair_j;
  int label;                  /* --label: the class a conditional model generates; -1 = not given */
  double range;
  uint64_t seed;
  int have_seed, spherical;
} image_opts;

/* "error: ..." on stderr; returns CUVAE_EXIT_USAGE. */
int img_usage_error(const char *fmt, ...) CUVAE_PRINTF(1, 2);
/* The command line (the flags in `flags` are accepted): 0 to go on, -1 after --help (exit 0), or CUVAE_EXIT_USAGE. */
int img_parse(int argc, char **argv, unsigned flags, image_opts *o, void (*help)(void));
/* The help lines of the options the picture commands share, in this order: --out FILE (its default out_default),
 * --split (F_SPLIT), --width and --height (F_SIZE), --scale (F_SCALE), --device, -h. */
void img_help_options(unsigned flags, const char *out_default);
/* A picture command's start: img_parse, then img_open_model. 0 to go on with inf open, -1 after --help (exit 0), or
 * the exit code after a message. */
int img_begin(int argc, char **argv, unsigned flags, void (*help)(void), int need_data, image_opts *o,
              cuvae_inference *inf);
/* Closes inf and returns rc, e.g. `return img_close(&inf, img_usage_error(...))`. */
int img_close(cuvae_inference *inf, int rc);
void img_defaults(image_opts *o, const char *cmd, const char *out);
const char *img_split_name(int split);
/* Opens the checkpoint (with its `o->split` when need_data) and checks --label against the model; 0 or an exit code. */
int img_open_model(const image_opts *o, int need_data, cuvae_inference *inf);
/* The picture shape of one data point (cuvae_image_shape). */
void img_shape_of(const cuvae_inference *inf, int *h, int *w);
/* Prints the last error, closes inf; returns CUVAE_EXIT_FAIL. */
int img_failed(cuvae_inference *inf);
/* The start of the JSON line: command, out, width, height (the caller ends the line). */
void img_print_head(const image_opts *o, int width, int height);
/* A grid of decoder means of the n latent rows z (a conditional model decodes them with class `label`); prints the
 * JSON head. */
int img_decode_grid(const image_opts *o, cuvae_inference *inf, const float *z, int n, int rows, int cols, int label);
/* mulv of the whole loaded split (n x 2Z), allocated; NULL on failure. */
float *img_encode_all(cuvae_inference *inf);
/* Example i's label (0 when the split has none). */
int img_example_label(const cuvae_inference *inf, long long i);
/* 0 when i indexes the split, else a message and CUVAE_EXIT_USAGE. */
int img_check_index(const image_opts *o, const cuvae_inference *inf, const char *flag, long long i);

#endif
