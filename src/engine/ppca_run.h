/* The pPCA pipeline of `cuvae ppca`: load the config's splits, the moments, the closed-form and/or EM fits, their
 * exact log-likelihoods and the checkpoint of the chosen fit. Private to src/ and the CLI, which parses and prints. */
#ifndef CUVAE_PPCA_RUN_H
#define CUVAE_PPCA_RUN_H
#include <stddef.h>

#include "cuvae/config.h"
#ifdef __cplusplus
extern "C" {
#endif

typedef struct cuvae_ppca_run_opts {
  const cuvae_config *user;   /* the user's config, finalized: its [data] names the splits, [train] seed EM's start */
  size_t latent;              /* Z, 1 <= Z < D */
  int closed, em;             /* which fits to run (at least one); the checkpoint holds the closed form's if run */
  int em_iters;
  double em_tol;
  void (*em_progress)(void *ctx, int iter, double loglik, double change);  /* optional, after each EM iteration */
  void *em_ctx;
  const char *checkpoint;     /* where the checkpoint goes */
  const char *make_dir;       /* created (mkdir -p) before it is written; NULL: none */
} cuvae_ppca_run_opts;

typedef struct cuvae_ppca_fit_report {
  int ran;
  double train_loglik, test_loglik, s2, seconds;  /* log-likelihoods: nats per data point */
  int iterations, converged;                      /* EM */
} cuvae_ppca_fit_report;

typedef struct cuvae_ppca_run_result {
  size_t features, n_train, n_test;
  double moments_seconds;
  cuvae_ppca_fit_report closed, em;
} cuvae_ppca_run_result;

/* Returns 0; -1 on failure; CUVAE_PPCA_LATENT_TOO_LARGE when Z >= D of the data (a usage error). One message in
 * cuvae_last_error either way. */
#define CUVAE_PPCA_LATENT_TOO_LARGE (-2)
int cuvae_ppca_run(const cuvae_ppca_run_opts *opts, cuvae_ppca_run_result *out);

#ifdef __cplusplus
}
#endif
#endif
