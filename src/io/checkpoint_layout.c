/* A loaded checkpoint against the model its config describes: the layout comparison, and the move of a checkpoint
 * written with another alignment of the parameter buffer into the model's layout. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuvae/checkpoint.h"
#include "cuvae/error.h"

int cuvae_checkpoint_check_layout(const cuvae_checkpoint *ck, const cuvae_model *m) {
  static const char *const pre = "checkpoint layout differs from the model";
  if (!ck || !m) return cuvae_error("checkpoint layout check: null checkpoint or model");
  if (ck->input_dim != (uint64_t)m->input_dim)
    return cuvae_error("%s: input dimension %llu in the checkpoint, %zu in the model", pre,
                       (unsigned long long)ck->input_dim, m->input_dim);
  if (ck->n_tensors != m->n_tensors)
    return cuvae_error("%s: %d tensors in the checkpoint, %d in the model", pre, ck->n_tensors, m->n_tensors);
  for (int i = 0; i < ck->n_tensors && i < CUVAE_MAX_TENSORS; i++) {
    const cuvae_tensor *a = &ck->tensors[i], *b = &m->tensors[i];
    if (strncmp(a->name, b->name, CUVAE_TENSOR_NAME) != 0)
      return cuvae_error("%s: tensor %d is '%.32s' in the checkpoint, '%.32s' in the model", pre, i, a->name,
                         b->name);
    if (a->rank != b->rank || a->shape[0] != b->shape[0] || (a->rank == 2 && a->shape[1] != b->shape[1])) {
      char sa[64], sb[64];
      cuvae_tensor_shape_string(a, sa, sizeof sa);
      cuvae_tensor_shape_string(b, sb, sizeof sb);
      return cuvae_error("%s: tensor %d '%.32s' has shape %s in the checkpoint, %s in the model", pre, i,
                         a->name, sa, sb);
    }
    if (a->offset != b->offset || a->count != b->count)
      return cuvae_error("%s: tensor %d '%.32s' is at offset %zu (count %zu) in the checkpoint, offset %zu "
                         "(count %zu) in the model", pre, i, a->name, a->offset, a->count, b->offset, b->count);
  }
  if (ck->n_params != (uint64_t)m->n_params)
    return cuvae_error("%s: %llu parameters in the checkpoint, %zu in the model", pre,
                       (unsigned long long)ck->n_params, m->n_params);
  return 0;
}

/* Same tensors (names, shapes, order) at other offsets: a checkpoint of a build whose parameter buffer had another
 * alignment (e.g. none: every tensor right after the previous one). */
static int same_tensors_elsewhere(const cuvae_checkpoint *ck, const cuvae_model *m) {
  if (ck->n_tensors != m->n_tensors || ck->input_dim != (uint64_t)m->input_dim) return 0;
  int moved = ck->n_params != (uint64_t)m->n_params;
  for (int i = 0; i < m->n_tensors; i++) {
    const cuvae_tensor *a = &ck->tensors[i], *b = &m->tensors[i];
    if (strncmp(a->name, b->name, CUVAE_TENSOR_NAME) != 0 || a->rank != b->rank || a->count != b->count ||
        a->shape[0] != b->shape[0] || a->shape[1] != b->shape[1])
      return 0;
    moved |= a->offset != b->offset;
  }
  return moved;
}

/* One array of the checkpoint, tensor by tensor, into a zeroed buffer of the model's layout. */
static float *relocate(const float *from, const cuvae_checkpoint *ck, const cuvae_model *m) {
  float *to = calloc(m->n_params, sizeof *to);
  if (!to) return NULL;
  for (int i = 0; i < m->n_tensors; i++)
    memcpy(to + m->tensors[i].offset, from + ck->tensors[i].offset, m->tensors[i].count * sizeof *to);
  return to;
}

int cuvae_checkpoint_fit_layout(cuvae_checkpoint *ck, const cuvae_model *m) {
  if (!ck || !m) return cuvae_error("checkpoint layout check: null checkpoint or model");
  if (same_tensors_elsewhere(ck, m)) {
    float *p = relocate(ck->params, ck, m), *mo = relocate(ck->adam_m, ck, m), *v = relocate(ck->adam_v, ck, m);
    float *e = ck->ema ? relocate(ck->ema, ck, m) : NULL;
    if (!p || !mo || !v || (ck->ema && !e)) {
      free(p);
      free(mo);
      free(v);
      free(e);
      return cuvae_error("out of memory moving the checkpoint's %zu parameters into the model's layout", m->n_values);
    }
    free(ck->params);
    free(ck->adam_m);
    free(ck->adam_v);
    free(ck->ema);
    ck->ema = e;
    ck->params = p;
    ck->adam_m = mo;
    ck->adam_v = v;
    memcpy(ck->tensors, m->tensors, sizeof ck->tensors);
    ck->n_params = m->n_params;
  }
  return cuvae_checkpoint_check_layout(ck, m);
}
