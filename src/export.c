/* Export to / import from PyTorch (safetensors, .npy) and encode / decode of files; see include/cuvae/export.h
 * and docs/EXPORT.md. The safetensors format: u64 little-endian N, N bytes of JSON (an object: per tensor
 * {"dtype", "shape", "data_offsets": [begin, end]} with offsets relative to the data, plus "__metadata__", a
 * string-to-string map), padded with spaces, then the data: the tensors' bytes, little-endian, no holes. */
#define _POSIX_C_SOURCE 200809L

#include "cuvae/export.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "cuvae/data.h"
#include "cuvae/error.h"
#include "backend.h"
#include "inference.h"

#define EXPORT_FORMAT_NAME "cuvae-vae"
#define EXPORT_FORMAT_VERSION "1"

/* ---- the PyTorch names ------------------------------------------------------------------------------------- */

static int add_torch(cuvae_torch_tensor *out, int *n, const char *name, int rank, size_t s0, size_t s1,
                     size_t offset) {
  if (*n >= CUVAE_MAX_TENSORS) return cuvae_error("export: too many tensors");
  cuvae_torch_tensor *t = &out[(*n)++];
  snprintf(t->name, sizeof t->name, "%s", name);
  t->rank = rank;
  t->shape[0] = s0;
  t->shape[1] = rank == 2 ? s1 : 1;
  t->count = s0 * t->shape[1];
  t->offset = offset;
  return 0;
}

/* cuvae dense layer PREFIX.{weight,bias} -> TORCH.{weight,bias}. */
static int add_linear(const cuvae_model *m, cuvae_torch_tensor *out, int *n, const char *prefix, const char *torch) {
  char name[CUVAE_TENSOR_NAME + 8], tname[CUVAE_TORCH_NAME];
  snprintf(name, sizeof name, "%s.weight", prefix);
  const cuvae_tensor *w = cuvae_model_find(m, name);
  snprintf(name, sizeof name, "%s.bias", prefix);
  const cuvae_tensor *b = cuvae_model_find(m, name);
  if (!w || !b || w->rank != 2 || b->rank != 1) return cuvae_error("export: model has no dense layer '%s'", prefix);
  snprintf(tname, sizeof tname, "%s.weight", torch);
  if (add_torch(out, n, tname, 2, w->shape[0], w->shape[1], w->offset)) return -1;
  snprintf(tname, sizeof tname, "%s.bias", torch);
  return add_torch(out, n, tname, 1, b->shape[0], 1, b->offset);
}

int cuvae_torch_layout(const cuvae_model *m, cuvae_torch_tensor *out, int *n_out) {
  int n = 0;
  const int k = m->n_enc - 1; /* hidden layers */
  char prefix[32], torch[32];
  *n_out = 0;
  /* scripts/torch_vae_module.py holds the VAE with a fixed or one learned (shared) variance; the per-dim variance
   * head, a linear decoder under hidden layers and the label inputs have no place in it yet. */
  if (m->variance == CUVAE_VAR_LEARNED_PER_DIM)
    return cuvae_error("export: the per-dim variance head (dec.lv) is not in the PyTorch module yet; export "
                       "supports gaussian_variance = fixed or learned_shared");
  if (m->n_dec != m->n_enc || m->cond)
    return cuvae_error("export: the PyTorch module has a mirrored MLP decoder and no label input; export supports "
                       "decoder = mlp, conditional = false");
  for (int i = 0; i < k; i++) {
    snprintf(prefix, sizeof prefix, "enc.%d", i);
    snprintf(torch, sizeof torch, "encoder.%d", 2 * i);
    if (add_linear(m, out, &n, prefix, torch)) return -1;
  }
  /* The (mu, lv) head: adjacent in cuvae's buffer, so one [2Z, h] weight and one [2Z] bias, mu first. */
  const cuvae_tensor *mw = cuvae_model_find(m, "enc.mu.weight"), *lw = cuvae_model_find(m, "enc.lv.weight");
  const cuvae_tensor *mb = cuvae_model_find(m, "enc.mu.bias"), *lb = cuvae_model_find(m, "enc.lv.bias");
  if (!mw || !lw || !mb || !lb || lw->offset != mw->offset + mw->count || lb->offset != mb->offset + mb->count ||
      lw->shape[1] != mw->shape[1] || lw->shape[0] != mw->shape[0])
    return cuvae_error("export: the encoder heads enc.mu / enc.lv are not one contiguous [2Z, h] layer");
  if (add_torch(out, &n, "encoder_head.weight", 2, 2 * mw->shape[0], mw->shape[1], mw->offset) ||
      add_torch(out, &n, "encoder_head.bias", 1, 2 * mb->shape[0], 1, mb->offset))
    return -1;
  for (int i = 0; i < k; i++) {
    snprintf(prefix, sizeof prefix, "dec.%d", i);
    snprintf(torch, sizeof torch, "decoder.%d", 2 * i);
    if (add_linear(m, out, &n, prefix, torch)) return -1;
  }
  snprintf(torch, sizeof torch, "decoder.%d", 2 * k);
  if (add_linear(m, out, &n, "dec.out", torch)) return -1;
  /* learned_shared: the one log-variance, a [1] parameter of the module. */
  if (m->variance == CUVAE_VAR_LEARNED_SHARED && add_torch(out, &n, "decoder_logvar", 1, 1, 1, m->logvar)) return -1;
  *n_out = n;
  return 0;
}

