/* cuvae ppca --config CONFIG --latent Z [--method closed|em|both] [--out DIR | --checkpoint PATH] [--em-iters N]
 * [--em-tol T] [--set S.K=V]...: probabilistic PCA fitted by maximum likelihood (include/cuvae/ppca.h). */
#include <cblas.h>
#include <errno.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "cuvae/config.h"
#include "cuvae/error.h"
#include "cuvae/ppca.h"
#include "train_internal.h"

#define MAX_SETS 256
#define EM_ITERS_DEFAULT 5000
#define EM_ITERS_MAX 100000000
#define EM_TOL_DEFAULT 1e-5

void help_ppca(void) {
  printf("usage: cuvae ppca --config CONFIG --latent Z [options]\n\n"
         "Fits probabilistic PCA, x = W z + b + e, z ~ N(0, I_Z), e ~ N(0, s^2 I) (docs/MATH.md section 6), to the\n"
         "train split of CONFIG's data by maximum likelihood, in closed form (eigendecomposition of the sample\n"
         "covariance, Tipping & Bishop) and/or by EM, and reports the EXACT log-likelihood log N(x; b, W W^T + s^2 I)\n"
         "per data point (nats) on the train and test splits. A table goes to stderr (with EM's progress); stdout\n"
         "gets one JSON line:\n"
         "  {\"config\": ..., \"checkpoint\": ..., \"latent\": Z, \"features\": D, \"n_train\": N, \"n_test\": N,\n"
         "   \"moments_seconds\": t, \"closed\": {\"train_loglik\": ..., \"test_loglik\": ..., \"test_nll\": ...,\n"
         "   \"s2\": ..., \"seconds\": t}, \"em\": {... as closed ..., \"iterations\": n, \"converged\": true}}\n"
         "It writes a cuvae checkpoint of the fit (the closed form's; EM's with --method em): a model with no hidden\n"
         "layers, decoder = linear, likelihood = gaussian, gaussian_variance = learned_shared (dec.logvar = log s^2)\n"
         "and the encoder set to the exact posterior q(z|x) = p(z|x), so `cuvae eval` on it gives nelbo = -log p(x)\n"
         "up to sampling noise and iwae_nll = -log p(x). Its config keeps CONFIG's [data] and [train] keys.\n\n"
         "options:\n"
         "  --config CONFIG   the INI config naming the data (also accepted as the one positional argument)\n"
         "  --latent Z        latent dimension, 1 to D - 1 (required)\n"
         "  --method M        closed, em, or both (default)\n"
         "  --out DIR         write DIR/checkpoint.cuvae (default: runs/<config name>, numbered if taken)\n"
         "  --checkpoint P    write the checkpoint to the file P instead\n"
         "  --em-iters N      at most N EM iterations (default %d)\n"
         "  --em-tol T        stop EM when the train log-likelihood per point changes by less than T nats\n"
         "                    (default %g); EM starts from a random W drawn with [train] seed\n"
         "  --set S.K=V       override config key K of section S (repeatable)\n"
         "  -h, --help        this help\n\n"
         "example:\n"
         "  cuvae ppca --config configs/ppca.ini --latent 20 --out runs/ppca-z20\n",
         EM_ITERS_DEFAULT, EM_TOL_DEFAULT);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int parse_long(const char *s, long lo, long hi, long *out) {
  char *end = NULL;
  errno = 0;
  const long v = strtol(s, &end, 10);
  if (errno || end == s || *end != '\0' || v < lo || v > hi) return -1;
  *out = v;
  return 0;
}

/* runs/<config file name without .ini>, with -2, -3, ... appended when taken (as cuvae train does). */
static void default_run_dir(const char *config_path, char *out, size_t n) {
  char tmp[CUVAE_PATH_MAX];
  struct stat st;
  if (snprintf(tmp, sizeof tmp, "%s", config_path) >= (int)sizeof tmp) tmp[0] = '\0';
  char *stem = basename(tmp);
  char *dot = strrchr(stem, '.');
  if (dot && dot != stem) *dot = '\0';
  if (snprintf(out, n, "runs/%s", stem) >= (int)n) return;
  for (int k = 2; stat(out, &st) == 0 && k < 10000; k++)
    if (snprintf(out, n, "runs/%s-%d", stem, k) >= (int)n) return;
}

/* EM progress on stderr: a live line on a terminal (at most 10 refreshes a second), else a line every 100
 * iterations. */
typedef struct em_progress {
  int tty;
  double last;
} em_progress;

static void em_progress_cb(void *ctx, int iter, double ll, double change) {
  em_progress *p = ctx;
  if (p->tty) {
    const double t = now_s();
    if (t - p->last < 0.1 && iter > 0) return;
    p->last = t;
    fprintf(stderr, "\rEM iteration %6d  train log-likelihood %.6f  change %-12.3g", iter, ll, change);
  } else if (iter % 100 == 0) {
    fprintf(stderr, "EM iteration %d: train log-likelihood %.6f, change %.3g\n", iter, ll, change);
  }
  fflush(stderr);
}

typedef struct fit_result {
  int ran;
  double train_ll, test_ll, s2, seconds;
  int iterations, converged;
} fit_result;

static void json_fit(const char *name, const fit_result *r, int em) {
  printf(", \"%s\": {\"train_loglik\": %.6f, \"test_loglik\": %.6f, \"test_nll\": %.6f, \"s2\": %.9g, "
         "\"seconds\": %.3f",
         name, r->train_ll, r->test_ll, -r->test_ll, r->s2, r->seconds);
  if (em) printf(", \"iterations\": %d, \"converged\": %s", r->iterations, r->converged ? "true" : "false");
  printf("}");
}

int cmd_ppca(int argc, char **argv) {
  const char *config_path = NULL, *method = "both", *out_dir = NULL, *ckpt = NULL, *v;
  const char *sets[MAX_SETS];
  int n_sets = 0;
  long latent = 0, em_iters = EM_ITERS_DEFAULT;
  double em_tol = EM_TOL_DEFAULT;
  for (int i = 1; i < argc; i++) {
    int missing = 0;
    if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
      help_ppca();
      return 0;
    } else if ((v = cli_flag_value(argc, argv, &i, "--config", &missing))) {
      if (config_path) {
        fprintf(stderr, "error: ppca takes one CONFIG, got '%s' and '%s'\n", config_path, v);
        return CUVAE_EXIT_USAGE;
      }
      config_path = v;
    } else if (!missing && (v = cli_flag_value(argc, argv, &i, "--latent", &missing))) {
      if (parse_long(v, 1, 1L << 20, &latent)) {
        fprintf(stderr, "error: --latent '%s': expected a whole number Z >= 1 (and below the data's D)\n", v);
        return CUVAE_EXIT_USAGE;
      }
    } else if (!missing && (v = cli_flag_value(argc, argv, &i, "--method", &missing))) {
      method = v;
    } else if (!missing && (v = cli_flag_value(argc, argv, &i, "--out", &missing))) {
      out_dir = v;
    } else if (!missing && (v = cli_flag_value(argc, argv, &i, "--checkpoint", &missing))) {
      ckpt = v;
    } else if (!missing && (v = cli_flag_value(argc, argv, &i, "--em-iters", &missing))) {
      if (parse_long(v, 1, EM_ITERS_MAX, &em_iters)) {
        fprintf(stderr, "error: --em-iters '%s': expected a whole number from 1 to %d\n", v, EM_ITERS_MAX);
        return CUVAE_EXIT_USAGE;
      }
    } else if (!missing && (v = cli_flag_value(argc, argv, &i, "--em-tol", &missing))) {
      char *end = NULL;
      errno = 0;
      em_tol = strtod(v, &end);
      if (errno || end == v || *end != '\0' || !(em_tol >= 0.0) || !isfinite(em_tol)) {
        fprintf(stderr, "error: --em-tol '%s': expected a number >= 0 (nats per data point)\n", v);
        return CUVAE_EXIT_USAGE;
      }
    } else if (!missing && (v = cli_flag_value(argc, argv, &i, "--set", &missing))) {
      if (n_sets == MAX_SETS) {
        fprintf(stderr, "error: more than %d --set overrides\n", MAX_SETS);
        return CUVAE_EXIT_USAGE;
      }
      sets[n_sets++] = v;
    } else if (missing) {
      return CUVAE_EXIT_USAGE;
    } else if (argv[i][0] == '-') {
      fprintf(stderr, "error: unknown option '%s' for ppca (see cuvae ppca --help)\n", argv[i]);
      return CUVAE_EXIT_USAGE;
    } else if (config_path) {
      fprintf(stderr, "error: ppca takes one CONFIG, got '%s' and '%s'\n", config_path, argv[i]);
      return CUVAE_EXIT_USAGE;
    } else {
      config_path = argv[i];
    }
  }
  if (!config_path) {
    fprintf(stderr, "error: ppca needs --config CONFIG (see cuvae ppca --help)\n");
    return CUVAE_EXIT_USAGE;
  }
  if (latent == 0) {
    fprintf(stderr, "error: ppca needs --latent Z (see cuvae ppca --help)\n");
    return CUVAE_EXIT_USAGE;
  }
  const int do_closed = strcmp(method, "closed") == 0 || strcmp(method, "both") == 0;
  const int do_em = strcmp(method, "em") == 0 || strcmp(method, "both") == 0;
  if (!do_closed && !do_em) {
    fprintf(stderr, "error: --method '%s': expected closed, em or both\n", method);
    return CUVAE_EXIT_USAGE;
  }
  if (out_dir && ckpt) {
    fprintf(stderr, "error: --out %s and --checkpoint %s both name where the checkpoint goes; give one\n", out_dir,
            ckpt);
    return CUVAE_EXIT_USAGE;
  }

  cuvae_config user, cfg;
  cuvae_config_defaults(&user);
  if (cuvae_config_load_file(&user, config_path)) {
    fprintf(stderr, "error: %s\n", cuvae_last_error());
    return CUVAE_EXIT_FAIL;
  }
  for (int i = 0; i < n_sets; i++)
    if (cuvae_config_set(&user, sets[i])) {
      fprintf(stderr, "error: %s\n", cuvae_last_error());
      return CUVAE_EXIT_USAGE;
    }
  /* The data are loaded as the Gaussian model's config names them (no [0, 1] check, no binarization). */
  if (cuvae_config_finalize(&user) || cuvae_ppca_config(&user, (size_t)latent, 1.0, &cfg)) {
    fprintf(stderr, "error: %s: %s\n", config_path, cuvae_last_error());
    return CUVAE_EXIT_FAIL;
  }
  if (cfg.threads > 0) openblas_set_num_threads(cfg.threads);

  char path[CUVAE_PATH_MAX + 32], dir[CUVAE_PATH_MAX];
  if (ckpt) {
    snprintf(path, sizeof path, "%s", ckpt);
  } else {
    if (out_dir)
      snprintf(dir, sizeof dir, "%s", out_dir);
    else
      default_run_dir(config_path, dir, sizeof dir);
    snprintf(path, sizeof path, "%s/checkpoint.cuvae", dir);
  }

  cuvae_dataset train, test;
  memset(&train, 0, sizeof train);
  memset(&test, 0, sizeof test);
  cuvae_ppca_moments mo;
  memset(&mo, 0, sizeof mo);
  cuvae_ppca fits[2];
  memset(fits, 0, sizeof fits);
  fit_result res[2];
  memset(res, 0, sizeof res);
  int rc = cuvae_load_split(&cfg, 0, &train);
  if (rc == 0) rc = cuvae_load_split(&cfg, 1, &test);
  if (rc == 0 && test.dim != train.dim)
    rc = cuvae_error("the train data have %zu features, the test data %zu", train.dim, test.dim);
  if (rc == 0 && (size_t)latent >= train.dim) {
    fprintf(stderr, "error: --latent %ld: must be below the data's D = %zu features\n", latent, train.dim);
    cuvae_dataset_free(&train);
    cuvae_dataset_free(&test);
    return CUVAE_EXIT_USAGE;
  }
  double t0 = now_s();
  if (rc == 0) rc = cuvae_ppca_moments_compute(&mo, train.x, train.n, train.dim);
  const double t_moments = now_s() - t0;
  if (rc == 0)
    fprintf(stderr, "ppca: %zu train and %zu test points of D = %zu features, latent Z = %ld; covariance in %.2f s\n",
            train.n, test.n, train.dim, latent, t_moments);
  for (int k = 0; k < 2 && rc == 0; k++) {
    if (!(k == 0 ? do_closed : do_em)) continue;
    t0 = now_s();
    if (k == 0) {
      rc = cuvae_ppca_fit_closed(&mo, (size_t)latent, &fits[0]);
    } else {
      em_progress prog = {isatty(fileno(stderr)), 0.0};
      const cuvae_ppca_em_opts opts = {(int)em_iters, em_tol, cfg.seed, em_progress_cb, &prog};
      rc = cuvae_ppca_fit_em(&mo, (size_t)latent, &opts, &fits[1]);
      if (prog.tty) fprintf(stderr, "\n");
    }
    res[k].seconds = now_s() - t0;
    if (rc == 0) rc = cuvae_ppca_loglik(&fits[k], test.x, test.n, NULL, &res[k].test_ll);
    res[k].ran = rc == 0;
    res[k].train_ll = fits[k].train_loglik;
    res[k].s2 = fits[k].s2;
    res[k].iterations = fits[k].iterations;
    res[k].converged = fits[k].converged;
  }
  const cuvae_ppca *best = do_closed ? &fits[0] : &fits[1];
  if (rc == 0 && !ckpt) rc = cuvae_make_dirs(dir);
  if (rc == 0) rc = cuvae_ppca_save_checkpoint(best, &user, path);
  if (rc == 0) {
    fprintf(stderr, "%-7s %16s %16s %14s %10s %8s\n", "method", "train loglik", "test loglik", "s^2", "EM iters",
            "seconds");
    for (int k = 0; k < 2; k++) {
      if (!res[k].ran) continue;
      char iters[32] = "-";
      if (k == 1) snprintf(iters, sizeof iters, "%d%s", res[k].iterations, res[k].converged ? "" : "*");
      fprintf(stderr, "%-7s %16.4f %16.4f %14.6g %10s %8.2f\n", k == 0 ? "closed" : "em", res[k].train_ll,
              res[k].test_ll, res[k].s2, iters, res[k].seconds);
    }
    if (res[1].ran && !res[1].converged)
      fprintf(stderr, "* EM stopped at --em-iters %ld before the log-likelihood changed by less than %g\n", em_iters,
              em_tol);
    fprintf(stderr, "(log-likelihoods in nats per data point; the checkpoint holds the %s fit)\ncheckpoint: %s\n",
            do_closed ? "closed-form" : "EM", path);
    printf("{\"config\": ");
    cli_json_string(stdout, config_path);
    printf(", \"checkpoint\": ");
    cli_json_string(stdout, path);
    printf(", \"latent\": %ld, \"features\": %zu, \"n_train\": %zu, \"n_test\": %zu, \"moments_seconds\": %.3f", latent,
           train.dim, train.n, test.n, t_moments);
    if (res[0].ran) json_fit("closed", &res[0], 0);
    if (res[1].ran) json_fit("em", &res[1], 1);
    printf("}\n");
  } else {
    fprintf(stderr, "error: %s\n", cuvae_last_error());
  }
  cuvae_ppca_free(&fits[0]);
  cuvae_ppca_free(&fits[1]);
  cuvae_ppca_moments_free(&mo);
  cuvae_dataset_free(&train);
  cuvae_dataset_free(&test);
  return rc == 0 ? 0 : CUVAE_EXIT_FAIL;
}
