/* The pPCA pipeline of `cuvae ppca` (see ppca_run.h): data, moments, fits, exact log-likelihoods, checkpoint. */
#include "ppca_run.h"

#include <cblas.h>
#include <string.h>
#include <time.h>

#include "cuvae/data.h"
#include "cuvae/error.h"
#include "cuvae/ppca.h"
#include "inference.h"
#include "data_split.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* One fit (closed form, or EM) timed, and its exact log-likelihood on the test split. */
static int fit_one(const cuvae_ppca_run_opts *o, const cuvae_ppca_moments *mo, int em, const cuvae_dataset *test,
                   cuvae_ppca *fit, cuvae_ppca_fit_report *rep) {
  const double t0 = now_s();
  int rc;
  if (em) {
    const cuvae_ppca_em_opts eo = {o->em_iters, o->em_tol, o->user->seed, o->em_progress, o->em_ctx};
    rc = cuvae_ppca_fit_em(mo, o->latent, &eo, fit);
  } else {
    rc = cuvae_ppca_fit_closed(mo, o->latent, fit);
  }
  rep->seconds = now_s() - t0;
  if (rc == 0) rc = cuvae_ppca_loglik(fit, test->x, test->n, NULL, &rep->test_loglik);
  rep->ran = rc == 0;
  rep->train_loglik = fit->train_loglik;
  rep->s2 = fit->s2;
  rep->iterations = fit->iterations;
  rep->converged = fit->converged;
  return rc;
}

int cuvae_ppca_run(const cuvae_ppca_run_opts *o, cuvae_ppca_run_result *out) {
  memset(out, 0, sizeof *out);
  cuvae_config cfg;  /* The data are loaded as the Gaussian model's config names them (no [0, 1] check, no binarization). */
  if (cuvae_ppca_config(o->user, o->latent, 1.0, &cfg)) return -1;
  if (cfg.threads > 0) openblas_set_num_threads(cfg.threads);
  cuvae_dataset train, test;
  memset(&train, 0, sizeof train);
  memset(&test, 0, sizeof test);
  cuvae_ppca_moments mo;
  memset(&mo, 0, sizeof mo);
  cuvae_ppca fits[2];
  memset(fits, 0, sizeof fits);
  int rc = cuvae_load_split(&cfg, CUVAE_SPLIT_TRAIN, &train);
  if (rc == 0) rc = cuvae_load_split(&cfg, CUVAE_SPLIT_TEST, &test);
  if (rc == 0 && test.dim != train.dim)
    rc = cuvae_error("the train data have %zu features, the test data %zu", train.dim, test.dim);
  if (rc == 0 && o->latent >= train.dim) {
    cuvae_error("--latent %zu: must be below the data's D = %zu features", o->latent, train.dim);
    rc = CUVAE_PPCA_LATENT_TOO_LARGE;
  }
  out->features = train.dim;
  out->n_train = train.n;
  out->n_test = test.n;
  const double t0 = now_s();
  if (rc == 0) rc = cuvae_ppca_moments_compute(&mo, train.x, train.n, train.dim);
  out->moments_seconds = now_s() - t0;
  if (rc == 0 && o->closed) rc = fit_one(o, &mo, 0, &test, &fits[0], &out->closed);
  if (rc == 0 && o->em) rc = fit_one(o, &mo, 1, &test, &fits[1], &out->em);
  if (rc == 0 && o->make_dir) rc = cuvae_make_dirs(o->make_dir);
  if (rc == 0) rc = cuvae_ppca_save_checkpoint(o->closed ? &fits[0] : &fits[1], o->user, o->checkpoint);
  cuvae_ppca_free(&fits[0]);
  cuvae_ppca_free(&fits[1]);
  cuvae_ppca_moments_free(&mo);
  cuvae_dataset_free(&train);
  cuvae_dataset_free(&test);
  return rc;
}