static void shape_text(char *buf, size_t cap, int rank, const size_t *shape) {
  if (rank == 2)
    snprintf(buf, cap, "[%zu, %zu]", shape[0], shape[1]);
  else
    snprintf(buf, cap, "[%zu]", shape[0]);
}

static void hidden_text(const cuvae_config *cfg, char *buf, size_t cap) {
  buf[0] = '\0';
  for (int i = 0; i < cfg->n_hidden; i++) {
    size_t used = strlen(buf);
    snprintf(buf + used, cap - used, i ? ",%d" : "%d", cfg->hidden[i]);
  }
}

/* ---- atomic output files ----------------------------------------------------------------------------------- */

typedef struct out_file {
  const char *path;
  char *tmp;
  FILE *f;
  int err; /* first errno seen (or -1 for a short write without errno) */
} out_file;

static int out_open(out_file *o, const char *path) {
  memset(o, 0, sizeof *o);
  o->path = path;
  const size_t plen = strlen(path);
  o->tmp = malloc(plen + 32);
  if (!o->tmp) return cuvae_error("%s: out of memory", path);
  snprintf(o->tmp, plen + 32, "%s.tmp.%ld", path, (long)getpid());
  int fd = open(o->tmp, O_WRONLY | O_CREAT | O_EXCL, 0666);
  if (fd < 0) {
    cuvae_error("%s: cannot create temporary file %s: %s", path, o->tmp, strerror(errno));
    free(o->tmp);
    o->tmp = NULL;
    return -1;
  }
  o->f = fdopen(fd, "wb");
  if (!o->f) {
    cuvae_error("%s: cannot write temporary file %s: %s", path, o->tmp, strerror(errno));
    close(fd);
    unlink(o->tmp);
    free(o->tmp);
    o->tmp = NULL;
    return -1;
  }
  return 0;
}

static void out_write(out_file *o, const void *p, size_t n) {
  if (o->err || n == 0) return;
  errno = 0;
  if (fwrite(p, 1, n, o->f) != n) o->err = errno ? errno : -1;
}

/* Floats as little-endian binary32, whatever the host order. */
static void out_floats(out_file *o, const float *x, size_t n) {
  unsigned char chunk[1 << 14];
  for (size_t i = 0; i < n && !o->err;) {
    size_t k = 0;
    for (; k < sizeof chunk / 4 && i < n; k++, i++) {
      uint32_t u;
      memcpy(&u, &x[i], 4);
      for (int b = 0; b < 4; b++) chunk[4 * k + b] = (unsigned char)(u >> (8 * b));
    }
    out_write(o, chunk, 4 * k);
  }
}

/* Drops the temporary file (after a failure elsewhere). */
static void out_abort(out_file *o) {
  if (o->f) fclose(o->f);
  if (o->tmp) {
    unlink(o->tmp);
    free(o->tmp);
  }
  memset(o, 0, sizeof *o);
}

/* Flush, fsync, close, rename over the target; on failure the target is untouched and the temp file removed. */
static int out_commit(out_file *o) {
  if (!o->err && fflush(o->f) != 0) o->err = errno;
  if (!o->err && fsync(fileno(o->f)) != 0) o->err = errno;
  int rc = fclose(o->f);
  o->f = NULL;
  if (!o->err && rc != 0) o->err = errno;
  if (!o->err && rename(o->tmp, o->path) != 0) o->err = errno;
  if (o->err) {
    cuvae_error("%s: cannot write (temporary file %s): %s", o->path, o->tmp,
                o->err > 0 ? strerror(o->err) : "short write");
    out_abort(o);
    return -1;
  }
  free(o->tmp);
  memset(o, 0, sizeof *o);
  return 0;
}

/* fsync of the directory holding path, so a rename into it survives a crash (best effort). */
static void sync_parent(const char *path) {
  char *dir = strdup(path);
  if (!dir) return;
  size_t n = strlen(dir);
  while (n > 1 && dir[n - 1] == '/') dir[--n] = '\0';
  char *slash = strrchr(dir, '/');
  const char *d = ".";
  if (slash) {
    if (slash == dir)
      slash[1] = '\0';
    else
      *slash = '\0';
    d = dir;
  }
  int fd = open(d, O_RDONLY);
  if (fd >= 0) {
    (void)fsync(fd);
    close(fd);
  }
  free(dir);
}

/* ---- export ------------------------------------------------------------------------------------------------ */

static int add_meta(cJSON *meta, const char *key, const char *value) {
  return cJSON_AddStringToObject(meta, key, value) ? 0 : cuvae_error("export: out of memory building the header");
}

