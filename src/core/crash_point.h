/* Test-only crash seam: with CUVAE_TEST_KILL_AT=POINT:STEP[:INT|TERM] in the environment, the process raises SIGKILL
 * (or SIGINT / SIGTERM) when it reaches the named point at that step; without it, nothing happens. The points and
 * where they sit are listed in docs/CHECKPOINT.md ("Crash safety"); tests/test_crash.cc uses them. */
#ifndef CUVAE_CRASH_POINT_H
#define CUVAE_CRASH_POINT_H
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* `flush_first`, when not NULL, is flushed before the signal, so that what was written so far is on disk. The
 * variable is read once per translation unit; a malformed value arms nothing. */
static inline void cuvae_crash_point(const char *point, int64_t step, FILE *flush_first) {
  static int parsed = 0, sig = SIGKILL;
  static char name[32];
  static long long at = -1;
  if (!parsed) {
    parsed = 1;
    const char *env = getenv("CUVAE_TEST_KILL_AT");
    const char *colon = env ? strchr(env, ':') : NULL;
    if (colon && (size_t)(colon - env) < sizeof name) {
      memcpy(name, env, (size_t)(colon - env));
      name[colon - env] = '\0';
      char *end;
      at = strtoll(colon + 1, &end, 10);
      if (strcmp(end, ":INT") == 0) sig = SIGINT;
      else if (strcmp(end, ":TERM") == 0) sig = SIGTERM;
      else if (*end != '\0' || end == colon + 1) at = -1;
    }
  }
  if (at < 0 || step != at || strcmp(point, name) != 0) return;
  if (flush_first) fflush(flush_first);
  raise(sig);
}

#endif
