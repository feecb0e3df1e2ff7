/* Reading one flag's value from a command line (see flags.h). */
#include "flags.h"

#include <stdio.h>
#include <string.h>

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
