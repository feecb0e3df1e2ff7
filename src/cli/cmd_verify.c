/* cuvae verify CONFIG [--set S.K=V]... [--steps N]: the CUDA backend against the CPU reference on one config. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "flags.h"
#include "cuvae/error.h"
#include "cuvae/verify.h"

enum { STEPS_MAX = 100000, HELP_SHOWN = -1 };

void help_verify(void) {
  printf("usage: cuvae verify CONFIG [--set S.K=V]... [--steps N]\n\n"
         "Checks this machine's GPU against the CPU reference: builds CONFIG's model on the CPU backend and on the\n"
         "CUDA backend in one process, from the same initial parameters, and runs N training steps on each with the\n"
         "same batches and noise. Judged, each against a bound derived from the roundings in which the two differ\n"
         "(the GEMMs' summation order and, in tf32 or bf16, their operands' rounding; docs/ARCHITECTURE.md,\n"
         "\"cuvae verify\"):\n"
         "  - the test split's negative ELBO at the initial parameters;\n"
         "  - step 0's batch loss;\n"
         "  - step 0's gradient, every tensor.\n"
         "Steps 1.. are reported, not judged (the two sides' differences feed back through the parameters): the\n"
         "largest batch-loss difference and the final parameters' largest difference in units of the learning rate.\n"
         "The report goes to stderr; stdout gets one JSON line:\n"
         "  {\"config\": ..., \"precision\": ..., \"steps\": N, \"agree\": true|false, \"eval\": [diff, bound],\n"
         "   \"loss\": [diff, bound], \"grad\": [diff, bound], \"grad_worst\": TENSOR, \"drift_loss\": ...,\n"
         "   \"drift_params_lr\": ..., \"cpu_gemm\": ..., \"cuda_gemm\": ...}\n"
         "Exit status: 0 the backends agree, 1 they do not or one could not run (no CUDA device, a precision the\n"
         "CPU cannot run), 2 usage.\n\n"
         "options:\n"
         "  --set S.K=V  override config key K of section S (repeatable), as for cuvae train\n"
         "  --steps N    training steps on each backend (1 to %d; default 20)\n"
         "  -h, --help   this help\n",
         STEPS_MAX);
}

typedef struct verify_args {
  cli_config_args config;
  int steps;
} verify_args;

/* 0 to go on, HELP_SHOWN after --help, or CUVAE_EXIT_USAGE after a message. */
static int parse_verify_args(int argc, char **argv, verify_args *a) {
  const char *v;
  for (int i = 1; i < argc; i++) {
    int missing = 0;
    if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
      help_verify();
      return HELP_SHOWN;
    } else if ((v = cli_flag_value(argc, argv, &i, "--set", &missing))) {
      if (cli_add_set(&a->config, v)) return CUVAE_EXIT_USAGE;
    } else if (!missing && (v = cli_flag_value(argc, argv, &i, "--steps", &missing))) {
      if (cli_flag_int("--steps", v, 1, STEPS_MAX, &a->steps)) return CUVAE_EXIT_USAGE;
    } else if (missing) {
      return CUVAE_EXIT_USAGE;
    } else if (argv[i][0] == '-') {
      fprintf(stderr, "error: unknown option '%s' for verify (see cuvae verify --help)\n", argv[i]);
      return CUVAE_EXIT_USAGE;
    } else if (cli_add_config(&a->config, "verify", argv[i])) {
      return CUVAE_EXIT_USAGE;
    }
  }
  if (!a->config.path) {
    fprintf(stderr, "error: verify needs a CONFIG (see cuvae verify --help)\n");
    return CUVAE_EXIT_USAGE;
  }
  return 0;
}

static void print_json(const verify_args *a, const cuvae_config *cfg, const cuvae_verify_result *r) {
  printf("{\"config\": ");
  cli_json_string(stdout, a->config.path);
  printf(", \"precision\": \"%s\", \"steps\": %d, \"agree\": %s, \"eval\": [%.3g, %.3g], \"loss\": [%.3g, %.3g], "
         "\"grad\": [%.3g, %.3g], \"grad_worst\": ",
         cuvae_precision_name(cfg->precision), r->steps, r->agree ? "true" : "false", r->eval.diff, r->eval.bound,
         r->loss.diff, r->loss.bound, r->grad.diff, r->grad.bound);
  cli_json_string(stdout, r->grad.where);
  printf(", \"drift_loss\": %.3g, \"drift_params_lr\": %.3g, \"cpu_gemm\": ", r->drift_loss, r->drift_params);
  cli_json_string(stdout, r->cpu_gemm);
  printf(", \"cuda_gemm\": ");
  cli_json_string(stdout, r->cuda_gemm);
  printf("}\n");
}

int cmd_verify(int argc, char **argv) {
  verify_args a;
  memset(&a, 0, sizeof a);
  a.steps = 20;
  const int parsed = parse_verify_args(argc, argv, &a);
  if (parsed) return parsed == HELP_SHOWN ? 0 : parsed;
  cuvae_config cfg;
  const int loaded = cli_load_config(&cfg, &a.config);
  if (loaded) return loaded;
  cuvae_verify_opts opts = {.steps = a.steps, .log = stderr};
  cuvae_verify_result r;
  if (cuvae_verify(&cfg, &opts, &r)) {
    fprintf(stderr, "error: %s\n", cuvae_last_error());
    return CUVAE_EXIT_FAIL;
  }
  fprintf(stderr, "%s\n", r.agree ? "the CUDA backend agrees with the CPU reference within the bounds"
                                   : "the CUDA backend DIFFERS from the CPU reference beyond a bound (above)");
  print_json(&a, &cfg, &r);
  return r.agree ? 0 : CUVAE_EXIT_FAIL;
}
