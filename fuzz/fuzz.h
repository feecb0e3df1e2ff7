/* What the parser fuzz harnesses share: the libFuzzer entry point and the input as a file the parsers can open. */
#ifndef CUVAE_FUZZ_H
#define CUVAE_FUZZ_H
#include <stddef.h>
#include <stdint.h>

/* Runs one input through a parser (libFuzzer calls it; so does the corpus replay program). Always returns 0. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Stores `size` bytes as the content of this process's scratch file (an anonymous in-memory file, created on
 * the first call and reused) and returns a path that opens it, "/proc/self/fd/N". Aborts if the file cannot
 * be written: that is a broken harness, not a parser finding. */
const char *fuzz_file(const uint8_t *data, size_t size);

/* A path for files a harness writes itself ("DIR/checkpoint.cuvae" in a private directory under /dev/shm when it is
 * writable, else under $TMPDIR or /tmp), the same for every call; the directory is removed at exit. */
const char *fuzz_scratch_path(void);

#endif
