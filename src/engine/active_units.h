/* Active units and the KL per latent dimension of a data set (docs/MATH.md (3.5)), from any backend's encoder.
 * Private to src/ and the CLI. */
#ifndef CUVAE_ACTIVE_UNITS_H
#define CUVAE_ACTIVE_UNITS_H
#include "backend.h"
#include "cuvae/data.h"
#include "cuvae/model.h"
#ifdef __cplusplus
extern "C" {
#endif

/* The threshold of Burda et al. 2016 on the variance of a latent dim's posterior mean. */
#define CUVAE_ACTIVE_UNITS_THRESHOLD 0.01

/* Over the n >= 1 rows of ds (labels read for a conditional model), through be->encode with the backend's current
 * parameters (m: be's model):
 *   *active = #{ j : Var_x mu_j(x) > threshold }   (the variance over the rows, divided by n, in double);
 *   kl_per_dim[j] = (1/n) sum_x 0.5 (mu_j^2 + exp(lv_j) - 1 - lv_j)   (NULL: not computed; the dims' sum is the KL).
 * The rows go through the encoder in chunks (the results do not depend on them). With be->dp (several ranks) the
 * chunks are shared round-robin over the ranks and every rank gets the same results (a collective: every rank calls
 * it). -1 with a message. */
int cuvae_latent_stats(cuvae_backend *be, const cuvae_model *m, const cuvae_dataset *ds, double threshold,
                       int *active, double *kl_per_dim);
/* The number of active units alone: cuvae_latent_stats without kl_per_dim. */
int cuvae_active_units(cuvae_backend *be, const cuvae_model *m, const cuvae_dataset *ds, double threshold,
                       int *active);

#ifdef __cplusplus
}
#endif
#endif
