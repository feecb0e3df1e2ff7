/* NumPy .npy reader (format versions 1.0, 2.0 and 3.0), C-order arrays of <f4, u1, <i4 or <i8.
 *
 * Layout: "\x93NUMPY", major, minor, header length (uint16 LE for v1, uint32 LE for v2/v3), then an
 * ASCII (v3: UTF-8) Python dict literal such as
 *   {'descr': '<f4', 'fortran_order': False, 'shape': (10000, 784), }
 * padded with spaces and ended by '\n', then the raw little-endian elements. The dict is parsed by a
 * small hand-written scanner that accepts exactly the literal forms NumPy writes (plus either quote
 * style, trailing commas and Python 2 "L" integer suffixes). Sizes are validated against
 * CUVAE_MAX_ELEMENTS and the real file size before the data buffer is allocated. */
#define _POSIX_C_SOURCE 200809L

#include "cuvae/data.h"
#include "cuvae/error.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* NumPy itself refuses headers over 10000 bytes by default; allow more, but not unbounded. */
#define NPY_MAX_HEADER ((uint32_t)1 << 20)

/* The header dict being scanned, and the file it came from (for messages). */
typedef struct {
  const char *path;
  const char *p, *end;
} npy_lex;

static void lex_ws(npy_lex *lx) {
  while (lx->p < lx->end && (*lx->p == ' ' || *lx->p == '\t' || *lx->p == '\n' || *lx->p == '\r')) lx->p++;
}

/* Consumes character c (after whitespace) if present; returns whether it was. */
static int lex_accept(npy_lex *lx, char c) {
  lex_ws(lx);
  if (lx->p < lx->end && *lx->p == c) {
    lx->p++;
    return 1;
  }
  return 0;
}

/* Error naming the path and what was expected at the current position (with a short excerpt). */
static int lex_fail(const npy_lex *lx, const char *expected) {
  int left = 0; /* excerpt: up to 24 characters, stopping at the header's final newline */
  while (left < 24 && lx->p + left < lx->end && lx->p[left] != '\n') left++;
  return cuvae_error("%s: malformed .npy header: expected %s at \"%.*s\"", lx->path, expected, left, lx->p);
}

/* A quoted Python string without escapes ('...' or "..."), copied into buf. */
static int lex_string(npy_lex *lx, char *buf, size_t cap) {
  lex_ws(lx);
  if (lx->p >= lx->end || (*lx->p != '\'' && *lx->p != '"')) return lex_fail(lx, "a quoted string");
  const char q = *lx->p++;
  const char *start = lx->p;
  while (lx->p < lx->end && *lx->p != q && *lx->p != '\\') lx->p++;
  if (lx->p >= lx->end || *lx->p != q) return lex_fail(lx, "the end of a string (escapes are not supported)");
  size_t len = (size_t)(lx->p - start);
  lx->p++;
  if (len >= cap) return cuvae_error("%s: malformed .npy header: string \"%.*s\" too long", lx->path, 32, start);
  memcpy(buf, start, len);
  buf[len] = '\0';
  return 0;
}

/* True or False. */
static int lex_bool(npy_lex *lx, int *v) {
  lex_ws(lx);
  size_t left = (size_t)(lx->end - lx->p);
  if (left >= 4 && memcmp(lx->p, "True", 4) == 0) {
    lx->p += 4;
    *v = 1;
    return 0;
  }
  if (left >= 5 && memcmp(lx->p, "False", 5) == 0) {
    lx->p += 5;
    *v = 0;
    return 0;
  }
  return lex_fail(lx, "True or False");
}

/* A non-negative decimal integer (optional Python 2 'L' suffix); values past 2^63 saturate at UINT64_MAX,
 * which the caller's size checks then reject as absurd. */
static int lex_uint(npy_lex *lx, uint64_t *v) {
  lex_ws(lx);
  if (lx->p >= lx->end || *lx->p < '0' || *lx->p > '9') return lex_fail(lx, "a non-negative integer");
  uint64_t x = 0;
  while (lx->p < lx->end && *lx->p >= '0' && *lx->p <= '9') {
    unsigned d = (unsigned)(*lx->p++ - '0');
    x = x > (UINT64_MAX - d) / 10 ? UINT64_MAX : x * 10 + d;
  }
  if (lx->p < lx->end && (*lx->p == 'L' || *lx->p == 'l')) lx->p++;
  *v = x;
  return 0;
}

