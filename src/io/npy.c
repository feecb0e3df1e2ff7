/* NumPy .npy reader (format versions 1.0, 2.0 and 3.0) for C-order arrays of one float or integer type, and the
 * float32 .npy writer.
 *
 * Layout: "\x93NUMPY", major, minor, header length (uint16 LE for v1, uint32 LE for v2/v3), then an
 * ASCII (v3: UTF-8) Python dict literal such as
 *   {'descr': '<f4', 'fortran_order': False, 'shape': (10000, 784), }
 * padded with spaces and ended by '\n', then the raw elements in the descr's byte order. The dict is parsed by a
 * small hand-written scanner that accepts exactly the literal forms NumPy writes (plus either quote
 * style, trailing commas and Python 2 "L" integer suffixes). Sizes are validated against
 * CUVAE_MAX_ELEMENTS and the real file size before the data buffer is allocated. Floats (f2, f4, f8) become
 * float32, integers int32 or int64 (uint8 stays uint8): see npy_dtype for the exact rules. */
#define _POSIX_C_SOURCE 200809L

#include "cuvae/data.h"
#include "cuvae/error.h"

#include <ctype.h>
#include <errno.h>
#include <float.h>
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
        return cuvae_error("%s: structured .npy dtypes are not supported (need one float or integer type)", path);
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

/* The element type a descr names ("<f8", ">i2", "|u1", ...): kind 'f', 'i' or 'u', its size in bytes and byte order,
 * and what it is converted to. */
typedef struct {
  char kind;
  size_t size;     /* bytes per element in the file */
  int big_endian;
  cuvae_dtype out; /* the array handed back */
  size_t out_size; /* bytes per element of out */
} npy_type;

/* The dtypes read, and what each becomes (exact unless said):
 *   floats  f2 f4 f8 (either byte order)  -> float32; f8 rounds to nearest, values whose rounding overflows float32
 *                                            are refused; non-finite values are refused for every float type
 *   u1 (any order mark)                   -> uint8 (the data loader scales images by 1/255)
 *   i1 i2 u2 i4 (either byte order)       -> int32
 *   u4 i8 u8 (either byte order)          -> int64; u8 values above INT64_MAX are refused
 * Anything else (bool, complex, strings, structured) is refused by name. */
static int npy_dtype(const char *path, const char *descr, npy_type *t) {
  const uint16_t probe = 1;
  unsigned char first;
  memcpy(&first, &probe, 1);
  /* byte order mark, kind letter, size in bytes: "<f8", "|u1", ">i2"; no mark ("u1") means native order */
  char marked[40];
  snprintf(marked, sizeof marked, "%s%s", isalpha((unsigned char)descr[0]) ? "=" : "", descr);
  const size_t len = strlen(marked);
  const char order = marked[0];
  int ok = len >= 3 && len <= 4 && strchr("<>|=", order) && isdigit((unsigned char)marked[2]) &&
           (len == 3 || isdigit((unsigned char)marked[3]));
  const long size = ok ? strtol(marked + 2, NULL, 10) : 0;
  memset(t, 0, sizeof *t);
  if (ok) {
    t->kind = marked[1];
    t->size = (size_t)size;
    t->big_endian = order == '>' || (order == '=' && first != 1);
    ok = size == 1 || order != '|'; /* '|' (no byte order) only for one-byte types */
  }
  if (ok && t->kind == 'f' && (size == 2 || size == 4 || size == 8)) {
    t->out = CUVAE_DTYPE_F32;
  } else if (ok && t->kind == 'u' && size == 1) {
    t->out = CUVAE_DTYPE_U8;
  } else if (ok && ((t->kind == 'i' && (size == 1 || size == 2 || size == 4)) || (t->kind == 'u' && size == 2))) {
    t->out = CUVAE_DTYPE_I32;
  } else if (ok && ((t->kind == 'i' && size == 8) || (t->kind == 'u' && (size == 4 || size == 8)))) {
    t->out = CUVAE_DTYPE_I64;
  } else {
    return cuvae_error("%s: unsupported .npy dtype '%s' (supported: float f2, f4, f8; integer u1, i1, i2, u2, i4, u4, "
                       "i8, u8; either byte order)",
                       path, descr);
  }
  t->out_size = t->out == CUVAE_DTYPE_U8 ? 1 : t->out == CUVAE_DTYPE_I64 ? 8 : 4;
  return 0;
}

/* The element at p as an unsigned integer of `size` bytes in the file's byte order. */
static uint64_t npy_load(const unsigned char *p, size_t size, int big_endian) {
  uint64_t v = 0;
  for (size_t b = 0; b < size; b++) v |= (uint64_t)p[big_endian ? size - 1 - b : b] << (8 * b);
  return v;
}

