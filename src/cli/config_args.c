/* The arguments every command that reads a CONFIG takes (cli.h: cli_config_args): the path, the --set overrides, and
 * the config they make. */
#include <stdio.h>

#include "cli.h"
#include "cuvae/error.h"

int cli_add_set(cli_config_args *c, const char *v) {
  if (c->n_sets == CLI_MAX_SETS) {
    fprintf(stderr, "error: more than %d --set overrides\n", CLI_MAX_SETS);
    return -1;
  }
  c->sets[c->n_sets++] = v;
  return 0;
}

int cli_add_config(cli_config_args *c, const char *command, const char *path) {
  if (c->path) {
    fprintf(stderr, "error: %s takes one CONFIG, got '%s' and '%s'\n", command, c->path, path);
    return -1;
  }
  c->path = path;
  return 0;
}

int cli_load_config(cuvae_config *cfg, const cli_config_args *c) {
  cuvae_config_defaults(cfg);
  if (cuvae_config_load_file(cfg, c->path)) {
    fprintf(stderr, "error: %s\n", cuvae_last_error());
    return CUVAE_EXIT_FAIL;
  }
  for (int k = 0; k < c->n_sets; k++) {
    if (cuvae_config_set(cfg, c->sets[k])) {
      fprintf(stderr, "error: %s\n", cuvae_last_error());
      return CUVAE_EXIT_USAGE;
    }
  }
  if (cuvae_config_finalize(cfg)) {
    fprintf(stderr, "error: %s: %s\n", c->path, cuvae_last_error());
    return CUVAE_EXIT_FAIL;
  }
  return 0;
}
