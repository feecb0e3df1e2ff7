/* cuvae: the command-line program. */
#include <stdio.h>
#include <string.h>

#include "backend.h"
#include "cli.h"
#include "cuvae/blas.h"
#include "cuvae/config.h"

static void help_main(void) {
  printf("cuvae %s - train variational autoencoders (CPU reference backend and CUDA backend)\n\n"
         "usage: cuvae <command> [options]\n\n"
         "commands:\n"
         "  train CONFIG     train a VAE described by an INI config (see `cuvae help config`)\n"
         "  eval CHECKPOINT  evaluate a checkpoint on its test split; prints one JSON line\n"
         "  help [COMMAND]   help for a command, or `help config` for every config key\n\n"
         "options:\n"
         "  -h, --help       this help\n"
         "  -V, --version    print the version\n\n"
         "example:\n"
         "  cuvae train configs/fashion_mnist.ini --out runs/fmnist\n"
         "  cuvae eval runs/fmnist/checkpoint.cuvae\n",
         CUVAE_VERSION_STRING);
}

const char *cli_flag_value(int argc, char **argv, int *i, const char *flag, int *missing) {
  const char *a = argv[*i];
  const size_t n = strlen(flag);
  if (strncmp(a, flag, n) != 0) return NULL;
  if (a[n] == '=') return a + n + 1;
  if (a[n] != '\0') return NULL;
  if (*i + 1 >= argc) {
    fprintf(stderr, "error: %s needs a value\n", flag);
    *missing = 1;
    return NULL;
  }
  *i += 1;
  return argv[*i];
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

static int help_topic(const char *topic) {
  if (!topic) {
    help_main();
  } else if (strcmp(topic, "train") == 0) {
    help_train();
  } else if (strcmp(topic, "eval") == 0) {
    help_eval();
  } else if (strcmp(topic, "config") == 0) {
    cuvae_config_print_schema(stdout);
  } else {
    fprintf(stderr, "error: no help for '%s' (topics: train, eval, config)\n", topic);
    return CUVAE_EXIT_USAGE;
  }
  return 0;
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
  if (strcmp(cmd, "train") == 0) return cmd_train(argc - 1, argv + 1);
  if (strcmp(cmd, "eval") == 0) return cmd_eval(argc - 1, argv + 1);
  fprintf(stderr, "error: unknown command '%s' (commands: train, eval, help; see cuvae --help)\n", cmd);
  return CUVAE_EXIT_USAGE;
}
