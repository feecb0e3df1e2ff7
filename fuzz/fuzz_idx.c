/* Fuzz harness for the IDX reader (src/io/idx.c): each input is read as a file as it is (plain IDX, or gzip if it is
 * one) and again gzip-compressed by the harness, so the gzip path parses the same IDX bytes; an input that reads
 * is also loaded as images and labels through the data set loader (src/io/data.c). */
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "cuvae/data.h"
#include "cuvae/error.h"
#include "fuzz.h"
#include "fuzz_checks.h"

/* The input as a gzip stream (fastest level, smallest window and state: inputs are small); NULL if zlib fails. */
static unsigned char *gzip_bytes(const uint8_t *data, size_t size, size_t *out_len) {
  z_stream zs;
  memset(&zs, 0, sizeof zs);
  if (deflateInit2(&zs, 1, Z_DEFLATED, 9 + 16, 1, Z_DEFAULT_STRATEGY) != Z_OK) return NULL;
  size_t cap = deflateBound(&zs, (uLong)size) + 32;
  unsigned char *out = malloc(cap);
  if (out) {
    zs.next_in = (Bytef *)(uintptr_t)data;
    zs.avail_in = (uInt)size;
    zs.next_out = out;
    zs.avail_out = (uInt)cap;
    if (deflate(&zs, Z_FINISH) != Z_STREAM_END) {
      free(out);
      out = NULL;
    } else {
      *out_len = cap - zs.avail_out;
    }
  }
  deflateEnd(&zs);
  return out;
}

static int read_one(const uint8_t *data, size_t size) {
  cuvae_array a;
  cuvae_clear_error();
  int rc = cuvae_idx_read(fuzz_file(data, size), &a);
  fuzz_check_array(rc, &a);
  cuvae_array_free(&a);
  return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > (1u << 20)) return 0;
  if (read_one(data, size) == 0) {
    cuvae_dataset ds;
    const char *path = fuzz_file(data, size);
    if (cuvae_dataset_load(&ds, path, path) == 0) FUZZ_REQUIRE(ds.x != NULL && ds.n * ds.dim >= 1);
    cuvae_dataset_free(&ds);
  }
  size_t zlen = 0;
  unsigned char *z = gzip_bytes(data, size, &zlen);
  FUZZ_REQUIRE(z != NULL);
  read_one(z, zlen);
  free(z);
  return 0;
}
