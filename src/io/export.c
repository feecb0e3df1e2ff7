/* Export to PyTorch (safetensors, .npy directory); import is src/io/import.c, encode / decode of files
 * src/engine/codec_file.c; see include/cuvae/export.h and docs/EXPORT.md. The safetensors format: u64 little-endian N, N bytes of JSON (an object: per tensor
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
#include "export_internal.h"
#include "saved_model.h"


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

void export_shape_text(char *buf, size_t cap, int rank, const size_t *shape) {
  if (rank == 2)
    snprintf(buf, cap, "[%zu, %zu]", shape[0], shape[1]);
  else
    snprintf(buf, cap, "[%zu]", shape[0]);
}

void export_hidden_text(const cuvae_config *cfg, char *buf, size_t cap) {
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
static cJSON *build_metadata(const cuvae_saved_model *sm) {
  cJSON *meta = cJSON_CreateObject();
  char buf[256];
  if (!meta) {
    cuvae_error("export: out of memory building the header");
    return NULL;
  }
  int rc = add_meta(meta, "format", EXPORT_FORMAT_NAME);
  if (!rc) rc = add_meta(meta, "format_version", EXPORT_FORMAT_VERSION);
  if (!rc) rc = add_meta(meta, "module", "CuvaeVAE (scripts/torch_vae_module.py)");
  snprintf(buf, sizeof buf, "%zu", sm->model.input_dim);
  if (!rc) rc = add_meta(meta, "input_dim", buf);
  export_hidden_text(&sm->cfg, buf, sizeof buf);
  if (!rc) rc = add_meta(meta, "hidden", buf);
  snprintf(buf, sizeof buf, "%zu", sm->model.latent);
  if (!rc) rc = add_meta(meta, "latent", buf);
  if (!rc) rc = add_meta(meta, "likelihood", cuvae_likelihood_name(sm->cfg.likelihood));
  snprintf(buf, sizeof buf, "%.9g", (double)sm->cfg.sigma);
  if (!rc) rc = add_meta(meta, "sigma", buf);
  if (!rc) rc = add_meta(meta, "activation", cuvae_activation_name(sm->cfg.activation));
  if (!rc) rc = add_meta(meta, "gaussian_variance", sm->model.variance == CUVAE_VAR_LEARNED_SHARED ? "learned_shared"
                                                                                                     : "fixed");
  snprintf(buf, sizeof buf, "%" PRId64, sm->ck.step);
  if (!rc) rc = add_meta(meta, "step", buf);
  if (!rc) rc = add_meta(meta, "weights", sm->ema ? "ema" : "trained");  /* --weights, src/io/saved_model.h */
  if (!rc) rc = add_meta(meta, "config", sm->ck.config_ini ? sm->ck.config_ini : "");
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

