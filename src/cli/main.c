/* cuvae: the command-line program. */
#include <libgen.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "backend.h"
#include "cli.h"
#include "cuvae/blas.h"
#include "cuvae/config.h"
#include "cuvae/dist.h"
#include "cuvae/error.h"
#include "saved_model.h"

/* Every subcommand: name, one-line summary, entry point, help. One table, so `cuvae --help`, `cuvae help X` and
 * the dispatch cannot disagree. */
static const cli_command k_commands[] = {
    {"train", "CONFIG", "train a VAE described by an INI config (see `cuvae help config`)", cmd_train, help_train},
    {"eval", "CHECKPOINT", "evaluate a checkpoint (ELBO, IWAE log-likelihood, ...); one JSON line", cmd_eval,
     help_eval},
    {"verify", "CONFIG", "check the GPU against the CPU reference: the same training steps on both, compared",
     cmd_verify, help_verify},
    {"ppca", "CONFIG --latent Z", "fit probabilistic PCA (closed form / EM); exact log-likelihoods", cmd_ppca,
     help_ppca},
    {"plot", "RUN_DIR", "a PNG of a run's curves (negative ELBO, recon, KL, lr, gradient norm, skips)",
     cmd_plot, help_plot},
    CUVAE_IMAGE_COMMANDS
    CUVAE_EXPORT_COMMANDS
};
#define N_COMMANDS ((int)(sizeof k_commands / sizeof k_commands[0]))

static void help_main(void) {
  printf("cuvae %s - train variational autoencoders (CPU reference backend and CUDA backend)\n\n"
         "usage: cuvae <command> [options]\n\ncommands:\n",
         CUVAE_VERSION_STRING);
  for (int i = 0; i < N_COMMANDS; i++) {
    char head[64];
    snprintf(head, sizeof head, "%s %s", k_commands[i].name, k_commands[i].args);
    printf("  %-26s %s\n", head, k_commands[i].summary);
  }
  printf("  %-26s %s\n\n", "help [COMMAND|config]", "help for a command, or every config key");
  printf("options:\n"
         "  -h, --help       this help\n"
         "  -V, --version    print the version\n\n"
         "  --weights W      with any command that reads a CHECKPOINT: auto (the EMA of the weights when the run\n"
         "                   kept one, [train] ema > 0; else the trained weights), ema, or raw (the trained ones)\n\n"
         "CHECKPOINT is a checkpoint file or the run directory that holds one (RUN_DIR/checkpoint.cuvae).\n\n"
         "example:\n"
         "  cuvae train configs/fashion_mnist.ini --out runs/fmnist\n"
         "  cuvae eval runs/fmnist\n");
}

static const cli_command *find_command(const char *name) {
  for (int i = 0; i < N_COMMANDS; i++)
    if (strcmp(k_commands[i].name, name) == 0) return &k_commands[i];
  return NULL;
}

static void list_commands(FILE *out) {
  for (int i = 0; i < N_COMMANDS; i++) fprintf(out, "%s%s", i ? ", " : "", k_commands[i].name);
}

void cli_json_string(FILE *out, const char *s) {
  fputc('"', out);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '"' || *p == '\\')
      fprintf(out, "\\%c", *p);
    else if (*p < 0x20)
      fprintf(out, "\\u%04x", *p);
    else
      fputc(*p, out);
  }
  fputc('"', out);
}

void cli_default_run_dir(const char *config_path, char *out, size_t n) {
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

static int help_topic(const char *topic) {
  const cli_command *c = topic ? find_command(topic) : NULL;
  if (!topic) {
    help_main();
  } else if (c) {
    c->help();
  } else if (strcmp(topic, "config") == 0) {
    cuvae_config_print_schema(stdout);
  } else {
    fprintf(stderr, "error: no help for '%s' (topics: ", topic);
    list_commands(stderr);
    fprintf(stderr, ", config)\n");
    return CUVAE_EXIT_USAGE;
  }
  return 0;
}

/* `--weights auto|ema|raw` (any command that reads a checkpoint): which weights it uses (src/io/saved_model.h);
 * taken out of argv before the command parses its own flags. */
static int take_weights_flag(int *argc, char **argv) {
  for (int i = 2; i < *argc; i++) {
    if (strcmp(argv[i], "--weights") != 0) continue;
    cuvae_weights w;
    if (i + 1 >= *argc) return cuvae_error("--weights needs a value: auto, ema or raw");
    if (cuvae_weights_parse(argv[i + 1], &w)) return -1;
    cuvae_saved_model_choose_weights(w);
    for (int j = i; j + 2 <= *argc; j++) argv[j] = argv[j + 2];
    *argc -= 2;
    i--;
  }
  return 0;
}

/* Runs a command; under an MPI launcher (mpirun, srun) first joins the job: `train` (data parallel) and `eval` (its
 * passes shared) run on every rank, the other commands run in one process and refuse a job of several. */
static int run_command(const cli_command *c, int argc, char **argv) {
  if (cuvae_dist_init(&argc, &argv)) {
    fprintf(stderr, "error: %s\n", cuvae_last_error());
    return CUVAE_EXIT_FAIL;
  }
  int rc = take_weights_flag(&argc, argv);
  if (rc != 0) {
    fprintf(stderr, "error: %s\n", cuvae_last_error());
    rc = CUVAE_EXIT_USAGE;
  } else if (cuvae_dist_size() > 1 && strcmp(c->name, "train") != 0 && strcmp(c->name, "eval") != 0) {
    if (cuvae_dist_rank() == 0)
      fprintf(stderr, "error: cuvae %s runs in one process; start it without mpirun/srun (%d ranks were started; "
                      "only train and eval run on several)\n", c->name, cuvae_dist_size());
    rc = CUVAE_EXIT_USAGE;
  } else {
    rc = c->run(argc - 1, argv + 1);
  }
  cuvae_dist_finalize();
  return rc;
}

int main(int argc, char **argv) {
  cuvae_blas_select_kernels(argv);
  if (argc < 2) {
    help_main();
    return CUVAE_EXIT_USAGE;
  }
  const char *cmd = argv[1];
  if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0) return help_topic(NULL);
  if (strcmp(cmd, "-V") == 0 || strcmp(cmd, "--version") == 0) {
    char devices[256];
    cuvae_cuda_device_count(devices, sizeof devices);
    printf("cuvae %s (backends: cpu%s; %s)\n", CUVAE_VERSION_STRING, CUVAE_HAVE_CUDA ? ", cuda" : "", devices);
    return 0;
  }
  if (strcmp(cmd, "help") == 0) return help_topic(argc > 2 ? argv[2] : NULL);
  const cli_command *c = find_command(cmd);
  if (c) return run_command(c, argc, argv);
  fprintf(stderr, "error: unknown command '%s' (commands: ", cmd);
  list_commands(stderr);
  fprintf(stderr, ", help; see cuvae --help)\n");
  return CUVAE_EXIT_USAGE;
}
