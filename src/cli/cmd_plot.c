/* cuvae plot RUN_DIR [--out FILE.png]: the curves of a training run as one PNG (include/cuvae/plot.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cuvae/error.h"
#include "cuvae/plot.h"

void help_plot(void) {
  printf("usage: cuvae plot RUN_DIR [--out FILE.png]\n\n"
         "Draws the curves of a training run from RUN_DIR/metrics.jsonl (a row per epoch) and, when present,\n"
         "RUN_DIR/steps.jsonl (a row every [train] log_every steps) into one PNG of panels, two a row, each\n"
         "%d x %d pixels, and prints one JSON line:\n"
         "  {\"plot\": FILE, \"width\": W, \"height\": H, \"x\": \"epoch\", \"steps_per_epoch\": N, \"rows\": N,\n"
         "   \"step_rows\": N, \"panels\": [{\"title\": ..., \"series\": [\"KEY\", ...]}, ...]}\n"
         "Panels (a key that no row has leaves its series out, a panel without series is left out):\n"
         "  negative ELBO    train_nelbo, val_nelbo, test_nelbo, ema_val_nelbo, ema_test_nelbo\n"
         "  reconstruction   train_recon, val_recon, recon (test)\n"
         "  KL               train_kl, val_kl, kl (test)\n"
         "  learning rate    lr per logged step (steps.jsonl), else per epoch\n"
         "  gradient norm    grad_norm per logged step (steps.jsonl), else the epoch's mean; grad_norm_max\n"
         "  skipped steps    skipped (steps skipped in each epoch)\n"
         "x is the epoch, step / steps per epoch, shared by the panels: a row whose \"complete\" is false (a run cut\n"
         "mid-epoch) sits at its fraction of an epoch; a run that never completed an epoch is drawn against the\n"
         "step. A later row of the same epoch replaces the one before it (a resumed epoch). Non-finite values\n"
         "(nan, inf, null) are gaps in their line.\n\n"
         "options:\n"
         "  --out FILE.png   where to write the picture (default: RUN_DIR/%s)\n"
         "  -h, --help       this help\n\n"
         "A missing directory or metrics.jsonl, a file without rows, a malformed row (its file and line are\n"
         "named) or an output that cannot be written exits 1; a bad option exits 2.\n\n"
         "example:\n"
         "  cuvae plot runs/fmnist --out curves.png\n",
         CUVAE_PLOT_PANEL_W, CUVAE_PLOT_PANEL_H, CUVAE_PLOT_FILE);
}

/* The JSON line of a written plot. */
static void print_result(const cuvae_run_curves *c, const char *out) {
  int width, height;
  cuvae_plot_size(c->n_panels, &width, &height);
  printf("{\"plot\": ");
  cli_json_string(stdout, out);
  printf(", \"width\": %d, \"height\": %d, \"x\": \"%s\", \"steps_per_epoch\": %lld, \"rows\": %zu, "
         "\"step_rows\": %zu, \"panels\": [",
         width, height, c->xlabel, (long long)c->steps_per_epoch, c->n_rows, c->n_step_rows);
  for (int p = 0; p < c->n_panels; p++) {
    printf("%s{\"title\": ", p ? ", " : "");
    cli_json_string(stdout, c->panels[p].title);
    printf(", \"series\": [");
    for (int s = 0; s < c->panels[p].n_series; s++)
      printf("%s\"%s%s\"", s ? ", " : "", c->panels[p].per_step[s] ? "steps." : "", c->panels[p].keys[s]);
    printf("]}");
  }
  printf("]}\n");
}

int cmd_plot(int argc, char **argv) {
  const char *dir = NULL, *out = NULL, *v;
  for (int i = 1; i < argc; i++) {
    int missing = 0;
    if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
      help_plot();
      return 0;
    } else if ((v = cli_flag_value(argc, argv, &i, "--out", &missing))) {
      if (!*v) {
        fprintf(stderr, "error: --out needs a file name\n");
        return CUVAE_EXIT_USAGE;
      }
      out = v;
    } else if (missing) {
      return CUVAE_EXIT_USAGE;
    } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
      fprintf(stderr, "error: unknown option '%s' for plot (see cuvae plot --help)\n", argv[i]);
      return CUVAE_EXIT_USAGE;
    } else if (dir) {
      fprintf(stderr, "error: plot takes one RUN_DIR, got '%s' and '%s'\n", dir, argv[i]);
      return CUVAE_EXIT_USAGE;
    } else {
      dir = argv[i];
    }
  }
  if (!dir) {
    fprintf(stderr, "error: plot needs a RUN_DIR (see cuvae plot --help)\n");
    return CUVAE_EXIT_USAGE;
  }
  cuvae_run_curves c;
  char *fallback = NULL;
  int rc = cuvae_run_curves_read(dir, &c);
  if (rc == 0 && !out) {
    out = fallback = cuvae_plot_default_path(dir);
    rc = fallback ? 0 : -1;
  }
  if (rc == 0) rc = cuvae_run_curves_write_png(&c, out);
  if (rc == 0)
    print_result(&c, out);
  else
    fprintf(stderr, "error: %s\n", cuvae_last_error());
  free(fallback);
  cuvae_run_curves_free(&c);
  return rc ? CUVAE_EXIT_FAIL : 0;
}
