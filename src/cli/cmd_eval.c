/* cuvae eval CHECKPOINT [--split test|train] [--iwae K] [--batch N] [--device D] [--precision P], also under mpirun */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cuvae/device.h"
#include "cuvae/dist.h"
#include "cuvae/error.h"
#include "cuvae/train.h"

#define IWAE_K_MAX 1000000
#define BATCH_MAX 1000000

void help_eval(void) {
  printf("usage: cuvae eval CHECKPOINT [--split test|train] [--iwae K] [--batch N] [--device auto|cpu|cuda]\n"
         "                  [--precision fp32|tf32|bf16]\n\n"
         "Evaluates the model in CHECKPOINT (a checkpoint file, or a run directory: its checkpoint.cuvae) on a\n"
         "data split named by its config and prints one JSON line:\n"
         "  {\"checkpoint\": ..., \"step\": N, \"split\": \"test\", \"test_nelbo\": ..., \"nelbo\": ..., \"recon\": ...,\n"
         "   \"kl\": ..., \"bits_per_dim\": ..., [\"dequantize\": \"uniform\",] [\"iwae_k\": K, \"iwae_nll\": ...,\n"
         "   \"iwae_bits_per_dim\": ...,] \"active_units\": A, \"kl_per_dim\": [...]}\n"
         "All in nats per data point unless named bits:\n"
         "  nelbo = recon + kl   the negative ELBO with one noise sample per point from the evaluation noise stream\n"
         "                       (deterministic); also under the key test_nelbo (train_nelbo with --split train)\n"
         "  bits_per_dim         nelbo / (D ln 2), D = features per data point: from the ELBO, so (up to sampling\n"
         "                       noise) an upper bound on the model's -log p(x) in bits per dimension\n"
         "  iwae_nll             (with --iwae K) mean of -log p(x), log p(x) estimated by importance sampling with\n"
         "                       K samples from q(z|x): logsumexp_k log w_k - log K (the IWAE bound: in expectation\n"
         "                       above the true -log p(x), tighter as K grows; K = 5000 is the usual report)\n"
         "  iwae_bits_per_dim    iwae_nll / (D ln 2)\n"
         "  active_units         latent dims whose posterior mean mu_j(x) varies over the split by more than 0.01\n"
         "                       (variance)\n"
         "  kl_per_dim           per latent dim, the mean of 0.5 (mu^2 + exp(logvar) - 1 - logvar); they sum to kl\n"
         "With [data] dequantize = uniform (8-bit data, Gaussian decoder) the line says \"dequantize\": \"uniform\", and\n"
         "recon includes D ln 256: nelbo and iwae_nll bound -log P(k) of the discrete data, in nats and (bits_per_dim)\n"
         "in bits per dimension as the literature reports them (docs/MATH.md (4.6), (4.7)).\n"
         "Under mpirun (mpirun -np N cuvae eval CHECKPOINT ...) the batches, IWAE passes and encoder chunks are shared\n"
         "round-robin over the ranks, each rank on its own GPU, and rank 0 prints the line: the same numbers as one\n"
         "process (the IWAE estimates bit for bit; the ELBO and KL sums up to the order of the ranks' additions).\n"
         "An autoencoder ([train] objective = ae) has no likelihood: its line is {\"checkpoint\", \"step\", \"split\",\n"
         "\"objective\": \"ae\", \"test_squared_error\": sum over features of (x - xhat)^2 per point, \"active_units\"}, and\n"
         "--iwae is refused.\n\n"
         "options:\n"
         "  --split S    test (default) or train: which split of the checkpoint's config\n"
         "  --iwae K     also estimate log p(x) with K importance samples per point (1 to %d); the cost is about K\n"
         "               decoder passes over the split; from 2 s on its progress is shown on stderr\n"
         "  --batch N    data rows per evaluation batch (1 to %d; default: the config's eval_batch_size, capped at\n"
         "               the larger of batch_size and eval_batch_size); the noise offsets follow it\n"
         "  --device D   auto (default), cpu or cuda\n"
         "  --precision P  fp32, tf32 or bf16: the GEMMs' precision (default: the checkpoint config's [train]\n"
         "               precision; checkpoints hold fp32 parameters, so any precision evaluates any checkpoint)\n"
         "  -h, --help   this help\n",
         IWAE_K_MAX, BATCH_MAX);
}

/* A whole decimal integer in [lo, hi], else -1. */
static int parse_int(const char *s, long lo, long hi, int *out) {
  char *end = NULL;
  errno = 0;
  const long v = strtol(s, &end, 10);
  if (errno || end == s || *end != '\0' || v < lo || v > hi) return -1;
  *out = (int)v;
  return 0;
}

/* 1 (with the message) when v names no precision. */
static int bad_precision(const char *v) {
  int p;
  if (cuvae_precision_parse(v, &p) == 0) return 0;
  fprintf(stderr, "error: --precision '%s': expected fp32, tf32 or bf16\n", v);
  return 1;
}

