#include "cuvae/error.h"

#include <stdarg.h>
#include <stdio.h>

static _Thread_local char last_error[2048];

int cuvae_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(last_error, sizeof last_error, fmt, ap);
  va_end(ap);
  return -1;
}

const char *cuvae_last_error(void) { return last_error; }

void cuvae_clear_error(void) { last_error[0] = '\0'; }
