/* cuvae ppca --config CONFIG --latent Z [--method closed|em|both] [--out DIR | --checkpoint PATH] [--em-iters N]
 * [--em-tol T] [--set S.K=V]...: probabilistic PCA fitted by maximum likelihood (include/cuvae/ppca.h). */
#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "cuvae/config.h"
#include "cuvae/error.h"
#include "ppca_run.h"

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

static void json_fit(const char *name, const cuvae_ppca_fit_report *r, int em) {
  printf(", \"%s\": {\"train_loglik\": %.6f, \"test_loglik\": %.6f, \"test_nll\": %.6f, \"s2\": %.9g, "
         "\"seconds\": %.3f",
         name, r->train_loglik, r->test_loglik, -r->test_loglik, r->s2, r->seconds);
  if (em) printf(", \"iterations\": %d, \"converged\": %s", r->iterations, r->converged ? "true" : "false");
  printf("}");
}

/* The table on stderr and the JSON line on stdout of a finished run. */
static void report(const cuvae_ppca_run_opts *o, const cuvae_ppca_run_result *r, const char *config_path) {
  fprintf(stderr, "ppca: %zu train and %zu test points of D = %zu features, latent Z = %zu; covariance in %.2f s\n",
          r->n_train, r->n_test, r->features, o->latent, r->moments_seconds);
  fprintf(stderr, "%-7s %16s %16s %14s %10s %8s\n", "method", "train loglik", "test loglik", "s^2", "EM iters",
          "seconds");
  const cuvae_ppca_fit_report *fits[2] = {&r->closed, &r->em};
  for (int k = 0; k < 2; k++) {
    if (!fits[k]->ran) continue;
    char iters[32] = "-";
    if (k == 1) snprintf(iters, sizeof iters, "%d%s", fits[k]->iterations, fits[k]->converged ? "" : "*");
    fprintf(stderr, "%-7s %16.4f %16.4f %14.6g %10s %8.2f\n", k == 0 ? "closed" : "em", fits[k]->train_loglik,
            fits[k]->test_loglik, fits[k]->s2, iters, fits[k]->seconds);
  }
  if (r->em.ran && !r->em.converged)
    fprintf(stderr, "* EM stopped at --em-iters %d before the log-likelihood changed by less than %g\n", o->em_iters,
            o->em_tol);
  fprintf(stderr, "(log-likelihoods in nats per data point; the checkpoint holds the %s fit)\ncheckpoint: %s\n",
          o->closed ? "closed-form" : "EM", o->checkpoint);
  printf("{\"config\": ");
  cli_json_string(stdout, config_path);
  printf(", \"checkpoint\": ");
  cli_json_string(stdout, o->checkpoint);
  printf(", \"latent\": %zu, \"features\": %zu, \"n_train\": %zu, \"n_test\": %zu, \"moments_seconds\": %.3f",
         o->latent, r->features, r->n_train, r->n_test, r->moments_seconds);
  if (r->closed.ran) json_fit("closed", &r->closed, 0);
  if (r->em.ran) json_fit("em", &r->em, 1);
  printf("}\n");
}

/* The command line of ppca; the config itself is read by cmd_ppca. */
typedef struct ppca_args {
  cli_config_args config;
  const char *method, *out_dir, *ckpt;
  long latent, em_iters;
  double em_tol;
} ppca_args;

