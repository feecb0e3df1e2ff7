/* Checkpoint files: layout, atomic save and verified load. The byte-exact format is in docs/CHECKPOINT.md;
 * the constants and offsets below must stay in step with it. */
#define _POSIX_C_SOURCE 200809L

#include "cuvae/checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "crash_point.h"
#include "cuvae/error.h"

static const unsigned char CK_MAGIC[8] = {'C', 'U', 'V', 'A', 'E', 'C', 'K', '\0'};

enum {
  CK_PREFIX = 16,             /* magic, u32 version, u32 header bytes */
  CK_HEAD_FIXED = 44,         /* u64 file length, input_dim, step, rng_offset, n_params; u32 n_tensors */
  CK_TENSOR_BYTES = 68,       /* name[32], u32 rank, u64 shape[2], u64 offset, u64 count */
  CK_CONFIG_LEN = 8,          /* u64 config length */
  CK_PROGRESS = 72,           /* version 2: the training progress block after the config text */
  CK_STATE = 88,              /* version 3: the progress block's continuation and the optimizer block after it */
  CK_MAX_WINDOW = 1 << 16,    /* floats of a skip window, at most (the config allows 4096) */
  CK_CRC = 4,
  CK_MIN_FILE = CK_PREFIX + CK_HEAD_FIXED + CK_CONFIG_LEN + CK_CRC, /* 72: no tensors, no config, no data */
  CK_CHUNK = 1 << 16          /* bytes per read/write/CRC step */
};
#define CK_MAX_CONFIG ((uint64_t)16 << 20)        /* 16 MiB of INI text is far more than any config */
#define CK_MAX_FILE ((uint64_t)64 << 30)          /* refuse to even look at files larger than 64 GiB */

/* ---- little-endian encoding ------------------------------------------------------------------------ */

static void put_u32(unsigned char *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void put_u64(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t get_u32(const unsigned char *p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; i++) v |= (uint32_t)p[i] << (8 * i);
  return v;
}
static uint64_t get_u64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
  return v;
}
static void put_f64(unsigned char *p, double x) {
  uint64_t v;
  memcpy(&v, &x, 8);
  put_u64(p, v);
}
static double get_f64(const unsigned char *p) {
  uint64_t v = get_u64(p);
  double x;
  memcpy(&x, &v, 8);
  return x;
}

/* zlib's crc32 takes a 32-bit length; feed it in pieces. */
static uint32_t crc_update(uint32_t crc, const unsigned char *p, size_t n) {
  while (n > 0) {
    uInt piece = n > (1u << 30) ? (1u << 30) : (uInt)n;
    crc = (uint32_t)crc32(crc, p, piece);
    p += piece;
    n -= piece;
  }
  return crc;
}

static size_t header_bytes_for(int n_tensors, uint64_t config_len) {
  return CK_HEAD_FIXED + (size_t)n_tensors * CK_TENSOR_BYTES + CK_CONFIG_LEN + (size_t)config_len;
}

/* ---- validation shared by save and load ------------------------------------------------------------ */

