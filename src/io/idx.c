/* IDX reader (the MNIST / Fashion-MNIST container), plain or gzip-compressed.
 *
 * Layout: magic = 0x00 0x00 TYPE NDIM, then NDIM big-endian uint32 dimensions, then the elements in
 * big-endian order, row-major. zlib's gzread reads plain files transparently, so one code path reads
 * both; gzdirect() tells afterwards which one it was. Every size is validated before the data buffer
 * is allocated: against CUVAE_MAX_ELEMENTS always, and against the real file size for plain files.
 * For gzip the uncompressed size is unknown up front, so the buffer grows as data actually arrives
 * (a tiny file announcing gigabytes fails at its end-of-file without a large allocation). */
#define _POSIX_C_SOURCE 200809L

#include "cuvae/data.h"
#include "cuvae/error.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

/* Largest single gzread request (its length argument is an unsigned int; its result an int). */
#define IDX_READ_CHUNK ((size_t)1 << 30)
/* First buffer size for gzip data whose announced size has not been confirmed yet. */
#define IDX_GZ_INITIAL ((size_t)1 << 20)

static uint32_t be32(const unsigned char *p) {
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

/* Reads up to len bytes; returns the count read (short only at end of stream or on error). */
static size_t gz_read_full(gzFile gz, void *buf, size_t len, int *failed) {
  size_t got = 0;
  *failed = 0;
  while (got < len) {
    size_t want = len - got;
    if (want > IDX_READ_CHUNK) want = IDX_READ_CHUNK;
    int r = gzread(gz, (unsigned char *)buf + got, (unsigned)want);
    if (r < 0) {
      *failed = 1;
      break;
    }
    if (r == 0) break;
    got += (size_t)r;
  }
  return got;
}

/* True when zlib has recorded a decompression problem (truncation, bad CRC, corrupt deflate data). */
static int gz_has_error(gzFile gz) {
  int err = Z_OK;
  gzerror(gz, &err);
  return err != Z_OK;
}

/* Reads `bytes` of element data. Plain files: one allocation (size already checked against the file).
 * Gzip: the buffer doubles as data arrives, never past `bytes`. Afterwards checks there is nothing left
 * (trailing data) and that zlib saw an intact stream (its end-of-stream CRC/length check included). */
static int idx_read_data(const char *path, gzFile gz, int is_gzip, size_t bytes, void **out) {
  size_t cap = is_gzip && bytes > IDX_GZ_INITIAL ? IDX_GZ_INITIAL : bytes;
  unsigned char *buf = malloc(cap);
  if (!buf) return cuvae_error("%s: out of memory allocating %zu bytes", path, cap);
  size_t filled = 0;
  int failed = 0;
  while (filled < bytes) {
    if (filled == cap) {
      size_t ncap = cap > bytes / 2 ? bytes : cap * 2;
      unsigned char *nb = realloc(buf, ncap);
      if (!nb) {
        free(buf);
        return cuvae_error("%s: out of memory allocating %zu bytes", path, ncap);
      }
      buf = nb;
      cap = ncap;
    }
    size_t got = gz_read_full(gz, buf + filled, cap - filled, &failed);
    filled += got;
    if (failed || filled < cap) break; /* end of stream or error before the buffer filled */
  }
  if (filled < bytes) {
    free(buf);
    if (is_gzip)
      return cuvae_error("%s: truncated or corrupt gzip data (got %zu of %zu data bytes announced by the header)",
                         path, filled, bytes);
    return cuvae_error("%s: header says %zu bytes of data, file has %zu (read failed)", path, bytes, filled);
  }
  /* Nothing may follow the data. Reading one more byte also makes zlib verify the gzip trailer. */
  unsigned char extra;
  size_t more = gz_read_full(gz, &extra, 1, &failed);
  if (more > 0) {
    free(buf);
    return cuvae_error("%s: trailing data after the %zu data bytes announced by the header", path, bytes);
  }
  if (failed || (is_gzip && gz_has_error(gz))) {
    free(buf);
    return cuvae_error("%s: truncated or corrupt gzip data (error at end of stream)", path);
  }
  *out = buf;
  return 0;
}

/* Converts big-endian 4-byte elements (i32 or f32) in place to host order. */
static void idx_swap32(void *data, size_t count) {
  unsigned char *p = data;
  for (size_t i = 0; i < count; i++, p += 4) {
    uint32_t v = be32(p);
    memcpy(p, &v, 4);
  }
}

/* Opens path for gzip-transparent reading; *size = the file's size. Open once and fstat the same descriptor, so the
 * size check applies to the file actually read. NULL with a message. */
static gzFile idx_open(const char *path, off_t *size) {
  int fd = open(path, O_RDONLY);
  if (fd < 0) {
    cuvae_error("cannot open %s: %s", path, strerror(errno));
    return NULL;
  }
  struct stat st;
  const char *problem = NULL;
  if (fstat(fd, &st) != 0)
    problem = strerror(errno);
  else if (!S_ISREG(st.st_mode))
    problem = "not a regular file";
  gzFile gz = problem ? NULL : gzdopen(fd, "rb");
  if (!gz) {
    cuvae_error("cannot open %s: %s", path, problem ? problem : "zlib could not open it");
    close(fd);
    return NULL;
  }
  /* Big files: a buffer larger than the 8 KiB default (fewer read calls); small ones keep the default, so reading
   * many small files does not allocate 384 KiB of zlib buffers each time. */
  if (st.st_size > (off_t)(1 << 17)) (void)gzbuffer(gz, 1u << 17);
  *size = st.st_size;
  return gz;
}

/* Magic: two zero bytes, element type, number of dimensions. Sets out->dtype, *esize and *ndim. */
static int idx_read_magic(gzFile gz, const char *path, cuvae_array *out, size_t *esize, int *ndim) {
  unsigned char magic[4];
  int failed = 0;
  if (gz_read_full(gz, magic, 4, &failed) != 4)
    return gz_has_error(gz) ? cuvae_error("%s: truncated or corrupt gzip data (inside the IDX magic)", path)
                            : cuvae_error("%s: too short for an IDX header (need 4 magic bytes)", path);
  if (magic[0] != 0 || magic[1] != 0)
    return cuvae_error("%s: wrong IDX magic 0x%08" PRIx32 " (expected 0x0000TTNN: two zero bytes, type, dimension "
                       "count)",
                       path, be32(magic));
  switch (magic[2]) {
    case 0x08: out->dtype = CUVAE_DTYPE_U8; *esize = 1; break;
    case 0x0C: out->dtype = CUVAE_DTYPE_I32; *esize = 4; break;
    case 0x0D: out->dtype = CUVAE_DTYPE_F32; *esize = 4; break;
    default:
      return cuvae_error("%s: unsupported IDX data type 0x%02X (supported: 0x08 uint8, 0x0C int32, 0x0D float32)",
                         path, magic[2]);
  }
  *ndim = magic[3];
  if (*ndim < 1 || *ndim > 4) return cuvae_error("%s: IDX header has %d dimensions (supported: 1 to 4)", path, *ndim);
  return 0;
}

/* The dimensions into out->shape, their product checked for zero, overflow and the element limit before any
 * allocation; *count = the product. */
static int idx_read_shape(gzFile gz, const char *path, int ndim, size_t esize, cuvae_array *out, uint64_t *count) {
  unsigned char dims[16];
  int failed = 0;
  if (gz_read_full(gz, dims, (size_t)ndim * 4, &failed) != (size_t)ndim * 4)
    return gz_has_error(gz) ? cuvae_error("%s: truncated or corrupt gzip data (inside the IDX dimensions)", path)
                            : cuvae_error("%s: file ends inside the IDX header (%d dimensions announced)", path, ndim);
  char shape_str[64] = "";
  uint64_t n = 1;
  int absurd = 0, zero = 0;
  for (int d = 0; d < ndim; d++) {
    uint32_t v = be32(dims + 4 * d);
    size_t len = strlen(shape_str);
    snprintf(shape_str + len, sizeof shape_str - len, d ? " x %" PRIu32 : "%" PRIu32, v);
    if (v == 0) zero = 1;
    /* n <= 2^32 and v < 2^32 here, so the product cannot overflow 64 bits; stop growing once absurd. */
    if (!absurd) {
      n *= v;
      if (n > (uint64_t)CUVAE_MAX_ELEMENTS) absurd = 1;
    }
    out->shape[d] = v;
  }
  if (zero) return cuvae_error("%s: IDX shape %s has a zero dimension (empty data set)", path, shape_str);
  if (absurd || n * esize > (uint64_t)SIZE_MAX)
    return cuvae_error("%s: absurd dimensions %s (more than %zu elements)", path, shape_str,
                       (size_t)CUVAE_MAX_ELEMENTS);
  *count = n;
  return 0;
}

int cuvae_idx_read(const char *path, cuvae_array *out) {
  memset(out, 0, sizeof *out);
  if (!path) return cuvae_error("cuvae_idx_read: no path given");
  off_t size = 0;
  gzFile gz = idx_open(path, &size);
  if (!gz) return -1;
  void *data = NULL;
  size_t esize = 0;
  int ndim = 0;
  uint64_t count = 0;
  int rc = idx_read_magic(gz, path, out, &esize, &ndim);
  const int is_gzip = !gzdirect(gz);
  if (rc == 0) rc = idx_read_shape(gz, path, ndim, esize, out, &count);
  const uint64_t bytes64 = count * esize;
  /* Plain file: the header must account for exactly the bytes that follow it (size >= header: it was read). */
  const uint64_t have = (uint64_t)size - (4 + 4 * (uint64_t)ndim);
  if (rc == 0 && !is_gzip && have != bytes64)
    rc = cuvae_error("%s: header says %" PRIu64 " bytes of data, file has %" PRIu64, path, bytes64, have);
  if (rc == 0) rc = idx_read_data(path, gz, is_gzip, (size_t)bytes64, &data);
  if (rc == 0) {
    if (esize == 4) idx_swap32(data, (size_t)count);
    out->ndim = ndim;
    out->count = (size_t)count;
    out->data = data;
    data = NULL;
  }
  gzclose(gz);
  free(data);
  if (rc != 0) memset(out, 0, sizeof *out);
  return rc;
}
