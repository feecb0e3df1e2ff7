/* cuvae latent-plot | manifold CHECKPOINT [options]: pictures of the latent space (shared options: image_opts.c). */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "image_opts.h"
#include "cuvae/error.h"
#include "cuvae/image.h"
#include "inference.h"

/* ---- latent-plot ----------------------------------------------------------------------------------------------- */

void help_latent_plot(void) {
  printf("usage: cuvae latent-plot CHECKPOINT [--out latent.png] [--split test|train] [--width 800] [--height 640]\n"
         "                          [--device D]\n\n"
         "Encodes every example of the split and draws a scatter plot of mu(x), coloured by label with a legend\n"
         "(one colour when the split has no labels). Z = 2: the two coordinates; Z > 2: the first two principal\n"
         "components of the mu's (power iteration on their covariance; the axis labels give the share of the\n"
         "variance each explains); Z = 1: mu against 0.\n\n"
         "options:\n");
  img_help_options(F_SPLIT | F_SIZE, "latent.png");
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
  image_opts o;
  img_defaults(&o, "latent-plot", "latent.png");
  cuvae_inference inf;
  int rc = img_begin(argc, argv, F_SPLIT | F_SIZE, help_latent_plot, 1, &o, &inf);
  if (rc) return rc < 0 ? 0 : rc;
  const size_t Z = inf.model.latent, n = inf.data.n;
  float *mulv = img_encode_all(&inf);
  if (!mulv) return img_failed(&inf);
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
  snprintf(title, sizeof title, "q(z|x) means of the %s split (%zu examples, Z = %zu)", img_split_name(o.split), n, Z);
  const int fashion = strcmp(inf.cfg.dataset, "fashion-mnist") == 0;
  if (rc == 0 && !inf.data.labels)
    fprintf(stderr, "note: the %s split has no labels; the points get one colour\n", img_split_name(o.split));
  if (rc == 0)
    rc = cuvae_write_scatter_png(o.out, o.width, o.height, title, xlabel, ylabel, px, py, inf.data.labels, n,
                                 fashion ? fashion_names : NULL, fashion ? 10 : 0);
  if (rc == 0) {
    img_print_head(&o, o.width, o.height);
    printf(", \"split\": \"%s\", \"points\": %zu, \"labels\": %s, \"axes\": \"%s\"", img_split_name(o.split), n,
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
  if (rc) return img_failed(&inf);
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
         "  --label Y      conditional model: decode with class Y (default 0)\n",
         MAX_GRID);
  img_help_options(F_SCALE, "manifold.png");
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
  image_opts o;
  img_defaults(&o, "manifold", "manifold.png");
  o.grid = 20;
  cuvae_inference inf;
  int rc = img_begin(argc, argv, F_GRID | F_SCALE | F_LABEL, help_manifold, 0, &o, &inf);
  if (rc) return rc < 0 ? 0 : rc;
  if (inf.model.latent != 2)
    return img_close(&inf, img_usage_error("manifold needs a model with a 2-D latent space; %s has Z = %zu "
                                           "(latent-plot and traverse work for any Z)", o.ckpt, inf.model.latent));
  const int G = o.grid;
  float *z = malloc((size_t)G * (size_t)G * 2 * sizeof *z);
  if (!z) {
    cuvae_error("out of memory");
    return img_failed(&inf);
  }
  for (int r = 0; r < G; r++)
    for (int c = 0; c < G; c++) {
      z[((size_t)r * G + c) * 2 + 0] = (float)normal_quantile((c + 0.5) / G);
      z[((size_t)r * G + c) * 2 + 1] = (float)normal_quantile(1.0 - (r + 0.5) / G);
    }
  rc = img_decode_grid(&o, &inf, z, G * G, G, G, o.label >= 0 ? o.label : 0);
  free(z);
  if (rc) return img_failed(&inf);
  printf(", \"grid\": %d, \"z_max\": %.6g}\n", G, normal_quantile(1.0 - 0.5 / G));
  cuvae_inference_close(&inf);
  return 0;
}