/* Checks the layout table against n_params; `what` prefixes the message (the path plus context). */
static int validate_layout(const char *what, int n_tensors, const cuvae_tensor *t, uint64_t n_params) {
  if (n_params == 0 || n_params > CUVAE_MAX_PARAMS)
    return cuvae_error("%s: parameter count %llu is outside 1..%llu", what, (unsigned long long)n_params,
                       (unsigned long long)CUVAE_MAX_PARAMS);
  if (n_tensors < 1 || n_tensors > CUVAE_MAX_TENSORS)
    return cuvae_error("%s: %d tensors in the layout table (expected 1..%d)", what, n_tensors, CUVAE_MAX_TENSORS);
  for (int i = 0; i < n_tensors; i++) {
    const cuvae_tensor *a = &t[i];
    size_t len = strnlen(a->name, CUVAE_TENSOR_NAME);
    if (len == 0 || len == CUVAE_TENSOR_NAME)
      return cuvae_error("%s: tensor %d has an empty or unterminated name", what, i);
    for (size_t k = 0; k < len; k++)
      if (a->name[k] <= ' ' || a->name[k] > '~')
        return cuvae_error("%s: tensor %d has a name with byte 0x%02x (names are printable ASCII)", what, i,
                           (unsigned)(unsigned char)a->name[k]);
    for (int j = 0; j < i; j++)
      if (strcmp(t[j].name, a->name) == 0)
        return cuvae_error("%s: tensors %d and %d are both named '%s'", what, j, i, a->name);
    if (a->rank != 1 && a->rank != 2)
      return cuvae_error("%s: tensor %d '%s' has rank %d (expected 1 or 2)", what, i, a->name, a->rank);
    if (a->shape[0] == 0 || a->shape[1] == 0 || (a->rank == 1 && a->shape[1] != 1))
      return cuvae_error("%s: tensor %d '%s' has invalid shape [%zu, %zu] for rank %d", what, i, a->name,
                         a->shape[0], a->shape[1], a->rank);
    /* shape product, offset + count: compare by division/subtraction so nothing can overflow */
    if (a->shape[0] > n_params / a->shape[1] || a->count != a->shape[0] * a->shape[1]) {
      char s[64];
      cuvae_tensor_shape_string(a, s, sizeof s);
      return cuvae_error("%s: tensor %d '%s' has count %zu but shape %s", what, i, a->name, a->count, s);
    }
    if (a->offset > n_params || a->count > n_params - a->offset)
      return cuvae_error("%s: tensor %d '%s' (offset %zu, count %zu) runs past the %llu parameters", what, i,
                         a->name, a->offset, a->count, (unsigned long long)n_params);
    for (int j = 0; j < i; j++)
      if (a->offset < t[j].offset + t[j].count && t[j].offset < a->offset + a->count)
        return cuvae_error("%s: tensor %d '%s' overlaps tensor %d '%s'", what, i, a->name, j, t[j].name);
  }
  return 0;
}

/* NaN/Inf never belongs in a checkpoint: it is written only from a good training state. */
static int check_finite(const char *what, const char *array, const float *x, uint64_t n) {
  for (uint64_t i = 0; i < n; i++)
    if (!isfinite(x[i]))
      return cuvae_error("%s: contains non-finite parameters (%s[%llu] = %g)", what, array,
                         (unsigned long long)i, (double)x[i]);
  return 0;
}

/* The training progress block: counts within the step count, finite sums, times finite and not negative. */
static int validate_progress(const char *what, const cuvae_train_progress *p, int64_t step) {
  if (p->epoch_skipped > p->epoch_steps || !isfinite(p->sum_grad_norm) || !isfinite(p->max_grad_norm) ||
      !isfinite(p->best_val_nelbo) || p->best_epoch < 0 || p->bad_epochs < 0)
    return cuvae_error("%s: training progress: skip counts, gradient norms or the best epoch out of range", what);
  if (p->epoch_steps > (uint64_t)step)
    return cuvae_error("%s: training progress counts %llu steps of the current epoch, more than the %lld steps done",
                       what, (unsigned long long)p->epoch_steps, (long long)step);
  const double v[6] = {p->sum_nelbo, p->sum_recon, p->sum_kl, p->sum_objective, p->epoch_seconds, p->train_seconds};
  static const char *const names[6] = {"sum_nelbo", "sum_recon", "sum_kl", "sum_objective", "epoch_seconds",
                                       "train_seconds"};
  for (int i = 0; i < 6; i++)
    if (!isfinite(v[i]) || (i >= 4 && v[i] < 0.0))
      return cuvae_error("%s: training progress field %s is %g", what, names[i], v[i]);
  return 0;
}

/* The skip rule's state: counts within the step count, the window's length and position within bounds. */
static int validate_skip(const char *what, const cuvae_skip_record *k, int64_t step) {
  if (k->skipped < 0 || k->skipped > step || k->in_a_row < 0 || k->in_a_row > k->skipped || k->count < 0 ||
      k->count > (int64_t)k->window_len || k->pos < 0 || (k->window_len > 0 && k->pos >= (int64_t)k->window_len) ||
      (k->window_len == 0 && k->pos != 0) || k->window_len > CK_MAX_WINDOW || (k->window_len > 0 && !k->window))
    return cuvae_error("%s: the skip state is out of range (skipped %lld, in a row %lld, window %lld of %u at %lld)",
                       what, (long long)k->skipped, (long long)k->in_a_row, (long long)k->count, k->window_len,
                       (long long)k->pos);
  return 0;
}

