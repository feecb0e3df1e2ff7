/* The library's last error message, one per thread (include/cuvae/error.h). */
#include "cuvae/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char last_error[2048];

int cuvae_error(const char *fmt, ...) {
  /* Format into a local buffer first: callers may pass cuvae_last_error() itself as an argument, to wrap
   * a lower-level message in context. */
  char msg[sizeof last_error];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  memcpy(last_error, msg, sizeof msg);
  return -1;
}

const char *cuvae_last_error(void) { return last_error; }

void cuvae_clear_error(void) { last_error[0] = '\0'; }