/* The __metadata__ map (string values only, as safetensors requires). */
static cJSON *build_metadata(const cuvae_inference *inf) {
  cJSON *meta = cJSON_CreateObject();
  char buf[256];
  if (!meta) {
    cuvae_error("export: out of memory building the header");
    return NULL;
  }
  int rc = add_meta(meta, "format", EXPORT_FORMAT_NAME);
  if (!rc) rc = add_meta(meta, "format_version", EXPORT_FORMAT_VERSION);
  if (!rc) rc = add_meta(meta, "module", "CuvaeVAE (scripts/torch_vae_module.py)");
  snprintf(buf, sizeof buf, "%zu", inf->model.input_dim);
  if (!rc) rc = add_meta(meta, "input_dim", buf);
  hidden_text(&inf->cfg, buf, sizeof buf);
  if (!rc) rc = add_meta(meta, "hidden", buf);
  snprintf(buf, sizeof buf, "%zu", inf->model.latent);
  if (!rc) rc = add_meta(meta, "latent", buf);
  if (!rc) rc = add_meta(meta, "likelihood", cuvae_likelihood_name(inf->cfg.likelihood));
  snprintf(buf, sizeof buf, "%.9g", (double)inf->cfg.sigma);
  if (!rc) rc = add_meta(meta, "sigma", buf);
  if (!rc) rc = add_meta(meta, "activation", cuvae_activation_name(inf->cfg.activation));
  if (!rc) rc = add_meta(meta, "gaussian_variance", inf->model.variance == CUVAE_VAR_LEARNED_SHARED ? "learned_shared"
                                                                                                     : "fixed");
  snprintf(buf, sizeof buf, "%" PRId64, inf->ck.step);
  if (!rc) rc = add_meta(meta, "step", buf);
  if (!rc) rc = add_meta(meta, "config", inf->ck.config_ini ? inf->ck.config_ini : "");
  if (rc) {
    cJSON_Delete(meta);
    return NULL;
  }
  return meta;
}

static cJSON *shape_json(const cuvae_torch_tensor *t) {
  cJSON *a = cJSON_CreateArray();
  for (int d = 0; a && d < t->rank; d++) {
    cJSON *v = cJSON_CreateNumber((double)t->shape[d]);
    if (!v || !cJSON_AddItemToArray(a, v)) {
      cJSON_Delete(v);
      cJSON_Delete(a);
      return NULL;
    }
  }
  return a;
}

/* Adds item to obj under key; on failure deletes item. */
static int add_item(cJSON *obj, const char *key, cJSON *item) {
  if (item && cJSON_AddItemToObject(obj, key, item)) return 0;
  cJSON_Delete(item);
  return -1;
}

/* {"dtype": "F32", "shape": [...]} plus data_offsets when begin != SIZE_MAX, plus "file" when given. */
static cJSON *tensor_json(const cuvae_torch_tensor *t, size_t begin, const char *file) {
  cJSON *o = cJSON_CreateObject();
  if (!o) return NULL;
  if (!cJSON_AddStringToObject(o, "dtype", "F32") || add_item(o, "shape", shape_json(t))) {
    cJSON_Delete(o);
    return NULL;
  }
  if (begin != SIZE_MAX) {
    const double off[2] = {(double)begin, (double)(begin + 4 * t->count)};
    if (add_item(o, "data_offsets", cJSON_CreateDoubleArray(off, 2))) {
      cJSON_Delete(o);
      return NULL;
    }
  }
  if (file && !cJSON_AddStringToObject(o, "file", file)) {
    cJSON_Delete(o);
    return NULL;
  }
  return o;
}

static int write_safetensors(const char *path, const cuvae_inference *inf, const cuvae_torch_tensor *t, int n) {
  struct stat st;
  if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
    return cuvae_error("%s: is a directory (give the path of the .safetensors file to write)", path);
  cJSON *root = cJSON_CreateObject();
  if (!root || add_item(root, "__metadata__", build_metadata(inf))) {
    cJSON_Delete(root);
    return cuvae_error("%s: cannot build the safetensors header: %s", path, cuvae_last_error());
  }
  size_t off = 0;
  for (int i = 0; i < n; i++) {
    if (add_item(root, t[i].name, tensor_json(&t[i], off, NULL))) {
      cJSON_Delete(root);
      return cuvae_error("%s: out of memory building the safetensors header", path);
    }
    off += 4 * t[i].count;
  }
  char *json = cJSON_PrintUnformatted(root);
  cJSON_Delete(root);
  if (!json) return cuvae_error("%s: out of memory printing the safetensors header", path);
  /* Spaces pad the header so the data starts 8-byte aligned (as the reference writer does). */
  const size_t len = strlen(json), pad = (8 - len % 8) % 8;
  const uint64_t hlen = (uint64_t)(len + pad);
  unsigned char prefix[8];
  for (int b = 0; b < 8; b++) prefix[b] = (unsigned char)(hlen >> (8 * b));

  out_file o;
  if (out_open(&o, path)) {
    free(json);
    return -1;
  }
  out_write(&o, prefix, 8);
  out_write(&o, json, len);
  out_write(&o, "        ", pad);
  free(json);
  for (int i = 0; i < n; i++) out_floats(&o, inf->ck.params + t[i].offset, t[i].count);
  if (out_commit(&o)) return -1;
  sync_parent(path);
  return 0;
}

/* 1 when the directory holds anything but "." and "..", 0 when empty, -1 when it cannot be read. */
static int dir_has_entries(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return -1;
  int found = 0;
  struct dirent *e;
  while (!found && (e = readdir(d)))
    if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) found = 1;
  closedir(d);
  return found;
}

static int write_npy_dir_at(const char *dir, const cuvae_inference *inf, const cuvae_torch_tensor *t, int n);

/* "out/" names the directory "out": the temporary directory must be its sibling, not its child. */
static int write_npy_dir(const char *path, const cuvae_inference *inf, const cuvae_torch_tensor *t, int n) {
  char *dir = strdup(path);
  if (!dir) return cuvae_error("%s: out of memory", path);
  size_t len = strlen(dir);
  while (len > 1 && dir[len - 1] == '/') dir[--len] = '\0';
  const int rc = write_npy_dir_at(dir, inf, t, n);
  free(dir);
  return rc;
}

