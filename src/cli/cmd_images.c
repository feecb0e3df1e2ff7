/* cuvae sample | reconstruct | interpolate | traverse CHECKPOINT [options] (latent-plot and manifold: cmd_latent.c;
 * shared options: image_opts.c): pictures of a
 * trained model, as PNG files (src/engine/image.c). Each opens the checkpoint with cuvae_inference_open, works through the
 * backend's encode / decode (so on the CPU or the GPU), writes one PNG and prints one JSON line describing it.
 * Exit codes: 0 written; 2 a bad flag or a bad argument for this model / data (index out of range, K > Z, ...);
 * 1 any other failure (unreadable checkpoint or data, unwritable output). */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "image_opts.h"
#include "cuvae/error.h"
#include "cuvae/image.h"
#include "inference.h"

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
  image_opts o;
  img_defaults(&o, "sample", "samples.png");
  o.n = 64;
  cuvae_inference inf;
  const int rc = img_begin(argc, argv, F_N | F_SEED | F_SCALE | F_LABEL, help_sample, 0, &o, &inf);
  if (rc) return rc < 0 ? 0 : rc;
  const uint64_t seed = o.have_seed ? o.seed : inf.cfg.seed;
  int h, w, W, H;
  img_shape_of(&inf, &h, &w);
  if (cuvae_write_samples_png(inf.be, &inf.model, seed, o.n, h, w, o.scale, o.label, o.out, &W, &H)) return img_failed(&inf);
  img_print_head(&o, W, H);
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
         "  --n N          number of examples, 1..%d (default 32; at most the split's size)\n",
         MAX_N);
  img_help_options(F_SPLIT | F_SCALE, "recon.png");
}

int cmd_reconstruct(int argc, char **argv) {
  image_opts o;
  img_defaults(&o, "reconstruct", "recon.png");
  o.n = 32;
  cuvae_inference inf;
  const int rc = img_begin(argc, argv, F_N | F_SPLIT | F_SCALE, help_reconstruct, 1, &o, &inf);
  if (rc) return rc < 0 ? 0 : rc;
  if ((size_t)o.n > inf.data.n)
    return img_close(&inf, img_usage_error("--n %d is more than the %zu examples of the %s split", o.n, inf.data.n,
                                           img_split_name(o.split)));
  int h, w, W, H;
  img_shape_of(&inf, &h, &w);
  if (cuvae_write_recon_png(inf.be, &inf.model, &inf.data, o.n, h, w, o.scale, o.out, &W, &H)) return img_failed(&inf);
  img_print_head(&o, W, H);
  printf(", \"n\": %d, \"split\": \"%s\"}\n", o.n, img_split_name(o.split));
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
         "  --label Y      conditional model: decode with class Y (default: example I's label)\n",
         MAX_STEPS);
  img_help_options(F_SPLIT | F_SCALE, "interp.png");
}

int cmd_interpolate(int argc, char **argv) {
  image_opts o;
  img_defaults(&o, "interpolate", "interp.png");
  o.pair_i = 0;
  o.pair_j = 1;
  o.steps = 10;
  cuvae_inference inf;
  int rc = img_begin(argc, argv, F_PAIR | F_STEPS | F_SPHERICAL | F_SPLIT | F_SCALE | F_LABEL, help_interpolate, 1,
                     &o, &inf);
  if (rc) return rc < 0 ? 0 : rc;
  if ((rc = img_check_index(&o, &inf, "--pair", o.pair_i)) || (rc = img_check_index(&o, &inf, "--pair", o.pair_j)))
    return img_close(&inf, rc);
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
    rc = img_decode_grid(&o, &inf, z, o.steps, 1, o.steps, o.label >= 0 ? o.label : img_example_label(&inf, o.pair_i));
  }
  free(x);
  free(mulv);
  free(z);
  if (rc) return img_failed(&inf);
  printf(", \"pair\": [%lld, %lld], \"steps\": %d, \"spherical\": %s, \"split\": \"%s\"}\n", o.pair_i, o.pair_j,
         o.steps, o.spherical ? "true" : "false", img_split_name(o.split));
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
         "  --steps N      values per dim, 2..%d (default 9)\n",
         MAX_STEPS);
  img_help_options(F_SPLIT | F_SCALE, "traverse.png");
}

int cmd_traverse(int argc, char **argv) {
  image_opts o;
  img_defaults(&o, "traverse", "traverse.png");
  o.steps = 9;
  o.range = 3.0;
  cuvae_inference inf;
  int rc = img_begin(argc, argv, F_INDEX | F_DIMS | F_RANGE | F_STEPS | F_SPLIT | F_SCALE | F_LABEL, help_traverse,
                     1, &o, &inf);
  if (rc) return rc < 0 ? 0 : rc;
  const size_t Z = inf.model.latent, n = inf.data.n;
  if (o.dims == 0) o.dims = Z < 8 ? (int)Z : 8;
  if ((size_t)o.dims > Z)
    return img_close(&inf, img_usage_error("--dims %d is more than the model's %zu latent dimensions", o.dims, Z));
  if ((rc = img_check_index(&o, &inf, "--index", o.index))) return img_close(&inf, rc);
  float *mulv = img_encode_all(&inf);
  if (!mulv) return img_failed(&inf);
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
    rc = img_decode_grid(&o, &inf, z, o.dims * o.steps, o.dims, o.steps,
                     o.label >= 0 ? o.label : img_example_label(&inf, o.index));
  }
  if (rc == 0) {
    printf(", \"index\": %lld, \"range\": %g, \"steps\": %d, \"split\": \"%s\", \"dims\": [", o.index, o.range,
           o.steps, img_split_name(o.split));
    for (int r = 0; r < o.dims; r++) printf("%s%d", r ? ", " : "", order[r]);
    printf("], \"kl\": [");
    for (int r = 0; r < o.dims; r++) printf("%s%.6g", r ? ", " : "", kl[order[r]]);
    printf("]}\n");
  }
  free(mulv);
  free(kl);
  free(order);
  free(z);
  if (rc) return img_failed(&inf);
  cuvae_inference_close(&inf);
  return 0;
}
