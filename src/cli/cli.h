/* Subcommands of the cuvae program. Exit codes: 0 success, 1 failure, 2 usage error, 130 interrupted. */
#ifndef CUVAE_CLI_H
#define CUVAE_CLI_H
#include "cuvae/config.h"

#define CUVAE_EXIT_FAIL 1
#define CUVAE_EXIT_USAGE 2
#define CUVAE_EXIT_INTERRUPTED 130

/* A subcommand: `cuvae NAME ARGS...` runs run(argc, argv) with argv[0] = NAME; help() prints its --help. */
typedef struct cli_command {
  const char *name, *args, *summary;
  int (*run)(int argc, char **argv);
  void (*help)(void);
} cli_command;

/* The config a command reads (src/cli/config_args.c): its path and the --set S.K=V overrides, applied in order. */
enum { CLI_MAX_SETS = 256 };
typedef struct cli_config_args {
  const char *path;
  const char *sets[CLI_MAX_SETS];
  int n_sets;
} cli_config_args;
/* One --set value: 0, or -1 after "error: more than N --set overrides" (the caller exits CUVAE_EXIT_USAGE). */
int cli_add_set(cli_config_args *c, const char *v);
/* The CONFIG of `command`: 0, or -1 after "error: COMMAND takes one CONFIG, got ..." (exit CUVAE_EXIT_USAGE). */
int cli_add_config(cli_config_args *c, const char *command, const char *path);
/* The config file with the overrides applied, finalized: 0, or the exit code after a message on stderr. */
int cli_load_config(cuvae_config *cfg, const cli_config_args *c);

int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
void help_train(void);
void help_eval(void);
/* The CUDA backend against the CPU reference (src/cli/cmd_verify.c). */
int cmd_verify(int argc, char **argv);
void help_verify(void);
/* Probabilistic PCA (src/cli/cmd_ppca.c). */
int cmd_ppca(int argc, char **argv);
void help_ppca(void);
/* The curves of a training run (src/cli/cmd_plot.c). */
int cmd_plot(int argc, char **argv);
void help_plot(void);

/* Image commands (src/cli/cmd_images.c): rows of the command table in main.c. */
int cmd_sample(int argc, char **argv);
int cmd_reconstruct(int argc, char **argv);
int cmd_interpolate(int argc, char **argv);
int cmd_traverse(int argc, char **argv);
int cmd_latent_plot(int argc, char **argv);
int cmd_manifold(int argc, char **argv);
void help_sample(void);
void help_reconstruct(void);
void help_interpolate(void);
void help_traverse(void);
void help_latent_plot(void);
void help_manifold(void);
#define CUVAE_IMAGE_COMMANDS                                                                                      \
  {"sample", "CHECKPOINT", "a PNG grid of decoder means of prior samples z ~ N(0, I)", cmd_sample, help_sample},  \
  {"reconstruct", "CHECKPOINT", "a PNG of data examples beside their reconstructions", cmd_reconstruct,           \
   help_reconstruct},                                                                                             \
  {"interpolate", "CHECKPOINT", "a PNG row decoded along the line (or slerp) between two encodings",              \
   cmd_interpolate, help_interpolate},                                                                            \
  {"traverse", "CHECKPOINT", "a PNG varying the most informative latent dims of one example", cmd_traverse,       \
   help_traverse},                                                                                                \
  {"latent-plot", "CHECKPOINT", "a PNG scatter plot of the encodings, coloured by label", cmd_latent_plot,        \
   help_latent_plot},                                                                                             \
  {"manifold", "CHECKPOINT", "a PNG of decoder means over a grid of the 2-D latent space", cmd_manifold,          \
   help_manifold},
/* Export / import / encode / decode (src/cli/cmd_export.c): rows of the command table in main.c. */
int cmd_export(int argc, char **argv);
int cmd_import(int argc, char **argv);
int cmd_encode(int argc, char **argv);
int cmd_decode(int argc, char **argv);
void help_export(void);
void help_import(void);
void help_encode(void);
void help_decode(void);
#define CUVAE_EXPORT_COMMANDS                                                                                     \
  {"export", "CHECKPOINT", "write the parameters for PyTorch (safetensors, or a directory of .npy)", cmd_export,  \
   help_export},                                                                                                  \
  {"import", "SAFETENSORS", "turn an exported safetensors file back into a checkpoint", cmd_import, help_import}, \
  {"encode", "CHECKPOINT", "encode data rows to (mu | logvar) of q(z|x), a float32 .npy", cmd_encode,             \
   help_encode},                                                                                                  \
  {"decode", "CHECKPOINT", "decode latent vectors (.npy) to the decoder's means, a float32 .npy", cmd_decode,     \
   help_decode},
#include "flags.h"

/* Writes s as a JSON string literal (quotes, backslashes and control characters escaped). */
#include <stdio.h>
void cli_json_string(FILE *out, const char *s);
/* The run directory a command picks when not given --out: runs/<config file name without its extension>, with
 * -2, -3, ... appended when that path is taken. */
void cli_default_run_dir(const char *config_path, char *out, size_t n);

#endif
