/* The fuzz harnesses' files: the input as an anonymous in-memory file (memfd) rewritten for each input, and a scratch
 * path for what a harness writes itself. */
#define _GNU_SOURCE /* memfd_create */
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz.h"

const char *fuzz_file(const uint8_t *data, size_t size) {
  static int fd = -1;
  static char path[64];
  if (fd < 0) {
    fd = memfd_create("cuvae-fuzz", MFD_CLOEXEC);
    if (fd < 0) {
      perror("fuzz: memfd_create");
      abort();
    }
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  }
  if (ftruncate(fd, 0) != 0) {
    perror("fuzz: ftruncate");
    abort();
  }
  size_t done = 0;
  while (done < size) {
    ssize_t w = pwrite(fd, data + done, size - done, (off_t)done);
    if (w <= 0) {
      perror("fuzz: pwrite");
      abort();
    }
    done += (size_t)w;
  }
  return path;
}

static char scratch_dir[128], scratch[256];

static void remove_scratch(void) {
  unlink(scratch);
  rmdir(scratch_dir);
}

const char *fuzz_scratch_path(void) {
  if (!scratch[0]) {
    const char *tmp = getenv("TMPDIR");
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : tmp && tmp[0] ? tmp : "/tmp";
    snprintf(scratch_dir, sizeof scratch_dir, "%s/cuvae-fuzz-XXXXXX", base);
    if (!mkdtemp(scratch_dir)) {
      perror("fuzz: mkdtemp");
      abort();
    }
    snprintf(scratch, sizeof scratch, "%s/checkpoint.cuvae", scratch_dir);
    atexit(remove_scratch);
  }
  return scratch;
}