/* 0: parsed; 1: --help printed; CUVAE_EXIT_USAGE: a message was printed. */
static int parse_flag(int argc, char **argv, int *i, ppca_args *a) {
  int missing = 0;
  const char *v;
  if (strcmp(argv[*i], "-h") == 0 || strcmp(argv[*i], "--help") == 0) {
    help_ppca();
    return 1;
  } else if ((v = cli_flag_value(argc, argv, i, "--config", &missing))) {
    if (cli_add_config(&a->config, "ppca", v)) return CUVAE_EXIT_USAGE;
  } else if (!missing && (v = cli_flag_value(argc, argv, i, "--latent", &missing))) {
    if (parse_long(v, 1, 1L << 20, &a->latent)) {
      fprintf(stderr, "error: --latent '%s': expected a whole number Z >= 1 (and below the data's D)\n", v);
      return CUVAE_EXIT_USAGE;
    }
  } else if (!missing && (v = cli_flag_value(argc, argv, i, "--method", &missing))) {
    a->method = v;
  } else if (!missing && (v = cli_flag_value(argc, argv, i, "--out", &missing))) {
    a->out_dir = v;
  } else if (!missing && (v = cli_flag_value(argc, argv, i, "--checkpoint", &missing))) {
    a->ckpt = v;
  } else if (!missing && (v = cli_flag_value(argc, argv, i, "--em-iters", &missing))) {
    if (parse_long(v, 1, EM_ITERS_MAX, &a->em_iters)) {
      fprintf(stderr, "error: --em-iters '%s': expected a whole number from 1 to %d\n", v, EM_ITERS_MAX);
      return CUVAE_EXIT_USAGE;
    }
  } else if (!missing && (v = cli_flag_value(argc, argv, i, "--em-tol", &missing))) {
    char *end = NULL;
    errno = 0;
    a->em_tol = strtod(v, &end);
    if (errno || end == v || *end != '\0' || !(a->em_tol >= 0.0) || !isfinite(a->em_tol)) {
      fprintf(stderr, "error: --em-tol '%s': expected a number >= 0 (nats per data point)\n", v);
      return CUVAE_EXIT_USAGE;
    }
  } else if (!missing && (v = cli_flag_value(argc, argv, i, "--set", &missing))) {
    if (cli_add_set(&a->config, v)) return CUVAE_EXIT_USAGE;
  } else if (missing) {
    return CUVAE_EXIT_USAGE;
  } else if (argv[*i][0] == '-') {
    fprintf(stderr, "error: unknown option '%s' for ppca (see cuvae ppca --help)\n", argv[*i]);
    return CUVAE_EXIT_USAGE;
  } else if (cli_add_config(&a->config, "ppca", argv[*i])) {
    return CUVAE_EXIT_USAGE;
  }
  return 0;
}

/* Every flag, then the checks across them. */
static int parse_args(int argc, char **argv, ppca_args *a) {
  memset(a, 0, sizeof *a);
  a->method = "both";
  a->em_iters = EM_ITERS_DEFAULT;
  a->em_tol = EM_TOL_DEFAULT;
  for (int i = 1; i < argc; i++) {
    const int rc = parse_flag(argc, argv, &i, a);
    if (rc) return rc;
  }
  const char *problem = NULL;
  if (!a->config.path)
    problem = "ppca needs --config CONFIG (see cuvae ppca --help)";
  else if (a->latent == 0)
    problem = "ppca needs --latent Z (see cuvae ppca --help)";
  if (problem) {
    fprintf(stderr, "error: %s\n", problem);
    return CUVAE_EXIT_USAGE;
  }
  if (strcmp(a->method, "closed") && strcmp(a->method, "em") && strcmp(a->method, "both")) {
    fprintf(stderr, "error: --method '%s': expected closed, em or both\n", a->method);
    return CUVAE_EXIT_USAGE;
  }
  if (a->out_dir && a->ckpt) {
    fprintf(stderr, "error: --out %s and --checkpoint %s both name where the checkpoint goes; give one\n",
            a->out_dir, a->ckpt);
    return CUVAE_EXIT_USAGE;
  }
  return 0;
}

int cmd_ppca(int argc, char **argv) {
  ppca_args a;
  const int parsed = parse_args(argc, argv, &a);
  if (parsed) return parsed == 1 ? 0 : parsed;
  const char *config_path = a.config.path, *ckpt = a.ckpt, *out_dir = a.out_dir;
  const int do_closed = strcmp(a.method, "em") != 0, do_em = strcmp(a.method, "closed") != 0;
  cuvae_config user;
  const int loaded = cli_load_config(&user, &a.config);
  if (loaded) return loaded;

  char path[CUVAE_PATH_MAX + 32], dir[CUVAE_PATH_MAX];
  if (ckpt) {
    snprintf(path, sizeof path, "%s", ckpt);
  } else {
    if (out_dir)
      snprintf(dir, sizeof dir, "%s", out_dir);
    else
      cli_default_run_dir(config_path, dir, sizeof dir);
    snprintf(path, sizeof path, "%s/checkpoint.cuvae", dir);
  }
  em_progress prog = {isatty(fileno(stderr)), 0.0};
  const cuvae_ppca_run_opts opts = {&user, (size_t)a.latent, do_closed, do_em, (int)a.em_iters, a.em_tol,
                                    em_progress_cb, &prog, path, ckpt ? NULL : dir};
  cuvae_ppca_run_result res;
  const int rc = cuvae_ppca_run(&opts, &res);
  if (prog.tty && do_em) fprintf(stderr, "\n");
  if (rc != 0) {
    fprintf(stderr, "error: %s\n", cuvae_last_error());
    return rc == CUVAE_PPCA_LATENT_TOO_LARGE ? CUVAE_EXIT_USAGE : CUVAE_EXIT_FAIL;
  }
  report(&opts, &res, config_path);
  return 0;
}