static int validate_checkpoint(const char *path, const cuvae_checkpoint *ck) {
  char what[CUVAE_PATH_MAX + 64];
  snprintf(what, sizeof what, "%s: refusing to save checkpoint", path);
  if (validate_layout(what, ck->n_tensors, ck->tensors, ck->n_params) != 0) return -1;
  if (!ck->params || !ck->adam_m || !ck->adam_v)
    return cuvae_error("%s: a parameter or Adam moment array is missing", what);
  if (ck->step < 0) return cuvae_error("%s: negative step %lld", what, (long long)ck->step);
  if (ck->input_dim == 0) return cuvae_error("%s: input dimension is 0", what);
  if (validate_progress(what, &ck->progress, ck->step) != 0) return -1;
  if (ck->config_ini && strlen(ck->config_ini) > CK_MAX_CONFIG)
    return cuvae_error("%s: config text is %zu bytes (limit %llu)", what, strlen(ck->config_ini),
                       (unsigned long long)CK_MAX_CONFIG);
  if (check_finite(what, "params", ck->params, ck->n_params) != 0 ||
      check_finite(what, "adam_m", ck->adam_m, ck->n_params) != 0 ||
      check_finite(what, "adam_v", ck->adam_v, ck->n_params) != 0 ||
      (ck->ema && check_finite(what, "ema", ck->ema, ck->n_params) != 0))
    return -1;
  return validate_skip(what, &ck->skip, ck->step);
}

/* ---- save ------------------------------------------------------------------------------------------ */

/* params, m, v, then (version 3) the EMA when kept and the skip window. */
static uint64_t payload_bytes(uint64_t n_params, int has_ema, uint32_t window_len) {
  return 4 * ((3 + (has_ema ? 1 : 0)) * n_params + window_len);
}

/* The version-3 block (CK_STATE bytes): the progress block's continuation, then the optimizer block. */
static void encode_state(unsigned char *p, const cuvae_checkpoint *ck) {
  const cuvae_train_progress *g = &ck->progress;
  put_u64(p, g->epoch_skipped);
  put_f64(p + 8, g->sum_grad_norm);
  put_f64(p + 16, g->max_grad_norm);
  put_f64(p + 24, g->best_val_nelbo);
  put_u64(p + 32, (uint64_t)g->best_epoch);
  put_u64(p + 40, (uint64_t)g->bad_epochs);
  const cuvae_skip_record *k = &ck->skip;
  put_u64(p + 48, (uint64_t)k->skipped);
  put_u64(p + 56, (uint64_t)k->in_a_row);
  put_u64(p + 64, (uint64_t)k->count);
  put_u64(p + 72, (uint64_t)k->pos);
  put_u32(p + 80, k->window_len);
  put_u32(p + 84, ck->ema ? 1u : 0u);
}

/* The prefix and header, as bytes (see docs/CHECKPOINT.md). Returns a malloc'd buffer of *len bytes. */
static unsigned char *encode_head(const cuvae_checkpoint *ck, size_t *len) {
  const char *cfg = ck->config_ini ? ck->config_ini : "";
  uint64_t cfg_len = strlen(cfg);
  size_t hb = header_bytes_for(ck->n_tensors, cfg_len) + CK_PROGRESS + CK_STATE;
  unsigned char *b = calloc(1, CK_PREFIX + hb);
  if (!b) return NULL;
  unsigned char *p = b;
  memcpy(p, CK_MAGIC, 8);
  put_u32(p + 8, CUVAE_CHECKPOINT_VERSION);
  put_u32(p + 12, (uint32_t)hb);
  p += CK_PREFIX;
  put_u64(p, CK_PREFIX + hb + payload_bytes(ck->n_params, ck->ema != NULL, ck->skip.window_len) + CK_CRC);
  put_u64(p + 8, ck->input_dim);
  put_u64(p + 16, (uint64_t)ck->step);
  put_u64(p + 24, ck->rng_offset);
  put_u64(p + 32, ck->n_params);
  put_u32(p + 40, (uint32_t)ck->n_tensors);
  p += CK_HEAD_FIXED;
  for (int i = 0; i < ck->n_tensors; i++, p += CK_TENSOR_BYTES) {
    const cuvae_tensor *t = &ck->tensors[i];
    memcpy(p, t->name, strnlen(t->name, CUVAE_TENSOR_NAME)); /* rest stays zero (NUL padding) */
    put_u32(p + 32, (uint32_t)t->rank);
    put_u64(p + 36, t->shape[0]);
    put_u64(p + 44, t->shape[1]);
    put_u64(p + 52, t->offset);
    put_u64(p + 60, t->count);
  }
  put_u64(p, cfg_len);
  memcpy(p + CK_CONFIG_LEN, cfg, cfg_len);
  p += CK_CONFIG_LEN + cfg_len;
  const cuvae_train_progress *g = &ck->progress;
  put_u64(p, g->epoch_steps);
  const double sums[6] = {g->sum_nelbo, g->sum_recon, g->sum_kl, g->sum_objective, g->epoch_seconds,
                          g->train_seconds};
  for (int i = 0; i < 6; i++) put_f64(p + 8 + 8 * i, sums[i]);
  put_u64(p + 56, g->metrics_bytes);
  put_u64(p + 64, g->steps_bytes);
  encode_state(p + CK_PROGRESS, ck);
  *len = CK_PREFIX + hb;
  return b;
}