/* IEEE half-precision bits as a float (every half value is exactly a float). */
static float npy_half(uint16_t h) {
  const unsigned exp = (h >> 10) & 0x1f, man = h & 0x3ff;
  float v = exp == 0x1f ? (man ? NAN : INFINITY)
            : exp == 0  ? ldexpf((float)man, -24)
                        : ldexpf((float)(man | 0x400), (int)exp - 25);
  return (h & 0x8000) ? -v : v;
}

/* One float element of the file as float32; refuses non-finite values and f8 values outside float32's range. */
static int npy_float(const char *path, size_t i, const npy_type *t, uint64_t bits, float *out) {
  double d;
  if (t->size == 2) {
    d = npy_half((uint16_t)bits);
  } else if (t->size == 4) {
    uint32_t u = (uint32_t)bits;
    float f;
    memcpy(&f, &u, 4);
    d = f;
  } else {
    memcpy(&d, &bits, 8);
  }
  if (isnan(d)) return cuvae_error("%s: element %zu is NaN", path, i);
  if (isinf(d)) return cuvae_error("%s: element %zu is %sInf", path, i, d < 0 ? "-" : "+");
  *out = (float)d; /* rounds to nearest (the default rounding mode) */
  if (isinf(*out))
    return cuvae_error("%s: element %zu is %.9g, outside float32's range (magnitude at most %.9g)", path, i, d,
                       (double)FLT_MAX);
  return 0;
}

/* Converts `count` elements of type t at raw into its output type at dst (which may be raw itself when the output
 * element is no larger: element i is read before slot i is written, and slot i ends before element i + 1). */
static int npy_convert(const char *path, const npy_type *t, const unsigned char *raw, void *dst, size_t count) {
  const uint16_t probe = 1;
  unsigned char first;
  memcpy(&first, &probe, 1);
  if (t->kind == 'f' && t->size == 4 && t->big_endian == (first != 1)) { /* float32 in host order: check only */
    const float *x = (const float *)raw;
    float unused;
    for (size_t i = 0; i < count; i++) /* a non-finite element: npy_float says which and what */
      if (!isfinite(x[i])) return npy_float(path, i, t, npy_load(raw + 4 * i, 4, t->big_endian), &unused);
    return 0;
  }
  for (size_t i = 0; i < count; i++) {
    const uint64_t v = npy_load(raw + i * t->size, t->size, t->big_endian);
    unsigned char *o = (unsigned char *)dst + i * t->out_size;
    if (t->kind == 'f') {
      float f;
      if (npy_float(path, i, t, v, &f) != 0) return -1;
      memcpy(o, &f, 4);
    } else if (t->out == CUVAE_DTYPE_U8) {
      *o = (unsigned char)v;
    } else if (t->kind == 'u' && v > (uint64_t)INT64_MAX) {
      return cuvae_error("%s: element %zu is %" PRIu64 ", too large for int64", path, i, v);
    } else {
      const unsigned shift = 64 - 8 * (unsigned)t->size; /* sign-extend signed types, zero-extend unsigned ones */
      const int64_t x = t->kind == 'i' ? (int64_t)(v << shift) >> shift : (int64_t)v;
      if (t->out == CUVAE_DTYPE_I32) {
        const int32_t y = (int32_t)x; /* exact: the input fits 32 bits */
        memcpy(o, &y, 4);
      } else {
        memcpy(o, &x, 8);
      }
    }
  }
  return 0;
}

typedef struct {
  npy_type type;
  int ndim;
  uint64_t shape[4];
  uint64_t count;
  uint64_t data_offset; /* bytes before the elements */
} npy_info;

/* Preamble and header dict: the element type, the shape, where the data starts. */
static int npy_read_header(FILE *f, const char *path, uint64_t file_size, npy_info *info) {
  unsigned char pre[12];
  if (fread(pre, 1, 10, f) != 10 || memcmp(pre, "\x93NUMPY", 6) != 0)
    return cuvae_error("%s: not a .npy file (missing \\x93NUMPY magic)", path);
  const int major = pre[6], minor = pre[7];
  uint64_t hlen, pre_len;
  if (major == 1) {
    hlen = (uint64_t)pre[8] | (uint64_t)pre[9] << 8;
    pre_len = 10;
  } else if (major == 2 || major == 3) {
    if (fread(pre + 10, 1, 2, f) != 2) return cuvae_error("%s: file ends inside the .npy preamble", path);
    hlen = (uint64_t)pre[8] | (uint64_t)pre[9] << 8 | (uint64_t)pre[10] << 16 | (uint64_t)pre[11] << 24;
    pre_len = 12;
  } else {
    return cuvae_error("%s: unsupported .npy format version %d.%d (supported: 1.0, 2.0, 3.0)", path, major, minor);
  }
  if (hlen > NPY_MAX_HEADER || pre_len + hlen > file_size)
    return cuvae_error("%s: .npy header length %" PRIu64 " does not fit the file (%" PRIu64 " bytes)", path, hlen,
                       file_size);
  char *header = malloc(hlen + 1);
  if (!header) return cuvae_error("%s: out of memory reading the .npy header", path);
  npy_header h = {0};
  int rc = fread(header, 1, hlen, f) == hlen ? 0 : cuvae_error("%s: read error in the .npy header", path);
  if (rc == 0) {
    header[hlen] = '\0';
    rc = npy_parse_dict(path, header, hlen, &h);
  }
  free(header);
  if (rc != 0 || npy_dtype(path, h.descr, &info->type) != 0) return -1;
  if (h.fortran)
    return cuvae_error("%s: fortran_order True is not supported (save a C-order array, e.g. np.ascontiguousarray)",
                       path);
  if (h.ndim == 0) return cuvae_error("%s: 0-d (scalar) .npy arrays are not supported", path);
  info->ndim = h.ndim;
  memcpy(info->shape, h.shape, sizeof info->shape);
  info->data_offset = pre_len + hlen;
  return 0;
}