static int write_npy_dir_at(const char *dir, const cuvae_inference *inf, const cuvae_torch_tensor *t, int n) {
  struct stat st;
  if (stat(dir, &st) == 0) {
    if (!S_ISDIR(st.st_mode)) return cuvae_error("%s: exists and is not a directory", dir);
    /* rename() below only replaces an EMPTY directory; say so up front instead of failing late. */
    if (dir_has_entries(dir) != 0)
      return cuvae_error("%s: already exists and is not empty; remove it or choose another --out", dir);
  }
  const size_t dlen = strlen(dir);
  char *tmp = malloc(dlen + 32), *file = malloc(dlen + 32 + CUVAE_TORCH_NAME + 16);
  if (!tmp || !file) {
    free(tmp);
    free(file);
    return cuvae_error("%s: out of memory", dir);
  }
  snprintf(tmp, dlen + 32, "%s.tmp.%ld", dir, (long)getpid());
  if (mkdir(tmp, 0777) != 0) {
    cuvae_error("%s: cannot create temporary directory %s: %s", dir, tmp, strerror(errno));
    free(tmp);
    free(file);
    return -1;
  }
  int written = 0, meta_written = 0, rc = 0;
  cJSON *root = cJSON_CreateObject(), *tensors = NULL;
  if (!root || add_item(root, "__metadata__", build_metadata(inf)) ||
      add_item(root, "tensors", cJSON_CreateObject()))
    rc = cuvae_error("%s: out of memory building metadata.json", dir);
  else
    tensors = cJSON_GetObjectItemCaseSensitive(root, "tensors");
  for (int i = 0; i < n && !rc; i++) {
    snprintf(file, dlen + 32 + CUVAE_TORCH_NAME + 16, "%s/%s.npy", tmp, t[i].name);
    if (cuvae_npy_write_f32(file, inf->ck.params + t[i].offset, t[i].rank, t[i].shape)) {
      rc = -1;
      break;
    }
    written = i + 1;
    char fname[CUVAE_TORCH_NAME + 8];
    snprintf(fname, sizeof fname, "%.*s.npy", CUVAE_TORCH_NAME - 1, t[i].name);
    if (add_item(tensors, t[i].name, tensor_json(&t[i], SIZE_MAX, fname)))
      rc = cuvae_error("%s: out of memory building metadata.json", dir);
  }
  if (!rc) {
    char *json = cJSON_Print(root);
    if (!json) rc = cuvae_error("%s: out of memory printing metadata.json", dir);
    snprintf(file, dlen + 32 + CUVAE_TORCH_NAME + 16, "%s/metadata.json", tmp);
    out_file o;
    if (!rc && out_open(&o, file) == 0) {
      out_write(&o, json, strlen(json));
      out_write(&o, "\n", 1);
      rc = out_commit(&o);
      meta_written = rc == 0;
    } else if (!rc) {
      rc = -1;
    }
    free(json);
  }
  cJSON_Delete(root);
  if (!rc) {
    int fd = open(tmp, O_RDONLY);
    if (fd >= 0) {
      (void)fsync(fd);
      close(fd);
    }
    if (rename(tmp, dir) != 0) {
      const int e = errno;
      if (e == ENOTEMPTY || e == EEXIST)
        rc = cuvae_error("%s: already exists and is not empty; remove it or choose another --out", dir);
      else
        rc = cuvae_error("%s: cannot rename %s into place: %s", dir, tmp, strerror(e));
    }
  }
  if (rc) { /* remove everything written into the temporary directory, then the directory */
    for (int i = 0; i < written; i++) {
      snprintf(file, dlen + 32 + CUVAE_TORCH_NAME + 16, "%s/%s.npy", tmp, t[i].name);
      unlink(file);
    }
    if (meta_written) {
      snprintf(file, dlen + 32 + CUVAE_TORCH_NAME + 16, "%s/metadata.json", tmp);
      unlink(file);
    }
    rmdir(tmp);
  } else {
    sync_parent(dir);
  }
  free(tmp);
  free(file);
  return rc;
}

int cuvae_export_checkpoint(const char *checkpoint_path, cuvae_export_format format, const char *out_path) {
  if (!out_path || !out_path[0]) return cuvae_error("export: no output path given");
  if (format != CUVAE_EXPORT_SAFETENSORS && format != CUVAE_EXPORT_NPY)
    return cuvae_error("export: unknown format %d", (int)format);
  cuvae_inference inf;
  if (cuvae_inference_open(&inf, checkpoint_path, NULL, CUVAE_SPLIT_NONE)) return -1;
  cuvae_torch_tensor t[CUVAE_MAX_TENSORS];
  int n = 0, rc = cuvae_torch_layout(&inf.model, t, &n);
  if (rc == 0)
    rc = format == CUVAE_EXPORT_SAFETENSORS ? write_safetensors(out_path, &inf, t, n)
                                            : write_npy_dir(out_path, &inf, t, n);
  cuvae_inference_close(&inf);
  return rc;
}

/* ---- import ------------------------------------------------------------------------------------------------ */

/* A JSON number that is an exact non-negative integer below 2^53. */
static int json_uint(const cJSON *v, uint64_t *out) {
  if (!cJSON_IsNumber(v)) return -1;
  const double d = v->valuedouble;
  if (!(d >= 0.0) || d > 9007199254740992.0 || d != floor(d)) return -1;
  *out = (uint64_t)d;
  return 0;
}