/* The shape tuple: "()", "(n,)", "(a, b)", "(a, b, c,)" ... at most 4 entries. */
static int lex_shape(npy_lex *lx, uint64_t shape[4], int *ndim) {
  if (!lex_accept(lx, '(')) return lex_fail(lx, "'(' starting the shape tuple");
  *ndim = 0;
  while (!lex_accept(lx, ')')) {
    if (*ndim == 4) return cuvae_error("%s: .npy shape has more than 4 dimensions (not supported)", lx->path);
    if (lex_uint(lx, &shape[*ndim]) != 0) return -1;
    (*ndim)++;
    if (!lex_accept(lx, ',')) {
      if (!lex_accept(lx, ')')) return lex_fail(lx, "',' or ')' in the shape tuple");
      break;
    }
  }
  return 0;
}

typedef struct {
  char descr[32];
  int fortran;
  uint64_t shape[4];
  int ndim;
} npy_header;

/* Parses the dict; every one of the three keys must appear exactly once and no other key may. */
static int npy_parse_dict(const char *path, const char *text, size_t len, npy_header *h) {
  npy_lex lx = {path, text, text + len};
  int have_descr = 0, have_fortran = 0, have_shape = 0;
  if (!lex_accept(&lx, '{')) return lex_fail(&lx, "'{' starting the header dict");
  while (!lex_accept(&lx, '}')) {
    char key[32];
    if (lex_string(&lx, key, sizeof key) != 0) return -1;
    if (!lex_accept(&lx, ':')) return lex_fail(&lx, "':' after a dict key");
    int *seen;
    int rc;
    if (strcmp(key, "descr") == 0) {
      seen = &have_descr;
      lex_ws(&lx);
      if (lx.p < lx.end && *lx.p == '[')
        return cuvae_error("%s: structured .npy dtypes are not supported (need <f4, |u1, <i4 or <i8)", path);
      rc = lex_string(&lx, h->descr, sizeof h->descr);
    } else if (strcmp(key, "fortran_order") == 0) {
      seen = &have_fortran;
      rc = lex_bool(&lx, &h->fortran);
    } else if (strcmp(key, "shape") == 0) {
      seen = &have_shape;
      rc = lex_shape(&lx, h->shape, &h->ndim);
    } else {
      return cuvae_error("%s: malformed .npy header: unexpected key '%s'", path, key);
    }
    if (rc != 0) return -1;
    if (*seen) return cuvae_error("%s: malformed .npy header: key '%s' appears twice", path, key);
    *seen = 1;
    if (!lex_accept(&lx, ',')) {
      if (!lex_accept(&lx, '}')) return lex_fail(&lx, "',' or '}' in the header dict");
      break;
    }
  }
  lex_ws(&lx); /* only the space padding and the final newline may follow */
  if (lx.p != lx.end) return lex_fail(&lx, "only padding after the header dict");
  if (!have_descr || !have_fortran || !have_shape)
    return cuvae_error("%s: malformed .npy header: missing key '%s'", path,
                       !have_descr ? "descr" : !have_fortran ? "fortran_order" : "shape");
  return 0;
}

/* Maps the descr string to a dtype; refuses big-endian and anything else by name. */
static int npy_dtype(const char *path, const char *descr, cuvae_dtype *dt, size_t *esize) {
  /* One-byte types have no byte order: NumPy writes '|u1', but any order prefix means the same. */
  const char *d = descr;
  if (d[0] == '|' || d[0] == '<' || d[0] == '>' || d[0] == '=') {
    if (strcmp(d + 1, "u1") == 0) d++;
  }
  if (strcmp(d, "u1") == 0) {
    *dt = CUVAE_DTYPE_U8;
    *esize = 1;
    return 0;
  }
  if (strcmp(descr, "<f4") == 0) {
    *dt = CUVAE_DTYPE_F32;
    *esize = 4;
    return 0;
  }
  if (strcmp(descr, "<i4") == 0) {
    *dt = CUVAE_DTYPE_I32;
    *esize = 4;
    return 0;
  }
  if (strcmp(descr, "<i8") == 0) {
    *dt = CUVAE_DTYPE_I64;
    *esize = 8;
    return 0;
  }
  if (descr[0] == '>')
    return cuvae_error("%s: big-endian .npy dtype '%s' is not supported (save as little-endian '<%s')", path, descr,
                       descr + 1);
  return cuvae_error("%s: unsupported .npy dtype '%s' (supported: <f4, |u1, <i4, <i8)", path, descr);
}

/* .npy data is little-endian; reverse each element's bytes only on a big-endian host. */
static void npy_to_host(void *data, size_t count, size_t esize) {
  const uint16_t probe = 1;
  unsigned char first;
  memcpy(&first, &probe, 1);
  if (first == 1 || esize == 1) return;
  unsigned char *p = data;
  for (size_t i = 0; i < count; i++, p += esize)
    for (size_t a = 0, b = esize - 1; a < b; a++, b--) {
      unsigned char t = p[a];
      p[a] = p[b];
      p[b] = t;
    }
}