/* fwrite with CRC; 0 or -1 with errno describing the failure (ENOSPC etc.; EIO if the C library said nothing). */
static int write_bytes(FILE *f, const void *p, size_t n, uint32_t *crc) {
  errno = 0;
  if (fwrite(p, 1, n, f) != n) {
    if (errno == 0) errno = EIO;
    return -1;
  }
  *crc = crc_update(*crc, p, n);
  return 0;
}

/* Floats go out as little-endian bytes via a staging buffer, so the file is the same on any host. */
static int write_floats(FILE *f, const float *x, uint64_t n, uint32_t *crc) {
  unsigned char buf[CK_CHUNK];
  while (n > 0) {
    size_t m = n > CK_CHUNK / 4 ? CK_CHUNK / 4 : (size_t)n;
    for (size_t i = 0; i < m; i++) {
      uint32_t u;
      memcpy(&u, &x[i], 4);
      put_u32(buf + 4 * i, u);
    }
    if (write_bytes(f, buf, 4 * m, crc) != 0) return -1;
    x += m;
    n -= m;
  }
  return 0;
}

/* Makes the rename durable. Filesystems that cannot sync a directory (EINVAL) are not an error. */
static int sync_parent_dir(const char *path) {
  const char *slash = strrchr(path, '/');
  char dir[CUVAE_PATH_MAX + 8];
  if (!slash) {
    strcpy(dir, ".");
  } else if (slash == path) {
    strcpy(dir, "/");
  } else {
    size_t n = (size_t)(slash - path);
    if (n >= sizeof dir) {
      errno = ENAMETOOLONG;
      return -1;
    }
    memcpy(dir, path, n);
    dir[n] = '\0';
  }
  int fd = open(dir, O_RDONLY);
  if (fd < 0) return -1;
  int rc = fsync(fd);
  int err = errno;
  close(fd);
  if (rc != 0 && err == EINVAL) return 0;
  errno = err;
  return rc;
}

int cuvae_checkpoint_save(const char *path, const cuvae_checkpoint *ck) {
  if (!path || !ck) return cuvae_error("checkpoint save: null path or checkpoint");
  if (strlen(path) >= CUVAE_PATH_MAX) return cuvae_error("%s: checkpoint path is too long", path);
  if (validate_checkpoint(path, ck) != 0) return -1;

  size_t head_len = 0;
  unsigned char *head = encode_head(ck, &head_len);
  if (!head) return cuvae_error("%s: out of memory encoding the checkpoint header", path);
  char tmp[CUVAE_PATH_MAX + 8];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);

  FILE *f = fopen(tmp, "wb");
  if (!f) {
    int err = errno;
    free(head);
    return cuvae_error("%s: cannot create temporary file %s: %s", path, tmp, strerror(err));
  }
  /* Everything up to and including fclose; `step` names the stage that failed. */
  const char *step = "write";
  uint32_t crc = 0;
  unsigned char crc_bytes[4];
  int ok = write_bytes(f, head, head_len, &crc) == 0 && write_floats(f, ck->params, ck->n_params, &crc) == 0;
  if (ok) cuvae_crash_point("checkpoint-write", ck->step, f);
  ok = ok && write_floats(f, ck->adam_m, ck->n_params, &crc) == 0 &&
           write_floats(f, ck->adam_v, ck->n_params, &crc) == 0 &&
           (!ck->ema || write_floats(f, ck->ema, ck->n_params, &crc) == 0) &&
           write_floats(f, ck->skip.window, ck->skip.window_len, &crc) == 0;
  if (ok) {
    uint32_t unused = 0;
    put_u32(crc_bytes, crc);
    ok = write_bytes(f, crc_bytes, 4, &unused) == 0;
  }
  if (ok && fflush(f) != 0) {
    ok = 0;
    step = "flush";
  }
  if (ok && fsync(fileno(f)) != 0) {
    ok = 0;
    step = "fsync";
  }
  int err = errno;
  free(head);
  if (fclose(f) != 0 && ok) {
    ok = 0;
    step = "close";
    err = errno;
  }
  if (!ok) {
    remove(tmp);
    return cuvae_error("%s: cannot %s temporary file %s: %s", path, step, tmp, strerror(err));
  }
  cuvae_crash_point("checkpoint-rename", ck->step, NULL);
  if (rename(tmp, path) != 0) {
    err = errno;
    remove(tmp);
    return cuvae_error("%s: cannot rename %s over it: %s", path, tmp, strerror(err));
  }
  if (sync_parent_dir(path) != 0)
    return cuvae_error("%s: checkpoint written, but its directory could not be synced: %s", path,
                       strerror(errno));
  return 0;
}