/* A metadata string that is a positive decimal integer. */
static int meta_uint(const char *s, uint64_t *out) {
  if (!s || !*s) return -1;
  uint64_t x = 0;
  for (const char *p = s; *p; p++) {
    if (*p < '0' || *p > '9' || x > (UINT64_MAX - 9) / 10) return -1;
    x = x * 10 + (uint64_t)(*p - '0');
  }
  *out = x;
  return x > 0 ? 0 : -1;
}

typedef struct span {
  int tensor;          /* index into the expected layout */
  uint64_t begin, end; /* data_offsets */
} span;

static int span_cmp(const void *a, const void *b) {
  const span *x = a, *y = b;
  return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end > y->end) - (x->end < y->end);
}

/* Architecture keys of __metadata__, when present, must describe the config it carries. */
static int check_meta_arch(const char *path, const cJSON *meta, const cuvae_config *cfg) {
  char want[256];
  const cJSON *v;
  if ((v = cJSON_GetObjectItemCaseSensitive(meta, "hidden"))) {
    hidden_text(cfg, want, sizeof want);
    if (strcmp(v->valuestring, want) != 0)
      return cuvae_error("%s: __metadata__ hidden is \"%s\" but its config says \"%s\"", path, v->valuestring, want);
  }
  if ((v = cJSON_GetObjectItemCaseSensitive(meta, "latent"))) {
    snprintf(want, sizeof want, "%d", cfg->latent);
    if (strcmp(v->valuestring, want) != 0)
      return cuvae_error("%s: __metadata__ latent is \"%s\" but its config says %s", path, v->valuestring, want);
  }
  if ((v = cJSON_GetObjectItemCaseSensitive(meta, "likelihood")) &&
      strcmp(v->valuestring, cuvae_likelihood_name(cfg->likelihood)) != 0)
    return cuvae_error("%s: __metadata__ likelihood is \"%s\" but its config says %s", path, v->valuestring,
                       cuvae_likelihood_name(cfg->likelihood));
  if ((v = cJSON_GetObjectItemCaseSensitive(meta, "activation")) &&
      strcmp(v->valuestring, cuvae_activation_name(cfg->activation)) != 0)
    return cuvae_error("%s: __metadata__ activation is \"%s\" but its config says %s", path, v->valuestring,
                       cuvae_activation_name(cfg->activation));
  if ((v = cJSON_GetObjectItemCaseSensitive(meta, "sigma"))) {
    char *end = NULL;
    const float s = strtof(v->valuestring, &end);
    if (!end || end == v->valuestring || *end || s != cfg->sigma)
      return cuvae_error("%s: __metadata__ sigma is \"%s\" but its config says %.9g", path, v->valuestring,
                         (double)cfg->sigma);
  }
  return 0;
}

/* Reads n floats stored little-endian at the file's current position into x. */
static int read_floats(FILE *f, float *x, size_t n) {
  unsigned char chunk[1 << 14];
  for (size_t i = 0; i < n;) {
    const size_t k = n - i < sizeof chunk / 4 ? n - i : sizeof chunk / 4;
    if (fread(chunk, 4, k, f) != k) return -1;
    for (size_t j = 0; j < k; j++, i++) {
      uint32_t u = 0;
      for (int b = 0; b < 4; b++) u |= (uint32_t)chunk[4 * j + b] << (8 * b);
      memcpy(&x[i], &u, 4);
    }
  }
  return 0;
}