/* Element count: no zero dimension, no overflow, within the limit; then exactly matching the file. */
static int npy_check_size(const char *path, uint64_t file_size, npy_info *info) {
  char shape_str[128] = "";
  uint64_t count = 1;
  int absurd = 0;
  for (int d = 0; d < info->ndim; d++) {
    size_t len = strlen(shape_str);
    snprintf(shape_str + len, sizeof shape_str - len, d ? " x %" PRIu64 : "%" PRIu64, info->shape[d]);
    if (info->shape[d] == 0) return cuvae_error("%s: .npy shape has a zero dimension (empty array)", path);
    if (info->shape[d] > (uint64_t)CUVAE_MAX_ELEMENTS) absurd = 1;
    if (!absurd) { /* both factors <= 2^32: the product fits 64 bits */
      count *= info->shape[d];
      if (count > (uint64_t)CUVAE_MAX_ELEMENTS) absurd = 1;
    }
  }
  if (absurd || count * 8 > (uint64_t)SIZE_MAX)
    return cuvae_error("%s: absurd dimensions %s (more than %zu elements)", path, shape_str,
                       (size_t)CUVAE_MAX_ELEMENTS);
  const uint64_t bytes = count * info->type.size, have = file_size - info->data_offset;
  if (have != bytes)
    return cuvae_error("%s: header says %" PRIu64 " bytes of data, file has %" PRIu64, path, bytes, have);
  info->count = count;
  return 0;
}

/* Reads the elements and converts them (in place when the output element is no larger). *out: malloc'd. */
static int npy_read_data(FILE *f, const char *path, const npy_info *info, void **out) {
  const size_t count = (size_t)info->count, in_bytes = count * info->type.size;
  const size_t out_bytes = count * info->type.out_size;
  unsigned char *raw = malloc(in_bytes);
  if (!raw) return cuvae_error("%s: out of memory allocating %zu bytes", path, in_bytes);
  if (fread(raw, 1, in_bytes, f) != in_bytes) {
    free(raw);
    return cuvae_error("%s: read error in the .npy data", path);
  }
  const int in_place = info->type.out_size <= info->type.size;
  unsigned char *dst = in_place ? raw : malloc(out_bytes);
  if (!dst) {
    free(raw);
    return cuvae_error("%s: out of memory allocating %zu bytes", path, out_bytes);
  }
  if (npy_convert(path, &info->type, raw, dst, count) != 0) {
    if (!in_place) free(dst);
    free(raw);
    return -1;
  }
  if (!in_place) {
    free(raw);
  } else if (out_bytes < in_bytes) {
    unsigned char *shrunk = realloc(dst, out_bytes);
    if (shrunk) dst = shrunk;
  }
  *out = dst;
  return 0;
}

int cuvae_npy_read(const char *path, cuvae_array *out) {
  memset(out, 0, sizeof *out);
  if (!path) return cuvae_error("cuvae_npy_read: no path given");
  FILE *f = fopen(path, "rb");
  if (!f) return cuvae_error("cannot open %s: %s", path, strerror(errno));
  struct stat st;
  npy_info info;
  memset(&info, 0, sizeof info);
  void *data = NULL;
  int rc = -1;
  if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode))
    cuvae_error("cannot open %s: not a regular file", path);
  else if (npy_read_header(f, path, (uint64_t)st.st_size, &info) == 0 &&
           npy_check_size(path, (uint64_t)st.st_size, &info) == 0 && npy_read_data(f, path, &info, &data) == 0)
    rc = 0;
  fclose(f);
  if (rc != 0) return -1;
  out->dtype = info.type.out;
  out->ndim = info.ndim;
  for (int d = 0; d < info.ndim; d++) out->shape[d] = (size_t)info.shape[d];
  out->count = (size_t)info.count;
  out->data = data;
  return 0;
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