/* ---- load ------------------------------------------------------------------------------------------ */

/* fread exactly n bytes; a short read is reported as truncation or as the I/O error it was. */
static int read_exact(FILE *f, const char *path, void *p, size_t n) {
  if (fread(p, 1, n, f) == n) return 0;
  if (ferror(f)) return cuvae_error("%s: read error: %s", path, strerror(errno));
  return cuvae_error("%s: truncated: file ended early", path);
}

static int read_floats(FILE *f, const char *path, float *x, uint64_t n, uint32_t *crc) {
  unsigned char buf[CK_CHUNK];
  while (n > 0) {
    size_t m = n > CK_CHUNK / 4 ? CK_CHUNK / 4 : (size_t)n;
    if (read_exact(f, path, buf, 4 * m) != 0) return -1;
    *crc = crc_update(*crc, buf, 4 * m);
    for (size_t i = 0; i < m; i++) {
      uint32_t u = get_u32(buf + 4 * i);
      memcpy(&x[i], &u, 4);
    }
    x += m;
    n -= m;
  }
  return 0;
}

/* Checks everything that can be judged from the first bytes and the file size: magic, version, lengths. */
static int check_prefix(const char *path, const unsigned char *b, size_t got, uint64_t size) {
  size_t m = got < 8 ? got : 8;
  if (memcmp(b, CK_MAGIC, m) != 0) return cuvae_error("%s: not a cuvae checkpoint (wrong magic)", path);
  if (got < 12)
    return cuvae_error("%s: truncated: %llu bytes, a checkpoint is at least %d", path,
                       (unsigned long long)size, CK_MIN_FILE);
  uint32_t version = get_u32(b + 8);
  if (version < 1 || version > CUVAE_CHECKPOINT_VERSION)
    return cuvae_error("%s: format version %u is not supported (this build reads 1 to %u)", path, version,
                       CUVAE_CHECKPOINT_VERSION);
  if (size < CK_MIN_FILE)
    return cuvae_error("%s: truncated: %llu bytes, a checkpoint is at least %d", path,
                       (unsigned long long)size, CK_MIN_FILE);
  if (got < CK_PREFIX + 8) return cuvae_error("%s: truncated: file ended early", path);
  uint64_t file_len = get_u64(b + CK_PREFIX);
  if (size < file_len)
    return cuvae_error("%s: truncated: file is %llu bytes, its header says %llu", path,
                       (unsigned long long)size, (unsigned long long)file_len);
  if (size > file_len)
    return cuvae_error("%s: %llu unexpected bytes after the end of the checkpoint (file is %llu bytes, its "
                       "header says %llu)", path, (unsigned long long)(size - file_len),
                       (unsigned long long)size, (unsigned long long)file_len);
  return 0;
}