int cuvae_import_safetensors(const char *path, cuvae_checkpoint *ck) {
  memset(ck, 0, sizeof *ck);
  if (!path) return cuvae_error("import: no path given");
  FILE *f = fopen(path, "rb");
  if (!f) return cuvae_error("%s: cannot open: %s", path, strerror(errno));
  int rc = -1;
  char *header = NULL, *cfg_name = NULL;
  cJSON *root = NULL;
  span *spans = NULL;
  float *params = NULL, *zeros_m = NULL, *zeros_v = NULL;
  cuvae_config cfg;
  cuvae_model model;
  cuvae_torch_tensor t[CUVAE_MAX_TENSORS];
  int nt = 0;
  struct stat st;

  if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
    cuvae_error("%s: not a regular file", path);
    goto done;
  }
  const uint64_t size = (uint64_t)st.st_size;
  unsigned char pre[8];
  if (size < 8 || fread(pre, 1, 8, f) != 8) {
    cuvae_error("%s: truncated: %" PRIu64 " bytes; a safetensors file starts with an 8-byte header length", path,
                size);
    goto done;
  }
  uint64_t hlen = 0;
  for (int b = 0; b < 8; b++) hlen |= (uint64_t)pre[b] << (8 * b);
  if (hlen < 2 || hlen > size - 8) {
    cuvae_error("%s: bad header length %" PRIu64 ": the file has %" PRIu64 " bytes after the 8-byte length "
                "(truncated, or not a safetensors file)",
                path, hlen, size - 8);
    goto done;
  }
  if (hlen > CUVAE_SAFETENSORS_MAX_HEADER) {
    cuvae_error("%s: bad header length %" PRIu64 ": more than the %" PRIu64 " MiB limit", path, hlen,
                CUVAE_SAFETENSORS_MAX_HEADER >> 20);
    goto done;
  }
  header = malloc((size_t)hlen + 1);
  if (!header) {
    cuvae_error("%s: out of memory for a %" PRIu64 "-byte header", path, hlen);
    goto done;
  }
  if (fread(header, 1, (size_t)hlen, f) != (size_t)hlen) {
    cuvae_error("%s: read error in the header", path);
    goto done;
  }
  header[hlen] = '\0';
  if (header[0] != '{') {
    cuvae_error("%s: not a safetensors file: the JSON header does not start with '{'", path);
    goto done;
  }
  const char *json_end = NULL;
  root = cJSON_ParseWithLengthOpts(header, (size_t)hlen, &json_end, 0);
  if (!root) {
    const char *at = cJSON_GetErrorPtr();
    long pos = at && at >= header && at <= header + hlen ? (long)(at - header) : -1;
    cuvae_error("%s: the header is not valid JSON (error at byte %ld of %" PRIu64 ": \"%.24s\")", path, pos, hlen,
                pos >= 0 ? at : "");
    goto done;
  }
  for (const char *p = json_end; p && p < header + hlen; p++)
    if (*p != ' ') {
      cuvae_error("%s: unexpected bytes after the JSON header (only space padding may follow it)", path);
      goto done;
    }
  if (!cJSON_IsObject(root)) {
    cuvae_error("%s: the header is not a JSON object", path);
    goto done;
  }

  /* __metadata__: strings only; input_dim and config rebuild the model. */
  const cJSON *meta = cJSON_GetObjectItemCaseSensitive(root, "__metadata__");
  if (!meta) {
    cuvae_error("%s: no __metadata__ in the header (cuvae needs its input_dim and config to rebuild the model; "
                "see docs/EXPORT.md)",
                path);
    goto done;
  }
  if (!cJSON_IsObject(meta)) {
    cuvae_error("%s: __metadata__ is not a JSON object", path);
    goto done;
  }
  for (const cJSON *v = meta->child; v; v = v->next)
    if (!cJSON_IsString(v)) {
      cuvae_error("%s: __metadata__ value '%s' is not a string", path, v->string ? v->string : "?");
      goto done;
    }
  const cJSON *cfg_text = cJSON_GetObjectItemCaseSensitive(meta, "config");
  const cJSON *dim_text = cJSON_GetObjectItemCaseSensitive(meta, "input_dim");
  if (!cfg_text || !dim_text) {
    cuvae_error("%s: __metadata__ has no '%s' (needed to rebuild the model)", path, !cfg_text ? "config" : "input_dim");
    goto done;
  }
  uint64_t input_dim = 0;
  if (meta_uint(dim_text->valuestring, &input_dim) || input_dim > CUVAE_MAX_PARAMS) {
    cuvae_error("%s: __metadata__ input_dim \"%.40s\" is not a positive integer", path, dim_text->valuestring);
    goto done;
  }
  const size_t nlen = strlen(path) + 32;
  cfg_name = malloc(nlen);
  if (!cfg_name) {
    cuvae_error("%s: out of memory", path);
    goto done;
  }
  snprintf(cfg_name, nlen, "%s [__metadata__ config]", path);
  cuvae_config_defaults(&cfg);
  if (cuvae_config_load_string(&cfg, cfg_text->valuestring, cfg_name) || cuvae_config_finalize(&cfg)) {
    cuvae_error("%s: __metadata__ config: %s", path, cuvae_last_error());
    goto done;
  }
  if (check_meta_arch(path, meta, &cfg)) goto done;
  if (cuvae_model_build(&model, (size_t)input_dim, &cfg) || cuvae_torch_layout(&model, t, &nt)) {
    cuvae_error("%s: %s", path, cuvae_last_error());
    goto done;
  }

  /* Every tensor entry: known, once, F32, the right shape, offsets inside the data. */
  const uint64_t data_size = size - 8 - hlen, data_start = 8 + hlen;
  spans = calloc((size_t)nt, sizeof *spans);
  if (!spans) {
    cuvae_error("%s: out of memory", path);
    goto done;
  }
  int seen[CUVAE_MAX_TENSORS] = {0};
  for (const cJSON *e = root->child; e; e = e->next) {
    const char *name = e->string ? e->string : "";
    if (strcmp(name, "__metadata__") == 0) {
      if (e != meta) {
        cuvae_error("%s: __metadata__ appears twice in the header", path);
        goto done;
      }
      continue;
    }
    int k = -1;
    for (int i = 0; i < nt; i++)
      if (strcmp(t[i].name, name) == 0) k = i;
    if (k < 0) {
      cuvae_error("%s: unexpected tensor '%.64s': not part of the model its __metadata__ describes (names: "
                  "docs/EXPORT.md)",
                  path, name);
      goto done;
    }
    if (seen[k]) {
      cuvae_error("%s: tensor '%s' appears twice in the header", path, name);
      goto done;
    }
    seen[k] = 1;
    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsObject(e) || !cJSON_IsString(dtype) || !cJSON_IsArray(shape) || !cJSON_IsArray(offs)) {
      cuvae_error("%s: tensor '%s' needs \"dtype\" (string), \"shape\" and \"data_offsets\" (arrays)", path, name);
      goto done;
    }
    if (strcmp(dtype->valuestring, "F32") != 0) {
      cuvae_error("%s: tensor '%s' has dtype %.16s; cuvae models are F32", path, name, dtype->valuestring);
      goto done;
    }
    char want[64], got[128] = "[";
    shape_text(want, sizeof want, t[k].rank, t[k].shape);
    int rank = cJSON_GetArraySize(shape), shape_ok = rank == t[k].rank;
    int d = 0;
    for (const cJSON *s = shape->child; s; s = s->next, d++) {
      uint64_t v = 0;
      const int valid = json_uint(s, &v) == 0;
      size_t used = strlen(got);
      if (valid)
        snprintf(got + used, sizeof got - used, "%s%" PRIu64, d ? ", " : "", v);
      else
        snprintf(got + used, sizeof got - used, "%s?", d ? ", " : "");
      if (!valid || d >= t[k].rank || v != t[k].shape[d]) shape_ok = 0;
    }
    strncat(got, "]", sizeof got - strlen(got) - 1);
    if (!shape_ok) {
      cuvae_error("%s: tensor '%s' has shape %s, expected %s for the model in __metadata__", path, name, got, want);
      goto done;
    }
    uint64_t b = 0, en = 0;
    if (cJSON_GetArraySize(offs) != 2 || json_uint(cJSON_GetArrayItem(offs, 0), &b) ||
        json_uint(cJSON_GetArrayItem(offs, 1), &en) || en < b) {
      cuvae_error("%s: tensor '%s' has malformed data_offsets (need [begin, end], integers, begin <= end)", path,
                  name);
      goto done;
    }
    if (en > data_size) {
      cuvae_error("%s: tensor '%s' has data_offsets [%" PRIu64 ", %" PRIu64 "], out of range: the data is %" PRIu64
                  " bytes (truncated file?)",
                  path, name, b, en, data_size);
      goto done;
    }
    if (en - b != 4 * (uint64_t)t[k].count) {
      cuvae_error("%s: tensor '%s' has data_offsets [%" PRIu64 ", %" PRIu64 "] (%" PRIu64
                  " bytes) but F32 %s needs %" PRIu64,
                  path, name, b, en, en - b, want, 4 * (uint64_t)t[k].count);
      goto done;
    }
    spans[k] = (span){k, b, en};
  }
  for (int i = 0; i < nt; i++)
    if (!seen[i]) {
      char want[64];
      shape_text(want, sizeof want, t[i].rank, t[i].shape);
      cuvae_error("%s: tensor '%s' is missing (the model in __metadata__ needs F32 %s)", path, t[i].name, want);
      goto done;
    }
  /* The data: covered exactly once, no overlaps, no holes, nothing after the last tensor. */
  qsort(spans, (size_t)nt, sizeof *spans, span_cmp);
  uint64_t pos = 0;
  for (int i = 0; i < nt; i++) {
    if (spans[i].begin < pos) {
      const span *p = &spans[i - 1];
      cuvae_error("%s: tensors '%s' [%" PRIu64 ", %" PRIu64 ") and '%s' [%" PRIu64 ", %" PRIu64 ") overlap", path,
                  t[p->tensor].name, p->begin, p->end, t[spans[i].tensor].name, spans[i].begin, spans[i].end);
      goto done;
    }
    if (spans[i].begin > pos) {
      cuvae_error("%s: data bytes [%" PRIu64 ", %" PRIu64 ") belong to no tensor (safetensors data has no holes)", path,
                  pos, spans[i].begin);
      goto done;
    }
    pos = spans[i].end;
  }
  if (pos != data_size) {
    cuvae_error("%s: %" PRIu64 " unexpected bytes after the last tensor's data", path, data_size - pos);
    goto done;
  }

  /* The values, straight into cuvae's layout. */
  params = malloc(model.n_params * sizeof *params);
  zeros_m = calloc(model.n_params, sizeof *zeros_m);
  zeros_v = calloc(model.n_params, sizeof *zeros_v);
  if (!params || !zeros_m || !zeros_v) {
    cuvae_error("%s: out of memory for %zu parameters", path, model.n_params);
    goto done;
  }
  for (int i = 0; i < nt; i++) {
    const span *s = &spans[i];
    const cuvae_torch_tensor *tt = &t[s->tensor];
    if (fseeko(f, (off_t)(data_start + s->begin), SEEK_SET) != 0 || read_floats(f, params + tt->offset, tt->count)) {
      cuvae_error("%s: read error in the data of tensor '%s'", path, tt->name);
      goto done;
    }
    for (size_t j = 0; j < tt->count; j++)
      if (!isfinite(params[tt->offset + j])) {
        cuvae_error("%s: tensor '%s' element %zu is %s", path, tt->name, j,
                    isnan(params[tt->offset + j]) ? "NaN" : "infinite");
        goto done;
      }
  }

  ck->config_ini = strdup(cfg_text->valuestring);
  if (!ck->config_ini) {
    cuvae_error("%s: out of memory", path);
    goto done;
  }
  ck->input_dim = input_dim;
  ck->n_tensors = model.n_tensors;
  memcpy(ck->tensors, model.tensors, sizeof model.tensors);
  ck->n_params = model.n_params;
  ck->params = params;
  ck->adam_m = zeros_m;
  ck->adam_v = zeros_v;
  params = zeros_m = zeros_v = NULL;
  ck->step = 0;
  ck->rng_offset = 0;
  rc = 0;

