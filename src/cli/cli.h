/* Subcommands of the cuvae program. Exit codes: 0 success, 1 failure, 2 usage error, 130 interrupted. */
#ifndef CUVAE_CLI_H
#define CUVAE_CLI_H

#define CUVAE_EXIT_FAIL 1
#define CUVAE_EXIT_USAGE 2
#define CUVAE_EXIT_INTERRUPTED 130

/* A subcommand: `cuvae NAME ARGS...` runs run(argc, argv) with argv[0] = NAME; help() prints its --help. */
typedef struct cli_command {
  const char *name, *args, *summary;
  int (*run)(int argc, char **argv);
  void (*help)(void);
} cli_command;

int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
void help_train(void);
void help_eval(void);

/* Image commands (src/cli/cmd_images.c): rows of the command table in main.c. */
#define CUVAE_IMAGE_COMMANDS
/* Export / import / encode / decode (src/cli/cmd_export.c): rows of the command table in main.c. */
#define CUVAE_EXPORT_COMMANDS
/* "--flag VALUE" or "--flag=VALUE" at argv[*i]; advances *i past the value. NULL when argv[*i] is not flag. */
const char *cli_flag_value(int argc, char **argv, int *i, const char *flag, int *missing);

/* Writes s as a JSON string literal (quotes, backslashes and control characters escaped). */
#include <stdio.h>
void cli_json_string(FILE *out, const char *s);

#endif