/* Pass 1: CRC of every byte before the last four, compared with those four. */
static int check_crc(FILE *f, const char *path, uint64_t size, uint32_t *crc_out) {
  unsigned char buf[CK_CHUNK];
  uint32_t crc = 0;
  uint64_t left = size - CK_CRC;
  rewind(f);
  while (left > 0) {
    size_t n = left > CK_CHUNK ? CK_CHUNK : (size_t)left;
    if (read_exact(f, path, buf, n) != 0) return -1;
    crc = crc_update(crc, buf, n);
    left -= n;
  }
  if (read_exact(f, path, buf, CK_CRC) != 0) return -1;
  uint32_t stored = get_u32(buf);
  if (stored != crc)
    return cuvae_error("%s: checksum mismatch: file is corrupt (stored CRC32 0x%08x, computed 0x%08x)", path,
                       stored, crc);
  *crc_out = crc;
  return 0;
}

/* The version-3 block (see encode_state); the window length and EMA flag were read with the sizes. */
static void decode_state(const unsigned char *p, cuvae_checkpoint *out) {
  cuvae_train_progress *g = &out->progress;
  g->epoch_skipped = get_u64(p);
  g->sum_grad_norm = get_f64(p + 8);
  g->max_grad_norm = get_f64(p + 16);
  g->best_val_nelbo = get_f64(p + 24);
  g->best_epoch = (int64_t)get_u64(p + 32);
  g->bad_epochs = (int64_t)get_u64(p + 40);
  cuvae_skip_record *k = &out->skip;
  k->skipped = (int64_t)get_u64(p + 48);
  k->in_a_row = (int64_t)get_u64(p + 56);
  k->count = (int64_t)get_u64(p + 64);
  k->pos = (int64_t)get_u64(p + 72);
}

/* The version-3 arrays read_state_arrays fills: the EMA (when the file has one) and the skip window. */
static int alloc_state_arrays(const char *path, cuvae_checkpoint *out, int has_ema) {
  if (has_ema && !(out->ema = malloc((size_t)out->n_params * sizeof(float))))
    return cuvae_error("%s: out of memory for the EMA of %llu parameters", path, (unsigned long long)out->n_params);
  if (out->skip.window_len && !(out->skip.window = malloc(out->skip.window_len * sizeof(float))))
    return cuvae_error("%s: out of memory for the skip window", path);
  return 0;
}