/* The result as one JSON line on stdout (help_eval says what each key holds). */
static void print_result(const char *path, const char *split, const cuvae_eval_result *r) {
  const double bits = 1.0 / ((double)r->input_dim * log(2.0));  /* nats per point -> bits per dimension */
  printf("{\"checkpoint\": ");
  cli_json_string(stdout, path);
  if (r->objective == CUVAE_OBJ_AE) {  /* an autoencoder: its squared error; no likelihood, no KL */
    printf(", \"step\": %" PRId64 ", \"split\": \"%s\", \"objective\": \"ae\", \"%s_squared_error\": %.6f, "
           "\"active_units\": %d}\n",
           r->step, split, split, r->elbo.recon, r->active_units);
    return;
  }
  printf(", \"step\": %" PRId64 ", \"split\": \"%s\", \"%s_nelbo\": %.6f, \"nelbo\": %.6f, \"recon\": %.6f, "
         "\"kl\": %.6f, \"bits_per_dim\": %.6f",
         r->step, split, split, r->elbo.nelbo, r->elbo.nelbo, r->elbo.recon, r->elbo.kl, r->elbo.nelbo * bits);
  if (r->dequantized) printf(", \"dequantize\": \"uniform\"");
  if (r->iwae_k > 0)
    printf(", \"iwae_k\": %d, \"iwae_nll\": %.6f, \"iwae_bits_per_dim\": %.6f", r->iwae_k, r->iwae_nll,
           r->iwae_nll * bits);
  printf(", \"active_units\": %d, \"kl_per_dim\": [", r->active_units);
  for (size_t j = 0; j < r->latent; j++) printf("%s%.6f", j ? ", " : "", r->kl_per_dim[j]);
  printf("]}\n");
}

int cmd_eval(int argc, char **argv) {
  const char *path = NULL, *device = "auto", *split = "test", *precision = NULL, *v;
  int iwae_k = 0, batch = 0;
  for (int i = 1; i < argc; i++) {
    int missing = 0;
    if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
      help_eval();
      return 0;
    } else if ((v = cli_flag_value(argc, argv, &i, "--device", &missing))) {
      device = v;
    } else if ((v = cli_flag_value(argc, argv, &i, "--precision", &missing))) {
      if (bad_precision(v)) return CUVAE_EXIT_USAGE;
      precision = v;
    } else if ((v = cli_flag_value(argc, argv, &i, "--split", &missing))) {
      split = v;
    } else if ((v = cli_flag_value(argc, argv, &i, "--iwae", &missing))) {
      if (parse_int(v, 1, IWAE_K_MAX, &iwae_k)) {
        fprintf(stderr, "error: --iwae '%s': expected a whole number of samples K from 1 to %d\n", v, IWAE_K_MAX);
        return CUVAE_EXIT_USAGE;
      }
    } else if ((v = cli_flag_value(argc, argv, &i, "--batch", &missing))) {
      if (parse_int(v, 1, BATCH_MAX, &batch)) {
        fprintf(stderr, "error: --batch '%s': expected a whole number of rows from 1 to %d\n", v, BATCH_MAX);
        return CUVAE_EXIT_USAGE;
      }
    } else if (missing) {
      return CUVAE_EXIT_USAGE;
    } else if (argv[i][0] == '-') {
      fprintf(stderr, "error: unknown option '%s' for eval (see cuvae eval --help)\n", argv[i]);
      return CUVAE_EXIT_USAGE;
    } else if (path) {
      fprintf(stderr, "error: eval takes one CHECKPOINT, got '%s' and '%s'\n", path, argv[i]);
      return CUVAE_EXIT_USAGE;
    } else {
      path = argv[i];
    }
  }
  if (!path) {
    fprintf(stderr, "error: eval needs a CHECKPOINT (see cuvae eval --help)\n");
    return CUVAE_EXIT_USAGE;
  }
  if (cuvae_device_check(device)) {
    fprintf(stderr, "error: %s\n", cuvae_last_error());
    return CUVAE_EXIT_USAGE;
  }
  if (strcmp(split, "test") && strcmp(split, "train")) {
    fprintf(stderr, "error: --split '%s': expected test or train\n", split);
    return CUVAE_EXIT_USAGE;
  }
  const cuvae_eval_opts opts = {
      .device = device, .split = split, .iwae_k = iwae_k, .batch = batch, .precision = precision};
  cuvae_eval_result r;
  const int rank = cuvae_dist_rank(), ranks = cuvae_dist_size();
  if (cuvae_eval(path, &opts, &r)) {
    if (ranks == 1)
      fprintf(stderr, "error: %s\n", cuvae_last_error());
    else if (strcmp(cuvae_last_error(), CUVAE_DIST_OTHER_RANK_FAILED) != 0)
      fprintf(stderr, "error (rank %d of %d): %s\n", rank, ranks, cuvae_last_error());
    if (ranks > 1 && !r.failure_agreed) cuvae_dist_abort(CUVAE_EXIT_FAIL);  /* the others may wait in a pass */
    return CUVAE_EXIT_FAIL;
  }
  if (rank != 0) {  /* rank 0 reports */
    cuvae_eval_result_free(&r);
    return 0;
  }
  print_result(path, split, &r);
  cuvae_eval_result_free(&r);
  return 0;
}
