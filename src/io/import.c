/* Import from PyTorch: a safetensors file written by `cuvae export` (or by the safetensors package from the
 * CuvaeVAE module) back into a checkpoint, checked tensor by tensor against the layout its config implies
 * (include/cuvae/export.h, docs/EXPORT.md). */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cuvae/data.h"
#include "cuvae/error.h"
#include "cuvae/export.h"
#include "export_internal.h"

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
    export_hidden_text(cfg, want, sizeof want);
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

/* The 8-byte little-endian header length at the start of the file, checked against the file's size. A length that
 * does not fit is told apart as a truncated safetensors file (the JSON header's '{' follows the length) or as a file
 * that is no safetensors file at all (text, a checkpoint, ...). */
static int read_header_length(FILE *f, const char *path, uint64_t size, uint64_t *hlen_out) {
  unsigned char pre[9];
  const size_t got = fread(pre, 1, sizeof pre, f);
  if (size < 8 || got < 8)
    return cuvae_error("%s: truncated: %" PRIu64 " bytes; a safetensors file starts with an 8-byte header length", path,
                       size);
  uint64_t hlen = 0;
  for (int b = 0; b < 8; b++) hlen |= (uint64_t)pre[b] << (8 * b);
  const int json_follows = got == 9 && pre[8] == '{';
  if (json_follows && hlen > size - 8 && hlen <= CUVAE_SAFETENSORS_MAX_HEADER)
    return cuvae_error("%s: truncated: bad header length %" PRIu64 ": only %" PRIu64 " bytes follow the 8-byte length",
                       path, hlen, size - 8);
  if (hlen < 2 || hlen > size - 8)
    return cuvae_error("%s is not a safetensors file (bad header length: its first 8 bytes read as %" PRIu64
                       ", but the file has %" PRIu64 " bytes)",
                       path, hlen, size);
  if (hlen > CUVAE_SAFETENSORS_MAX_HEADER)
    return cuvae_error("%s: bad header length %" PRIu64 ": more than the %" PRIu64 " MiB limit", path, hlen,
                       CUVAE_SAFETENSORS_MAX_HEADER >> 20);
  if (fseeko(f, 8, SEEK_SET) != 0) return cuvae_error("%s: cannot seek: %s", path, strerror(errno));
  *hlen_out = hlen;
  return 0;
}

/* The JSON header after the length: one object, followed by nothing but space padding. NULL with a message. */
static cJSON *read_header_json(FILE *f, const char *path, uint64_t hlen) {
  char *header = malloc((size_t)hlen + 1);
  if (!header) {
    cuvae_error("%s: out of memory for a %" PRIu64 "-byte header", path, hlen);
    return NULL;
  }
  cJSON *root = NULL;
  const char *problem = NULL;
  if (fread(header, 1, (size_t)hlen, f) != (size_t)hlen) problem = "read error in the header";
  header[hlen] = '\0';
  if (!problem && header[0] != '{') problem = "not a safetensors file: the JSON header does not start with '{'";
  const char *json_end = NULL;
  if (!problem) root = cJSON_ParseWithLengthOpts(header, (size_t)hlen, &json_end, 0);
  if (!problem && !root) {
    const char *at = cJSON_GetErrorPtr();
    long pos = at && at >= header && at <= header + hlen ? (long)(at - header) : -1;
    cuvae_error("%s: the header is not valid JSON (error at byte %ld of %" PRIu64 ": \"%.24s\")", path, pos, hlen,
                pos >= 0 ? at : "");
    free(header);
    return NULL;
  }
  for (const char *q = json_end; !problem && q && q < header + hlen; q++)
    if (*q != ' ') problem = "unexpected bytes after the JSON header (only space padding may follow it)";
  if (!problem && !cJSON_IsObject(root)) problem = "the header is not a JSON object";
  free(header);
  if (problem) {
    cuvae_error("%s: %s", path, problem);
    cJSON_Delete(root);
    return NULL;
  }
  return root;
}

/* __metadata__: strings only; its input_dim and config rebuild the model, whose PyTorch layout t[nt] the tensors
 * must match. *meta and *config_text point into root. */