/* Decodes and checks the header (prefix already checked) into `out`, allocating config_ini. */
static int parse_head(const char *path, const unsigned char *b, uint64_t size, cuvae_checkpoint *out) {
  uint32_t hb = get_u32(b + 12);
  out->version = get_u32(b + 8);
  /* the blocks after the config text: progress (version 2), state (version 3) */
  const size_t progress_len = (out->version >= 2 ? CK_PROGRESS : 0) + (out->version >= 3 ? CK_STATE : 0);
  const unsigned char *p = b + CK_PREFIX;
  out->input_dim = get_u64(p + 8);
  out->step = (int64_t)get_u64(p + 16);
  out->rng_offset = get_u64(p + 24);
  out->n_params = get_u64(p + 32);
  uint32_t nt = get_u32(p + 40);
  if (nt < 1 || nt > CUVAE_MAX_TENSORS)
    return cuvae_error("%s: %u tensors in the layout table (expected 1..%d)", path, nt, CUVAE_MAX_TENSORS);
  out->n_tensors = (int)nt;
  size_t table_end = header_bytes_for(out->n_tensors, 0);
  if (hb < table_end + progress_len)
    return cuvae_error("%s: truncated: header is %u bytes, too short for %u tensors", path, hb, nt);
  uint64_t cfg_len = get_u64(p + table_end - CK_CONFIG_LEN);
  if (cfg_len > CK_MAX_CONFIG || header_bytes_for(out->n_tensors, cfg_len) + progress_len != hb)
    return cuvae_error("%s: truncated: header is %u bytes, but its tables and %llu bytes of config need %llu",
                       path, hb, (unsigned long long)cfg_len,
                       (unsigned long long)(table_end + progress_len + (cfg_len > CK_MAX_CONFIG ? 0 : cfg_len)));
  if (out->n_params == 0 || out->n_params > CUVAE_MAX_PARAMS)
    return cuvae_error("%s: parameter count %llu is outside 1..%llu", path, (unsigned long long)out->n_params,
                       (unsigned long long)CUVAE_MAX_PARAMS);
  const unsigned char *state = b + CK_PREFIX + hb - CK_STATE;  /* version 3 */
  const int has_ema = out->version >= 3 && get_u32(state + 84) == 1u;
  out->skip.window_len = out->version >= 3 ? get_u32(state + 80) : 0;
  if (out->version >= 3 && (get_u32(state + 84) > 1u || out->skip.window_len > CK_MAX_WINDOW))
    return cuvae_error("%s: bad optimizer block (EMA flag %u, skip window of %u norms)", path, get_u32(state + 84),
                       out->skip.window_len);
  uint64_t payload = payload_bytes(out->n_params, has_ema, out->skip.window_len);
  if (CK_PREFIX + (uint64_t)hb + payload + CK_CRC != size)
    return cuvae_error("%s: truncated: %llu parameters need %llu bytes of data, the file holds %llu", path,
                       (unsigned long long)out->n_params, (unsigned long long)payload,
                       (unsigned long long)(size - CK_PREFIX - hb - CK_CRC));
  if (out->step < 0) return cuvae_error("%s: negative step %lld", path, (long long)out->step);
  if (out->input_dim == 0) return cuvae_error("%s: input dimension is 0", path);
  if (alloc_state_arrays(path, out, has_ema)) return -1;

  /* the layout table; size_t holds every value once it is bounded by n_params <= CUVAE_MAX_PARAMS */
  const unsigned char *t = p + CK_HEAD_FIXED;
  for (int i = 0; i < out->n_tensors; i++, t += CK_TENSOR_BYTES) {
    cuvae_tensor *d = &out->tensors[i];
    uint64_t v[5] = {get_u32(t + 32), get_u64(t + 36), get_u64(t + 44), get_u64(t + 52), get_u64(t + 60)};
    for (int k = 0; k < 5; k++)
      if (v[k] > out->n_params)
        return cuvae_error("%s: tensor %d has a field value %llu larger than the parameter count", path, i,
                           (unsigned long long)v[k]);
    memcpy(d->name, t, CUVAE_TENSOR_NAME);
    if (memchr(d->name, '\0', CUVAE_TENSOR_NAME) == NULL)
      return cuvae_error("%s: tensor %d has an unterminated name", path, i);
    d->rank = (int)v[0];
    d->shape[0] = (size_t)v[1];
    d->shape[1] = (size_t)v[2];
    d->offset = (size_t)v[3];
    d->count = (size_t)v[4];
  }
  if (validate_layout(path, out->n_tensors, out->tensors, out->n_params) != 0) return -1;

  const char *cfg = (const char *)t + CK_CONFIG_LEN;
  if (memchr(cfg, '\0', (size_t)cfg_len) != NULL)
    return cuvae_error("%s: config text contains a NUL byte", path);
  out->config_ini = malloc((size_t)cfg_len + 1);
  if (!out->config_ini) return cuvae_error("%s: out of memory for the config text", path);
  memcpy(out->config_ini, cfg, (size_t)cfg_len);
  out->config_ini[cfg_len] = '\0';
  if (progress_len == 0) return 0;
  const unsigned char *g = (const unsigned char *)cfg + cfg_len;
  cuvae_train_progress *pr = &out->progress;
  pr->epoch_steps = get_u64(g);
  double *const sums[6] = {&pr->sum_nelbo, &pr->sum_recon, &pr->sum_kl, &pr->sum_objective, &pr->epoch_seconds,
                           &pr->train_seconds};
  for (int i = 0; i < 6; i++) *sums[i] = get_f64(g + 8 + 8 * i);
  pr->metrics_bytes = get_u64(g + 56);
  pr->steps_bytes = get_u64(g + 64);
  if (out->version >= 3) decode_state(g + CK_PROGRESS, out);
  return validate_progress(path, pr, out->step);
}

/* The version-3 arrays after Adam's moments (allocated by parse_head): the EMA when the file has one, the window. */
static int read_state_arrays(FILE *f, const char *path, cuvae_checkpoint *out, uint32_t *crc) {
  if (out->ema && read_floats(f, path, out->ema, out->n_params, crc) != 0) return -1;
  return read_floats(f, path, out->skip.window, out->skip.window_len, crc);
}

/* Everything after opening: pass 1 verifies the CRC, pass 2 decodes (re-checking the CRC, in case the file
 * changed in between). `out` may hold allocations on failure; the caller frees them. */
