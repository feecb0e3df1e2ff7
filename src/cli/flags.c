/* Reading one flag's value from a command line (see flags.h). */
#include "flags.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
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

int cli_flag_ll(const char *flag, const char *v, long long lo, long long hi, long long *out) {
  char *end;
  errno = 0;
  const long long x = strtoll(v, &end, 10);
  if (end == v || *end || errno || x < lo || x > hi) {
    fprintf(stderr, "error: %s '%s': expected an integer from %lld to %lld\n", flag, v, lo, hi);
    return 2;
  }
  *out = x;
  return 0;
}

int cli_flag_int(const char *flag, const char *v, int lo, int hi, int *out) {
  long long x;
  if (cli_flag_ll(flag, v, lo, hi, &x)) return 2;
  *out = (int)x;
  return 0;
}