static int model_from_metadata(const char *path, const cJSON *root, const cJSON **meta, const char **config_text,
                               uint64_t *input_dim, cuvae_model *model, cuvae_torch_tensor *t, int *nt) {
  const cJSON *m = cJSON_GetObjectItemCaseSensitive(root, "__metadata__");
  if (!m)
    return cuvae_error("%s: no __metadata__ in the header (cuvae needs its input_dim and config to rebuild the model; "
                       "see docs/EXPORT.md)",
                       path);
  if (!cJSON_IsObject(m)) return cuvae_error("%s: __metadata__ is not a JSON object", path);
  for (const cJSON *v = m->child; v; v = v->next)
    if (!cJSON_IsString(v))
      return cuvae_error("%s: __metadata__ value '%s' is not a string", path, v->string ? v->string : "?");
  const cJSON *cfg_text = cJSON_GetObjectItemCaseSensitive(m, "config");
  const cJSON *dim_text = cJSON_GetObjectItemCaseSensitive(m, "input_dim");
  if (!cfg_text || !dim_text)
    return cuvae_error("%s: __metadata__ has no '%s' (needed to rebuild the model)", path,
                       !cfg_text ? "config" : "input_dim");
  if (meta_uint(dim_text->valuestring, input_dim) || *input_dim > CUVAE_MAX_PARAMS)
    return cuvae_error("%s: __metadata__ input_dim \"%.40s\" is not a positive integer", path, dim_text->valuestring);
  char cfg_name[CUVAE_PATH_MAX + 64];
  snprintf(cfg_name, sizeof cfg_name, "%s [__metadata__ config]", path);
  cuvae_config cfg;
  cuvae_config_defaults(&cfg);
  if (cuvae_config_load_string(&cfg, cfg_text->valuestring, cfg_name) || cuvae_config_finalize(&cfg))
    return cuvae_error("%s: __metadata__ config: %s", path, cuvae_last_error());
  if (check_meta_arch(path, m, &cfg)) return -1;
  if (cuvae_model_build(model, (size_t)*input_dim, &cfg) || cuvae_torch_layout(model, t, nt))
    return cuvae_error("%s: %s", path, cuvae_last_error());
  *meta = m;
  *config_text = cfg_text->valuestring;
  return 0;
}

/* One tensor entry against the expected tensor tk: F32, tk's shape, data_offsets inside the data and of tk's size. */
static int check_entry(const char *path, const char *name, const cJSON *e, const cuvae_torch_tensor *tk,
                       uint64_t data_size, uint64_t *begin, uint64_t *end) {
  const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(e, "dtype");
  const cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
  const cJSON *offs = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
  if (!cJSON_IsObject(e) || !cJSON_IsString(dtype) || !cJSON_IsArray(shape) || !cJSON_IsArray(offs))
    return cuvae_error("%s: tensor '%s' needs \"dtype\" (string), \"shape\" and \"data_offsets\" (arrays)", path, name);
  if (strcmp(dtype->valuestring, "F32") != 0)
    return cuvae_error("%s: tensor '%s' has dtype %.16s; cuvae models are F32", path, name, dtype->valuestring);
  char want[64], got[128] = "[";
  export_shape_text(want, sizeof want, tk->rank, tk->shape);
  int shape_ok = cJSON_GetArraySize(shape) == tk->rank, d = 0;
  for (const cJSON *sd = shape->child; sd; sd = sd->next, d++) {
    uint64_t v = 0;
    const int valid = json_uint(sd, &v) == 0;
    const size_t used = strlen(got);
    if (valid)
      snprintf(got + used, sizeof got - used, "%s%" PRIu64, d ? ", " : "", v);
    else
      snprintf(got + used, sizeof got - used, "%s?", d ? ", " : "");
    if (!valid || d >= tk->rank || v != tk->shape[d]) shape_ok = 0;
  }
  strncat(got, "]", sizeof got - strlen(got) - 1);
  if (!shape_ok)
    return cuvae_error("%s: tensor '%s' has shape %s, expected %s for the model in __metadata__", path, name, got, want);
  uint64_t b = 0, en = 0;
  if (cJSON_GetArraySize(offs) != 2 || json_uint(cJSON_GetArrayItem(offs, 0), &b) ||
      json_uint(cJSON_GetArrayItem(offs, 1), &en) || en < b)
    return cuvae_error("%s: tensor '%s' has malformed data_offsets (need [begin, end], integers, begin <= end)", path,
                       name);
  if (en > data_size)
    return cuvae_error("%s: tensor '%s' has data_offsets [%" PRIu64 ", %" PRIu64 "], out of range: the data is %" PRIu64
                       " bytes (truncated file?)",
                       path, name, b, en, data_size);
  if (en - b != 4 * (uint64_t)tk->count)
    return cuvae_error("%s: tensor '%s' has data_offsets [%" PRIu64 ", %" PRIu64 "] (%" PRIu64
                       " bytes) but F32 %s needs %" PRIu64,
                       path, name, b, en, en - b, want, 4 * (uint64_t)tk->count);
  *begin = b;
  *end = en;
  return 0;
}

/* Every entry of the header: a tensor of the model, once, valid (check_entry), and none missing; spans[k] gets the
 * byte range of tensor k. */
static int collect_spans(const char *path, const cJSON *root, const cJSON *meta, const cuvae_torch_tensor *t, int nt,
                         uint64_t data_size, span *spans) {
  int seen[CUVAE_MAX_TENSORS] = {0};
  for (const cJSON *e = root->child; e; e = e->next) {
    const char *name = e->string ? e->string : "";
    if (strcmp(name, "__metadata__") == 0) {
      if (e != meta) return cuvae_error("%s: __metadata__ appears twice in the header", path);
      continue;
    }
    int k = -1;
    for (int i = 0; i < nt; i++)
      if (strcmp(t[i].name, name) == 0) k = i;
    if (k < 0)
      return cuvae_error("%s: unexpected tensor '%.64s': not part of the model its __metadata__ describes (names: "
                         "docs/EXPORT.md)",
                         path, name);
    if (seen[k]) return cuvae_error("%s: tensor '%s' appears twice in the header", path, name);
    seen[k] = 1;
    spans[k].tensor = k;
    if (check_entry(path, name, e, &t[k], data_size, &spans[k].begin, &spans[k].end)) return -1;
  }
  for (int i = 0; i < nt; i++)
    if (!seen[i]) {
      char want[64];
      export_shape_text(want, sizeof want, t[i].rank, t[i].shape);
      return cuvae_error("%s: tensor '%s' is missing (the model in __metadata__ needs F32 %s)", path, t[i].name, want);
    }
  return 0;
}