static int write_safetensors(const char *path, const cuvae_saved_model *sm, const cuvae_torch_tensor *t, int n) {
  struct stat st;
  if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
    return cuvae_error("%s: is a directory (give the path of the .safetensors file to write)", path);
  cJSON *root = cJSON_CreateObject();
  if (!root || add_item(root, "__metadata__", build_metadata(sm))) {
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
  for (int i = 0; i < n; i++) out_floats(&o, sm->ck.params + t[i].offset, t[i].count);
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

static int write_npy_dir_at(const char *dir, const cuvae_saved_model *sm, const cuvae_torch_tensor *t, int n);

/* "out/" names the directory "out": the temporary directory must be its sibling, not its child. */
static int write_npy_dir(const char *path, const cuvae_saved_model *sm, const cuvae_torch_tensor *t, int n) {
  char *dir = strdup(path);
  if (!dir) return cuvae_error("%s: out of memory", path);
  size_t len = strlen(dir);
  while (len > 1 && dir[len - 1] == '/') dir[--len] = '\0';
  const int rc = write_npy_dir_at(dir, sm, t, n);
  free(dir);
  return rc;
}

/* The directory an npy export writes to may not exist yet, or be an empty directory. */
static int check_npy_dir(const char *dir) {
  struct stat st;
  if (stat(dir, &st) == 0) {
    if (!S_ISDIR(st.st_mode)) return cuvae_error("%s: exists and is not a directory", dir);
    /* rename() below only replaces an EMPTY directory; say so up front instead of failing late. */
    if (dir_has_entries(dir) != 0)
      return cuvae_error("%s: already exists and is not empty; remove it or choose another --out", dir);
  }
  return 0;
}

/* The temporary sibling directory an npy export is written into, then renamed into place. */
typedef struct npy_stage {
  const char *dir;             /* the destination */
  char *tmp;                   /* DIR.tmp.PID */
  char *file;                  /* room for the path of one file in tmp */
  size_t file_cap;
  int written, meta_written;   /* tensor files written so far; whether metadata.json was */
} npy_stage;

static int stage_open(npy_stage *st, const char *dir) {
  memset(st, 0, sizeof *st);
  st->dir = dir;
  const size_t dlen = strlen(dir);
  st->file_cap = dlen + 32 + CUVAE_TORCH_NAME + 16;
  st->tmp = malloc(dlen + 32);
  st->file = malloc(st->file_cap);
  if (!st->tmp || !st->file) {
    free(st->tmp);
    free(st->file);
    return cuvae_error("%s: out of memory", dir);
  }
  snprintf(st->tmp, dlen + 32, "%s.tmp.%ld", dir, (long)getpid());
  if (mkdir(st->tmp, 0777) != 0) {
    cuvae_error("%s: cannot create temporary directory %s: %s", dir, st->tmp, strerror(errno));
    free(st->tmp);
    free(st->file);
    return -1;
  }
  return 0;
}

/* One .npy file per tensor, each entered in `tensors` (metadata.json's "tensors" object). */
static int stage_tensors(npy_stage *st, const cuvae_saved_model *sm, const cuvae_torch_tensor *t, int n,
                         cJSON *tensors) {
  for (int i = 0; i < n; i++) {
    snprintf(st->file, st->file_cap, "%s/%s.npy", st->tmp, t[i].name);
    if (cuvae_npy_write_f32(st->file, sm->ck.params + t[i].offset, t[i].rank, t[i].shape)) return -1;
    st->written = i + 1;
    char fname[CUVAE_TORCH_NAME + 8];
    snprintf(fname, sizeof fname, "%.*s.npy", CUVAE_TORCH_NAME - 1, t[i].name);
    if (add_item(tensors, t[i].name, tensor_json(&t[i], SIZE_MAX, fname)))
      return cuvae_error("%s: out of memory building metadata.json", st->dir);
  }
  return 0;
}

static int stage_metadata(npy_stage *st, const cJSON *root) {
  char *json = cJSON_Print(root);
  int rc = json ? 0 : cuvae_error("%s: out of memory printing metadata.json", st->dir);
  snprintf(st->file, st->file_cap, "%s/metadata.json", st->tmp);
  out_file o;
  if (!rc && out_open(&o, st->file) == 0) {
    out_write(&o, json, strlen(json));
    out_write(&o, "\n", 1);
    rc = out_commit(&o);
    st->meta_written = rc == 0;
  } else if (!rc) {
    rc = -1;
  }
  free(json);
  return rc;
}

/* The tensors and metadata.json into the temporary directory. */
static int stage_write(npy_stage *st, const cuvae_saved_model *sm, const cuvae_torch_tensor *t, int n) {
  int rc = 0;
  cJSON *root = cJSON_CreateObject();
  if (!root || add_item(root, "__metadata__", build_metadata(sm)) ||
      add_item(root, "tensors", cJSON_CreateObject()))
    rc = cuvae_error("%s: out of memory building metadata.json", st->dir);
  if (!rc) rc = stage_tensors(st, sm, t, n, cJSON_GetObjectItemCaseSensitive(root, "tensors"));
  if (!rc) rc = stage_metadata(st, root);
  cJSON_Delete(root);
  return rc;
}

static int stage_commit(const npy_stage *st) {
  int fd = open(st->tmp, O_RDONLY);
  if (fd >= 0) {
    (void)fsync(fd);
    close(fd);
  }
  if (rename(st->tmp, st->dir) == 0) return 0;
  const int e = errno;
  if (e == ENOTEMPTY || e == EEXIST)
    return cuvae_error("%s: already exists and is not empty; remove it or choose another --out", st->dir);
  return cuvae_error("%s: cannot rename %s into place: %s", st->dir, st->tmp, strerror(e));
}

/* Removes everything written into the temporary directory, then the directory. */
static void stage_discard(npy_stage *st, const cuvae_torch_tensor *t) {
  for (int i = 0; i < st->written; i++) {
    snprintf(st->file, st->file_cap, "%s/%s.npy", st->tmp, t[i].name);
    unlink(st->file);
  }
  if (st->meta_written) {
    snprintf(st->file, st->file_cap, "%s/metadata.json", st->tmp);
    unlink(st->file);
  }
  rmdir(st->tmp);
}

static int write_npy_dir_at(const char *dir, const cuvae_saved_model *sm, const cuvae_torch_tensor *t, int n) {
  npy_stage st;
  if (check_npy_dir(dir) || stage_open(&st, dir)) return -1;
  int rc = stage_write(&st, sm, t, n);
  if (!rc) rc = stage_commit(&st);
  if (rc)
    stage_discard(&st, t);
  else
    sync_parent(dir);
  free(st.tmp);
  free(st.file);
  return rc;
}

int cuvae_export_checkpoint(const char *checkpoint_path, cuvae_export_format format, const char *out_path) {
  if (!out_path || !out_path[0]) return cuvae_error("export: no output path given");
  if (format != CUVAE_EXPORT_SAFETENSORS && format != CUVAE_EXPORT_NPY)
    return cuvae_error("export: unknown format %d", (int)format);
  cuvae_saved_model sm;
  if (cuvae_saved_model_open(&sm, checkpoint_path)) return -1;
  cuvae_torch_tensor t[CUVAE_MAX_TENSORS];
  int n = 0, rc = cuvae_torch_layout(&sm.model, t, &n);
  if (rc == 0)
    rc = format == CUVAE_EXPORT_SAFETENSORS ? write_safetensors(out_path, &sm, t, n)
                                            : write_npy_dir(out_path, &sm, t, n);
  cuvae_saved_model_close(&sm);
  return rc;
}