int cuvae_npy_read(const char *path, cuvae_array *out) {
  memset(out, 0, sizeof *out);
  if (!path) return cuvae_error("cuvae_npy_read: no path given");
  FILE *f = fopen(path, "rb");
  if (!f) return cuvae_error("cannot open %s: %s", path, strerror(errno));

  int rc = -1;
  char *header = NULL;
  void *data = NULL;
  struct stat st;
  if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
    cuvae_error("cannot open %s: not a regular file", path);
    goto done;
  }

  /* Preamble: magic, version, header length. */
  unsigned char pre[12];
  if (fread(pre, 1, 10, f) != 10 || memcmp(pre, "\x93NUMPY", 6) != 0) {
    cuvae_error("%s: not a .npy file (missing \\x93NUMPY magic)", path);
    goto done;
  }
  const int major = pre[6], minor = pre[7];
  uint64_t hlen, pre_len;
  if (major == 1) {
    hlen = (uint64_t)pre[8] | (uint64_t)pre[9] << 8;
    pre_len = 10;
  } else if (major == 2 || major == 3) {
    if (fread(pre + 10, 1, 2, f) != 2) {
      cuvae_error("%s: file ends inside the .npy preamble", path);
      goto done;
    }
    hlen = (uint64_t)pre[8] | (uint64_t)pre[9] << 8 | (uint64_t)pre[10] << 16 | (uint64_t)pre[11] << 24;
    pre_len = 12;
  } else {
    cuvae_error("%s: unsupported .npy format version %d.%d (supported: 1.0, 2.0, 3.0)", path, major, minor);
    goto done;
  }
  if (hlen > NPY_MAX_HEADER || pre_len + hlen > (uint64_t)st.st_size) {
    cuvae_error("%s: .npy header length %" PRIu64 " does not fit the file (%lld bytes)", path, hlen,
                (long long)st.st_size);
    goto done;
  }

  /* Header dict. */
  header = malloc(hlen + 1);
  if (!header) {
    cuvae_error("%s: out of memory reading the .npy header", path);
    goto done;
  }
  if (fread(header, 1, hlen, f) != hlen) {
    cuvae_error("%s: read error in the .npy header", path);
    goto done;
  }
  header[hlen] = '\0';
  npy_header h = {0};
  if (npy_parse_dict(path, header, hlen, &h) != 0) goto done;

  size_t esize = 0;
  if (npy_dtype(path, h.descr, &out->dtype, &esize) != 0) goto done;
  if (h.fortran) {
    cuvae_error("%s: fortran_order True is not supported (save a C-order array, e.g. np.ascontiguousarray)", path);
    goto done;
  }
  if (h.ndim == 0) {
    cuvae_error("%s: 0-d (scalar) .npy arrays are not supported", path);
    goto done;
  }

  /* Element count: no zero dimension, no overflow, within the limit; then exactly matching the file. */
  char shape_str[128] = "";
  uint64_t count = 1;
  int absurd = 0;
  for (int d = 0; d < h.ndim; d++) {
    size_t len = strlen(shape_str);
    snprintf(shape_str + len, sizeof shape_str - len, d ? " x %" PRIu64 : "%" PRIu64, h.shape[d]);
    if (h.shape[d] == 0) {
      cuvae_error("%s: .npy shape has a zero dimension (empty array)", path);
      goto done;
    }
    if (h.shape[d] > (uint64_t)CUVAE_MAX_ELEMENTS) absurd = 1;
    if (!absurd) { /* both factors <= 2^32: the product fits 64 bits */
      count *= h.shape[d];
      if (count > (uint64_t)CUVAE_MAX_ELEMENTS) absurd = 1;
    }
  }
  if (absurd || count * esize > (uint64_t)SIZE_MAX) {
    cuvae_error("%s: absurd dimensions %s (more than %zu elements)", path, shape_str, (size_t)CUVAE_MAX_ELEMENTS);
    goto done;
  }
  const uint64_t bytes = count * esize;
  const uint64_t have = (uint64_t)st.st_size - pre_len - hlen;
  if (have != bytes) {
    cuvae_error("%s: header says %" PRIu64 " bytes of data, file has %" PRIu64, path, bytes, have);
    goto done;
  }

  /* Data, converted to host order; float data must be finite. */
  data = malloc((size_t)bytes);
  if (!data) {
    cuvae_error("%s: out of memory allocating %" PRIu64 " bytes", path, bytes);
    goto done;
  }
  if (fread(data, 1, (size_t)bytes, f) != (size_t)bytes) {
    cuvae_error("%s: read error in the .npy data", path);
    goto done;
  }
  npy_to_host(data, (size_t)count, esize);
  if (out->dtype == CUVAE_DTYPE_F32) {
    const float *x = data;
    for (size_t i = 0; i < (size_t)count; i++) {
      if (isnan(x[i])) {
        cuvae_error("%s: element %zu is NaN", path, i);
        goto done;
      }
      if (isinf(x[i])) {
        cuvae_error("%s: element %zu is %sInf", path, i, x[i] < 0 ? "-" : "+");
        goto done;
      }
    }
  }

  out->ndim = h.ndim;
  for (int d = 0; d < h.ndim; d++) out->shape[d] = (size_t)h.shape[d];
  out->count = (size_t)count;
  out->data = data;
  data = NULL;
  rc = 0;