done:
  fclose(f);
  free(header);
  free(cfg_name);
  free(spans);
  free(params);
  free(zeros_m);
  free(zeros_v);
  cJSON_Delete(root);
  if (rc) {
    free(ck->config_ini);
    memset(ck, 0, sizeof *ck);
  }
  return rc;
}

int cuvae_import_to_checkpoint(const char *safetensors_path, const char *out_path) {
  if (!out_path || !out_path[0]) return cuvae_error("import: no output path given");
  cuvae_checkpoint ck;
  if (cuvae_import_safetensors(safetensors_path, &ck)) return -1;
  const int rc = cuvae_checkpoint_save(out_path, &ck);
  cuvae_checkpoint_free(&ck);
  return rc;
}

/* ---- encode / decode --------------------------------------------------------------------------------------- */

static void fill_info(cuvae_codec_info *info, const cuvae_inference *inf, size_t rows, size_t cols) {
  if (!info) return;
  info->rows = rows;
  info->cols = cols;
  snprintf(info->device, sizeof info->device, "%s", inf->be && inf->be->name ? inf->be->name : "?");
}

/* A conditional model needs one label per row (from labels_path); other models take none. */
static int codec_labels(const cuvae_inference *inf, const char *labels_path, size_t n, const char *what,
                        int32_t **labels) {
  *labels = NULL;
  if (!inf->model.cond) {
    if (labels_path && labels_path[0])
      return cuvae_error("--labels: the model is not conditional ([model] conditional = false)");
    return 0;
  }
  if (!labels_path || !labels_path[0])
    return cuvae_error("the model is conditional: give each row's class with --labels FILE (IDX or .npy, 1-D)");
  if (cuvae_labels_load(labels_path, n, what, labels)) return -1;
  return cuvae_backend_check_labels(&inf->model, *labels, n, labels_path);
}

