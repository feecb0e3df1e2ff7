/* cuvae eval CHECKPOINT */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "cuvae/error.h"
#include "cuvae/train.h"

void help_eval(void) {
  printf("usage: cuvae eval CHECKPOINT [--device auto|cpu|cuda]\n\n"
         "Evaluates the model in CHECKPOINT on the test split named by its config and prints one JSON line:\n"
         "  {\"checkpoint\": ..., \"step\": N, \"test_nelbo\": ..., \"recon\": ..., \"kl\": ...}\n"
         "All in nats per data point: test_nelbo = recon + kl, the negative ELBO with one noise sample per\n"
         "point from the evaluation noise stream (deterministic).\n\n"
         "options:\n"
         "  --device D   auto (default), cpu or cuda\n"
         "  -h, --help   this help\n");
}

int cmd_eval(int argc, char **argv) {
  const char *path = NULL, *device = "auto", *v;
  for (int i = 1; i < argc; i++) {
    int missing = 0;
    if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
      help_eval();
      return 0;
    } else if ((v = cli_flag_value(argc, argv, &i, "--device", &missing))) {
      device = v;
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
  if (strcmp(device, "auto") && strcmp(device, "cpu") && strcmp(device, "cuda")) {
    fprintf(stderr, "error: --device '%s': expected auto, cpu or cuda\n", device);
    return CUVAE_EXIT_USAGE;
  }
  cuvae_loss loss;
  int64_t step = 0;
  if (cuvae_eval_checkpoint(path, device, &loss, &step)) {
    fprintf(stderr, "error: %s\n", cuvae_last_error());
    return CUVAE_EXIT_FAIL;
  }
  printf("{\"checkpoint\": ");
  cli_json_string(stdout, path);
  printf(", \"step\": %" PRId64 ", \"test_nelbo\": %.6f, \"recon\": %.6f, \"kl\": %.6f}\n", step, loss.nelbo,
         loss.recon, loss.kl);
  return 0;
}