done:
  fclose(f);
  free(header);
  free(data);
  if (rc != 0) memset(out, 0, sizeof *out);
  return rc;
}

/* ---- writer ------------------------------------------------------------------------------------------------ */

#include <fcntl.h>
#include <unistd.h>

/* The header dict NumPy itself writes, padded with spaces so that the data starts on a 64-byte boundary. */
static int npy_header_text(char *buf, size_t cap, int ndim, const size_t *shape, size_t *len) {
  char dims[160] = "";
  for (int d = 0; d < ndim; d++) {
    size_t used = strlen(dims);
    snprintf(dims + used, sizeof dims - used, d ? ", %zu" : "%zu", shape[d]);
  }
  int n = snprintf(buf, cap, "{'descr': '<f4', 'fortran_order': False, 'shape': (%s%s), }", dims,
                   ndim == 1 ? "," : "");
  if (n < 0 || (size_t)n + 64 >= cap) return -1;
  size_t total = 10 + (size_t)n + 1; /* preamble, dict, final newline */
  size_t pad = (64 - total % 64) % 64;
  memset(buf + n, ' ', pad);
  buf[(size_t)n + pad] = '\n';
  *len = (size_t)n + pad + 1;
  return 0;
}

int cuvae_npy_write_f32(const char *path, const float *data, int ndim, const size_t *shape) {
  if (!path || !path[0]) return cuvae_error("cuvae_npy_write_f32: no path given");
  if (!data || !shape || ndim < 1 || ndim > 4)
    return cuvae_error("%s: refusing to write .npy: need data and 1 to 4 dimensions (got %d)", path, ndim);
  size_t count = 1;
  for (int d = 0; d < ndim; d++) {
    if (shape[d] == 0) return cuvae_error("%s: refusing to write .npy: dimension %d is 0", path, d);
    if (count > SIZE_MAX / 4 / shape[d]) return cuvae_error("%s: refusing to write .npy: too many elements", path);
    count *= shape[d];
  }
  char header[256];
  size_t hlen = 0;
  if (npy_header_text(header, sizeof header, ndim, shape, &hlen) != 0)
    return cuvae_error("%s: refusing to write .npy: header too long", path);

  /* Temporary file next to the target, renamed over it once complete. */
  const size_t plen = strlen(path);
  char *tmp = malloc(plen + 32);
  if (!tmp) return cuvae_error("%s: out of memory", path);
  snprintf(tmp, plen + 32, "%s.tmp.%ld", path, (long)getpid());
  int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0666);
  if (fd < 0) {
    cuvae_error("%s: cannot create temporary file %s: %s", path, tmp, strerror(errno));
    free(tmp);
    return -1;
  }
  FILE *f = fdopen(fd, "wb");
  if (!f) {
    cuvae_error("%s: cannot write temporary file %s: %s", path, tmp, strerror(errno));
    close(fd);
    unlink(tmp);
    free(tmp);
    return -1;
  }
  unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(hlen & 0xff),
                           (unsigned char)(hlen >> 8)};
  int ok = fwrite(pre, 1, sizeof pre, f) == sizeof pre && fwrite(header, 1, hlen, f) == hlen;
  unsigned char chunk[1 << 14];
  for (size_t i = 0; ok && i < count;) {
    size_t k = 0;
    for (; k < sizeof chunk / 4 && i < count; k++, i++) {
      uint32_t u;
      memcpy(&u, &data[i], 4);
      for (int b = 0; b < 4; b++) chunk[4 * k + b] = (unsigned char)(u >> (8 * b));
    }
    ok = fwrite(chunk, 4, k, f) == k;
  }
  int err = ok ? 0 : errno;
  if (ok && fflush(f) != 0) ok = 0, err = errno;
  if (ok && fsync(fileno(f)) != 0) ok = 0, err = errno;
  if (fclose(f) != 0 && ok) ok = 0, err = errno;
  if (ok && rename(tmp, path) != 0) ok = 0, err = errno;
  if (!ok) {
    cuvae_error("%s: cannot write .npy (temporary file %s): %s", path, tmp, err ? strerror(err) : "write error");
    unlink(tmp);
    free(tmp);
    return -1;
  }
  free(tmp);
  return 0;
}
