/* The run's row logs (see run_log.h). */
#include "run_log.h"

#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void cuvae_log_row(cuvae_run_log *l, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  errno = 0;
  const int n = vfprintf(l->f, fmt, ap);
  va_end(ap);
  if (n >= 0)
    l->bytes += (uint64_t)n;
  else if (l->err == 0)
    l->err = errno ? errno : EIO;
}

int cuvae_log_sync(cuvae_run_log *l) {
  if (!l->f) return 0;
  errno = 0;
  if (l->err == 0 && fflush(l->f) != 0) l->err = errno ? errno : EIO;
  if (l->err == 0 && ferror(l->f)) l->err = EIO;
  if (l->err == 0 && fsync(fileno(l->f)) != 0 && errno != EINVAL) l->err = errno;
  if (l->err != 0) return cuvae_error("cannot write %s: %s", l->path, strerror(l->err));
  return 0;
}

int cuvae_log_cut(cuvae_run_log *l, uint64_t want, FILE *note_to) {
  struct stat st;
  l->bytes = want;
  if (stat(l->path, &st) != 0) {
    if (errno != ENOENT) return cuvae_error("cannot read %s: %s", l->path, strerror(errno));
    st.st_size = 0;  /* removed since: as if empty */
  } else if (!S_ISREG(st.st_mode)) {
    return 0;  /* not a regular file (e.g. a device): nothing to cut */
  }
  if ((uint64_t)st.st_size > want && truncate(l->path, (off_t)want) != 0)
    return cuvae_error("cannot cut %s back to the %llu bytes it had at the checkpoint: %s", l->path,
                       (unsigned long long)want, strerror(errno));
  if ((uint64_t)st.st_size < want) {
    fprintf(note_to, "note: %s is %llu bytes, shorter than the %llu bytes it had at the checkpoint (edited since?); "
                 "new rows are appended to it\n", l->path, (unsigned long long)st.st_size, (unsigned long long)want);
    l->bytes = (uint64_t)st.st_size;
  }
  return 0;
}

uint64_t cuvae_file_size(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISREG(st.st_mode) ? (uint64_t)st.st_size : 0;
}