/* The data is covered exactly once: no overlaps, no holes, nothing after the last tensor. Sorts spans by offset. */
static int check_coverage(const char *path, span *spans, int nt, const cuvae_torch_tensor *t, uint64_t data_size) {
  qsort(spans, (size_t)nt, sizeof *spans, span_cmp);
  uint64_t pos = 0;
  for (int i = 0; i < nt; i++) {
    if (spans[i].begin < pos) {
      const span *q = &spans[i - 1];
      return cuvae_error("%s: tensors '%s' [%" PRIu64 ", %" PRIu64 ") and '%s' [%" PRIu64 ", %" PRIu64 ") overlap",
                         path, t[q->tensor].name, q->begin, q->end, t[spans[i].tensor].name, spans[i].begin,
                         spans[i].end);
    }
    if (spans[i].begin > pos)
      return cuvae_error("%s: data bytes [%" PRIu64 ", %" PRIu64 ") belong to no tensor (safetensors data has no "
                         "holes)",
                         path, pos, spans[i].begin);
    pos = spans[i].end;
  }
  if (pos != data_size)
    return cuvae_error("%s: %" PRIu64 " unexpected bytes after the last tensor's data", path, data_size - pos);
  return 0;
}

/* The values, straight into cuvae's layout, each one finite. */
static int read_values(FILE *f, const char *path, const span *spans, const cuvae_torch_tensor *t, int nt,
                       uint64_t data_start, float *params) {
  for (int i = 0; i < nt; i++) {
    const cuvae_torch_tensor *tt = &t[spans[i].tensor];
    if (fseeko(f, (off_t)(data_start + spans[i].begin), SEEK_SET) != 0 ||
        read_floats(f, params + tt->offset, tt->count))
      return cuvae_error("%s: read error in the data of tensor '%s'", path, tt->name);
    for (size_t j = 0; j < tt->count; j++)
      if (!isfinite(params[tt->offset + j]))
        return cuvae_error("%s: tensor '%s' element %zu is %s", path, tt->name, j,
                           isnan(params[tt->offset + j]) ? "NaN" : "infinite");
  }
  return 0;
}

int cuvae_import_safetensors(const char *path, cuvae_checkpoint *ck) {
  memset(ck, 0, sizeof *ck);
  if (!path) return cuvae_error("import: no path given");
  FILE *f = fopen(path, "rb");
  if (!f) return cuvae_error("%s: cannot open: %s", path, strerror(errno));
  cJSON *root = NULL;
  span spans[CUVAE_MAX_TENSORS];
  float *params = NULL, *zeros_m = NULL, *zeros_v = NULL;
  cuvae_model model;
  cuvae_torch_tensor t[CUVAE_MAX_TENSORS];
  int nt = 0, rc = -1;
  const cJSON *meta = NULL;
  const char *config_text = NULL;
  uint64_t hlen = 0, input_dim = 0;
  struct stat st;
  if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
    cuvae_error("%s: not a regular file", path);
    goto done;
  }
  const uint64_t size = (uint64_t)st.st_size;
  if (read_header_length(f, path, size, &hlen) || !(root = read_header_json(f, path, hlen)) ||
      model_from_metadata(path, root, &meta, &config_text, &input_dim, &model, t, &nt))
    goto done;
  const uint64_t data_size = size - 8 - hlen, data_start = 8 + hlen;
  if (collect_spans(path, root, meta, t, nt, data_size, spans) || check_coverage(path, spans, nt, t, data_size))
    goto done;
  params = calloc(model.n_params, sizeof *params);  /* the gaps between tensors are zero */
  zeros_m = calloc(model.n_params, sizeof *zeros_m);
  zeros_v = calloc(model.n_params, sizeof *zeros_v);
  ck->config_ini = strdup(config_text);
  if (!params || !zeros_m || !zeros_v || !ck->config_ini) {
    cuvae_error("%s: out of memory for %zu parameters", path, model.n_params);
    goto done;
  }
  if (read_values(f, path, spans, t, nt, data_start, params)) goto done;
  ck->input_dim = input_dim;
  ck->n_tensors = model.n_tensors;
  memcpy(ck->tensors, model.tensors, sizeof model.tensors);
  ck->n_params = model.n_params;
  ck->params = params;
  ck->adam_m = zeros_m;
  ck->adam_v = zeros_v;
  params = zeros_m = zeros_v = NULL;  /* the checkpoint owns them now (step 0, rng_offset 0 from the memset) */
  rc = 0;
done:
  fclose(f);
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
