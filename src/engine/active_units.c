/* Active units and the KL per latent dimension of a data set (docs/MATH.md (3.5)), from a backend's encode op, so
 * they run on whichever backend holds the parameters (the trainer's, or an evaluation's). */
#include "active_units.h"

#include <math.h>
#include <stdlib.h>

#include "cuvae/error.h"

enum { CHUNK_ROWS = 1024 };  /* rows encoded per call: bounds the host buffer at CHUNK_ROWS x 2Z floats */

/* (3.5): A = #{ j : Var_x(E_q[z_j | x]) > threshold },  E_q[z_j | x] = mu_j(x)  (Burda et al. 2016). The variance
 * comes from sums of d = mu_j(x) - mu_j(x_0) and d^2 in double: the shift by the first row's mean keeps the two-sum
 * formula Var = E[d^2] - E[d]^2 free of cancellation when the means sit far from 0 with a small spread. */
int cuvae_latent_stats(cuvae_backend *be, const cuvae_model *m, const cuvae_dataset *ds, double threshold,
                       int *active, double *kl_per_dim) {
  const size_t Z = m->latent, n = ds->n, D = ds->dim;
  if (n == 0) return cuvae_error("active units: the data set is empty");
  if (D != m->input_dim) return cuvae_error("active units: the data have %zu features, the model %zu", D, m->input_dim);
  const size_t chunk = n < CHUNK_ROWS ? n : CHUNK_ROWS;
  float *mulv = malloc(chunk * 2 * Z * sizeof(float));
  double *shift = malloc(Z * sizeof(double)), *s1 = calloc(Z, sizeof(double)), *s2 = calloc(Z, sizeof(double));
  double *kl = calloc(Z, sizeof(double));
  int rc = 0;
  if (!mulv || !shift || !s1 || !s2 || !kl) rc = cuvae_error("out of memory for the latent statistics (Z = %zu)", Z);
  for (size_t start = 0; rc == 0 && start < n; start += chunk) {
    const size_t B = n - start < chunk ? n - start : chunk;
    rc = be->encode(be, ds->x + start * D, m->cond ? ds->labels + start : NULL, B, mulv);
    for (size_t b = 0; rc == 0 && b < B; b++) {
      const float *mu = mulv + b * 2 * Z, *lv = mu + Z;
      for (size_t j = 0; j < Z; j++) {
        if (start == 0 && b == 0) shift[j] = mu[j];
        const double d = (double)mu[j] - shift[j];
        s1[j] += d;
        s2[j] += d * d;
        kl[j] += 0.5 * ((double)mu[j] * mu[j] + exp((double)lv[j]) - 1.0 - lv[j]);  /* (3.1), one dim */
      }
    }
  }
  if (rc == 0) {
    *active = 0;
    for (size_t j = 0; j < Z; j++) {
      const double mean = s1[j] / (double)n, var = s2[j] / (double)n - mean * mean;
      if (var > threshold) (*active)++;
      if (kl_per_dim) kl_per_dim[j] = kl[j] / (double)n;
    }
  }
  free(mulv);
  free(shift);
  free(s1);
  free(s2);
  free(kl);
  return rc;
}

int cuvae_active_units(cuvae_backend *be, const cuvae_model *m, const cuvae_dataset *ds, double threshold,
                       int *active) {
  return cuvae_latent_stats(be, m, ds, threshold, active, NULL);
}