int cuvae_encode_file(const char *checkpoint_path, const char *device, const char *data_path, const char *labels_path,
                      const char *out_path, cuvae_codec_info *info) {
  if (!data_path || !out_path) return cuvae_error("encode: need an input and an output path");
  cuvae_inference inf;
  cuvae_dataset ds;
  memset(&ds, 0, sizeof ds);
  if (cuvae_inference_open(&inf, checkpoint_path, device ? device : "auto", CUVAE_SPLIT_NONE)) return -1;
  int rc = cuvae_dataset_load(&ds, data_path, NULL);
  const size_t D = inf.model.input_dim, Z2 = 2 * inf.model.latent;
  if (rc == 0 && ds.dim != D)
    rc = cuvae_error("%s: has %zu features per row, but the model in %s takes D = %zu", data_path, ds.dim,
                     checkpoint_path, D);
  float *mulv = NULL;
  if (rc == 0 && ds.n > SIZE_MAX / sizeof(float) / Z2) rc = cuvae_error("%s: too many rows", data_path);
  if (rc == 0 && !(mulv = malloc(ds.n * Z2 * sizeof *mulv)))
    rc = cuvae_error("%s: out of memory for %zu x %zu outputs", out_path, ds.n, Z2);
  int32_t *labels = NULL;
  if (rc == 0) rc = codec_labels(&inf, labels_path, ds.n, data_path, &labels);
  if (rc == 0) rc = inf.be->encode(inf.be, ds.x, labels, ds.n, mulv);
  free(labels);
  if (rc == 0) {
    const size_t shape[2] = {ds.n, Z2};
    rc = cuvae_npy_write_f32(out_path, mulv, 2, shape);
  }
  if (rc == 0) fill_info(info, &inf, ds.n, Z2);
  free(mulv);
  cuvae_dataset_free(&ds);
  cuvae_inference_close(&inf);
  return rc;
}

int cuvae_decode_file(const char *checkpoint_path, const char *device, const char *z_path, const char *labels_path,
                      const char *out_path, cuvae_codec_info *info) {
  if (!z_path || !out_path) return cuvae_error("decode: need an input and an output path");
  cuvae_inference inf;
  cuvae_array z;
  memset(&z, 0, sizeof z);
  if (cuvae_inference_open(&inf, checkpoint_path, device ? device : "auto", CUVAE_SPLIT_NONE)) return -1;
  const size_t D = inf.model.input_dim, Z = inf.model.latent;
  int rc = cuvae_npy_read(z_path, &z);
  if (rc == 0 && z.dtype != CUVAE_DTYPE_F32)
    rc = cuvae_error("%s: latent vectors must be float32 ('<f4'), e.g. np.asarray(z, dtype=np.float32)", z_path);
  if (rc == 0 && z.ndim != 2)
    rc = cuvae_error("%s: expected a 2-D array [N, Z] of latent vectors, got %d dimension%s", z_path, z.ndim,
                     z.ndim == 1 ? "" : "s");
  if (rc == 0 && z.shape[1] != Z)
    rc = cuvae_error("%s: has %zu columns, but the model in %s has latent size Z = %zu", z_path, z.shape[1],
                     checkpoint_path, Z);
  float *mean = NULL;
  const size_t n = rc == 0 ? z.shape[0] : 0;
  if (rc == 0 && n > SIZE_MAX / sizeof(float) / D) rc = cuvae_error("%s: too many rows", z_path);
  if (rc == 0 && !(mean = malloc(n * D * sizeof *mean)))
    rc = cuvae_error("%s: out of memory for %zu x %zu outputs", out_path, n, D);
  int32_t *labels = NULL;
  if (rc == 0) rc = codec_labels(&inf, labels_path, n, z_path, &labels);
  if (rc == 0) rc = inf.be->decode(inf.be, (const float *)z.data, labels, n, mean);
  free(labels);
  if (rc == 0) {
    const size_t shape[2] = {n, D};
    rc = cuvae_npy_write_f32(out_path, mean, 2, shape);
  }
  if (rc == 0) fill_info(info, &inf, n, D);
  free(mean);
  cuvae_array_free(&z);
  cuvae_inference_close(&inf);
  return rc;
}