static int load_from(FILE *f, const char *path, cuvae_checkpoint *out) {
  struct stat st;
  if (fstat(fileno(f), &st) != 0) return cuvae_error("%s: cannot stat: %s", path, strerror(errno));
  if (!S_ISREG(st.st_mode)) return cuvae_error("%s: not a regular file", path);
  uint64_t size = (uint64_t)st.st_size;
  if (size > CK_MAX_FILE)
    return cuvae_error("%s: file is %llu bytes, more than the %llu a checkpoint may have", path,
                       (unsigned long long)size, (unsigned long long)CK_MAX_FILE);

  unsigned char prefix[CK_PREFIX + 8];
  size_t got = fread(prefix, 1, sizeof prefix, f);
  if (got < sizeof prefix && ferror(f)) return cuvae_error("%s: read error: %s", path, strerror(errno));
  if (got == 0)
    return cuvae_error("%s: truncated: file is empty, a checkpoint is at least %d bytes", path, CK_MIN_FILE);
  if (check_prefix(path, prefix, got, size) != 0) return -1;
  uint32_t crc1 = 0;
  if (check_crc(f, path, size, &crc1) != 0) return -1;

  /* pass 2: header (its length is bounded by the file size, checked against it above) */
  uint32_t hb = get_u32(prefix + 12);
  if (hb < CK_HEAD_FIXED + CK_CONFIG_LEN || (uint64_t)hb > size - CK_PREFIX - CK_CRC)
    return cuvae_error("%s: truncated: header length %u does not fit a %llu-byte file", path, hb,
                       (unsigned long long)size);
  unsigned char *head = malloc(CK_PREFIX + (size_t)hb);
  if (!head) return cuvae_error("%s: out of memory for a %u-byte header", path, hb);
  rewind(f);
  int rc = read_exact(f, path, head, CK_PREFIX + (size_t)hb);
  uint32_t crc2 = crc_update(0, head, CK_PREFIX + (size_t)hb);
  if (rc == 0) rc = parse_head(path, head, size, out);
  free(head);
  if (rc != 0) return -1;

  /* payload: sizes are now known to match the file exactly */
  size_t bytes = (size_t)out->n_params * sizeof(float);
  if (out->n_params > SIZE_MAX / sizeof(float)) return cuvae_error("%s: too many parameters for this host", path);
  out->params = malloc(bytes);
  out->adam_m = malloc(bytes);
  out->adam_v = malloc(bytes);
  if (!out->params || !out->adam_m || !out->adam_v)
    return cuvae_error("%s: out of memory for %llu parameters", path, (unsigned long long)out->n_params);
  if (read_floats(f, path, out->params, out->n_params, &crc2) != 0 ||
      read_floats(f, path, out->adam_m, out->n_params, &crc2) != 0 ||
      read_floats(f, path, out->adam_v, out->n_params, &crc2) != 0)
    return -1;
  if (read_state_arrays(f, path, out, &crc2)) return -1;
  if (crc2 != crc1) return cuvae_error("%s: file changed while it was being read", path);
  if (check_finite(path, "params", out->params, out->n_params) != 0 ||
      check_finite(path, "adam_m", out->adam_m, out->n_params) != 0 ||
      check_finite(path, "adam_v", out->adam_v, out->n_params) != 0 ||
      (out->ema && check_finite(path, "ema", out->ema, out->n_params) != 0))
    return -1;
  return validate_skip(path, &out->skip, out->step);
}

int cuvae_checkpoint_load(const char *path, cuvae_checkpoint *ck) {
  if (!ck) return cuvae_error("checkpoint load: null checkpoint");
  memset(ck, 0, sizeof *ck);
  if (!path) return cuvae_error("checkpoint load: null path");
  FILE *f = fopen(path, "rb");
  if (!f) return cuvae_error("%s: cannot open checkpoint: %s", path, strerror(errno));
  cuvae_checkpoint out;
  memset(&out, 0, sizeof out);
  int rc = load_from(f, path, &out);
  fclose(f);
  if (rc != 0) {
    cuvae_checkpoint_free(&out);
    return -1;
  }
  *ck = out;
  return 0;
}

void cuvae_checkpoint_free(cuvae_checkpoint *ck) {
  if (!ck) return;
  free(ck->config_ini);
  free(ck->params);
  free(ck->adam_m);
  free(ck->adam_v);
  free(ck->ema);
  free(ck->skip.window);
  memset(ck, 0, sizeof *ck);
}
