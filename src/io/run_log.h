/* The run's row logs, metrics.jsonl and steps.jsonl: rows counted in bytes (each checkpoint records how much of both
 * files belongs to it), write errors kept until the next sync reports them, and the cut back to a checkpoint's
 * length on resume (docs/CHECKPOINT.md, "Resuming"). */
#ifndef CUVAE_RUN_LOG_H
#define CUVAE_RUN_LOG_H
#include <stdint.h>
#include <stdio.h>

#include "cuvae/config.h"
#include "cuvae/error.h"

typedef struct cuvae_run_log {
  FILE *f;
  char path[CUVAE_PATH_MAX + 32];
  uint64_t bytes;  /* the file's length, the rows written so far included */
  int err;         /* errno of the first failed write; 0 if none */
} cuvae_run_log;

/* One row (printf format), counted; a failed write is kept in l->err. */
void cuvae_log_row(cuvae_run_log *l, const char *fmt, ...) CUVAE_PRINTF(2, 3);
/* Puts every row written so far on disk (fflush, fsync), or names the file and the first error. Devices that cannot
 * be synced (EINVAL) are not an error. No-op while the file is not open. */
int cuvae_log_sync(cuvae_run_log *l);
/* On resume: cuts the file back to `want` bytes, its length when the checkpoint was written. A file that is shorter
 * (edited or removed since) is kept as it is, with a note on `note_to`, and new rows are appended to it. */
int cuvae_log_cut(cuvae_run_log *l, uint64_t want, FILE *note_to);
/* The size of a regular file; 0 for anything else or a missing file. */
uint64_t cuvae_file_size(const char *path);

#endif
