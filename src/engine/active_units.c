/* Active units and the KL per latent dimension of a data set (docs/MATH.md (3.5)), from a backend's encode op, so
 * they run on whichever backend holds the parameters (the trainer's, or an evaluation's). */
#include "active_units.h"

#include <math.h>
#include <stdlib.h>

#include "cuvae/error.h"

enum { CHUNK_ROWS = 1024 };  /* rows encoded per call: bounds the host buffer at CHUNK_ROWS x 2Z floats */

/* The sums over this rank's chunks of rows (chunk k is rank (k mod size)'s; all of them in one process) into
 * s[0..Z) (d), s[Z..2Z) (d^2) and s[2Z..3Z) (the KL of each dim), d = mu_j(x) - shift_j. */
static int latent_sums(cuvae_backend *be, const cuvae_model *m, const cuvae_dataset *ds, const double *shift,
                       float *mulv, size_t chunk, double *s) {
  const size_t Z = m->latent, n = ds->n, D = ds->dim;
  int64_t k = 0;
  for (size_t start = 0; start < n; start += chunk, k++) {
    if (!cuvae_dp_owns(be->dp, k)) continue;
    const size_t B = n - start < chunk ? n - start : chunk;
    if (be->encode(be, ds->x + start * D, m->cond ? ds->labels + start : NULL, B, mulv)) return -1;
    for (size_t b = 0; b < B; b++) {
      const float *mu = mulv + b * 2 * Z, *lv = mu + Z;
      for (size_t j = 0; j < Z; j++) {
        const double d = (double)mu[j] - shift[j];
        s[j] += d;
        s[Z + j] += d * d;
        s[2 * Z + j] += 0.5 * ((double)mu[j] * mu[j] + exp((double)lv[j]) - 1.0 - lv[j]);  /* (3.1), one dim */
      }
    }
  }
  return 0;
}

/* (3.5): A = #{ j : Var_x(E_q[z_j | x]) > threshold },  E_q[z_j | x] = mu_j(x)  (Burda et al. 2016). The variance
 * comes from sums of d = mu_j(x) - mu_j(x_0) and d^2 in double: the shift by the first row's mean (encoded alone, so
 * every rank has it) keeps the two-sum formula Var = E[d^2] - E[d]^2 free of cancellation when the means sit far from
 * 0 with a small spread. Data parallel: the ranks encode their chunks and their sums are added in rank order. */
int cuvae_latent_stats(cuvae_backend *be, const cuvae_model *m, const cuvae_dataset *ds, double threshold,
                       int *active, double *kl_per_dim) {
  const size_t Z = m->latent, n = ds->n, D = ds->dim;
  if (n == 0) return cuvae_error("active units: the data set is empty");
  if (D != m->input_dim) return cuvae_error("active units: the data have %zu features, the model %zu", D, m->input_dim);
  const size_t chunk = n < CHUNK_ROWS ? n : CHUNK_ROWS;
  float *mulv = malloc(chunk * 2 * Z * sizeof(float));
  double *shift = malloc(Z * sizeof(double)), *s = calloc(3 * Z, sizeof(double));
  int rc = 0;
  if (!mulv || !shift || !s) rc = cuvae_error("out of memory for the latent statistics (Z = %zu)", Z);
  if (rc == 0) rc = be->encode(be, ds->x, m->cond ? ds->labels : NULL, 1, mulv);
  for (size_t j = 0; rc == 0 && j < Z; j++) shift[j] = mulv[j];
  if (rc == 0) rc = latent_sums(be, m, ds, shift, mulv, chunk, s);
  if (rc == 0 && be->dp) rc = be->dp->sum(be->dp->ctx, s, (int)(3 * Z));
  if (rc == 0) {
    *active = 0;
    for (size_t j = 0; j < Z; j++) {
      const double mean = s[j] / (double)n, var = s[Z + j] / (double)n - mean * mean;
      if (var > threshold) (*active)++;
      if (kl_per_dim) kl_per_dim[j] = s[2 * Z + j] / (double)n;
    }
  }
  free(mulv);
  free(shift);
  free(s);
  return rc;
}

int cuvae_active_units(cuvae_backend *be, const cuvae_model *m, const cuvae_dataset *ds, double threshold,
                       int *active) {
  return cuvae_latent_stats(be, m, ds, threshold, active, NULL);
}
