/* Moving models between cuvae and PyTorch, and running a trained model on files (docs/EXPORT.md).
 *
 * Export writes a checkpoint's parameters under the names and shapes of the PyTorch module CuvaeVAE in
 * scripts/torch_vae_module.py (nn.Linear weights [out, in], biases [out]):
 *   enc.i.{weight,bias}                          -> encoder.{2i}.{weight,bias}     (nn.Sequential: Linear, act, ...)
 *   enc.mu.weight + enc.lv.weight  (adjacent)    -> encoder_head.weight [2Z, h]    (mu rows first)
 *   enc.mu.bias + enc.lv.bias      (adjacent)    -> encoder_head.bias   [2Z]
 *   dec.i.{weight,bias}                          -> decoder.{2i}.{weight,bias}
 *   dec.out.{weight,bias}                        -> decoder.{2k}.{weight,bias}     (k hidden layers)
 * as one safetensors file (F32, little-endian; "__metadata__" records the architecture and the config INI) or
 * as a directory of NAME.npy files plus metadata.json. Import reads such a safetensors file back into a
 * checkpoint (fresh Adam moments, step 0); export then import gives bit-identical parameters.
 *
 * Every function returns 0 or -1 with one message (cuvae_last_error) that starts with the path at fault. No
 * output is ever left half-written: files go to a temporary name next to the target and are renamed over it
 * only when complete. */
#ifndef CUVAE_EXPORT_H
#define CUVAE_EXPORT_H
#include <stddef.h>
#include <stdint.h>

#include "cuvae/checkpoint.h"
#include "cuvae/config.h"
#include "cuvae/model.h"
#ifdef __cplusplus
extern "C" {
#endif

#define CUVAE_TORCH_NAME 48
/* Largest safetensors JSON header accepted on import (the reference implementation's limit too). */
#define CUVAE_SAFETENSORS_MAX_HEADER ((uint64_t)100 << 20)

typedef enum { CUVAE_EXPORT_SAFETENSORS = 0, CUVAE_EXPORT_NPY = 1 } cuvae_export_format;

/* One tensor of the PyTorch module: its name, shape ([out, in] or [out]) and where it lives in cuvae's
 * parameter buffer (offset/count in floats). */
typedef struct cuvae_torch_tensor {
  char name[CUVAE_TORCH_NAME];
  int rank;
  size_t shape[2];
  size_t offset, count;
} cuvae_torch_tensor;

/* The PyTorch tensors of model m, in cuvae's layout order (n_out receives the count, at most
 * CUVAE_MAX_TENSORS). Fails if the model's two encoder heads are not adjacent (they always are). */
int cuvae_torch_layout(const cuvae_model *m, cuvae_torch_tensor *out, int *n_out);

/* Writes checkpoint `checkpoint_path` to out_path: one .safetensors file, or (NPY) a new directory of NAME.npy
 * files plus metadata.json (refused if out_path exists and is not an empty directory). */
int cuvae_export_checkpoint(const char *checkpoint_path, cuvae_export_format format, const char *out_path);

/* Reads and validates a safetensors file written by export (or by scripts/torch_vae_module.py): header length
 * against the file size, the JSON, __metadata__ (input_dim and a config that loads; the other architecture keys,
 * when present, must agree with it), every tensor of that architecture present once with dtype F32, the right
 * shape and offsets inside the data, no overlaps, holes or unknown tensors, finite values. Fills ck (zero Adam
 * moments, step 0); cuvae_checkpoint_free releases it. */
int cuvae_import_safetensors(const char *path, cuvae_checkpoint *ck);
/* cuvae_import_safetensors, then cuvae_checkpoint_save to out_path. */
int cuvae_import_to_checkpoint(const char *safetensors_path, const char *out_path);

/* What encode/decode did, for the CLI's report line. */
typedef struct cuvae_codec_info {
  size_t rows, cols;   /* shape of the array written */
  char device[16];     /* backend used: "cpu" | "cuda" */
} cuvae_codec_info;

/* Encodes every row of data_path (IDX or .npy, as the data loaders accept; D features per row) with the model in
 * checkpoint_path on `device` (auto | cpu | cuda) and writes float32 [N, 2Z] = (mu | logvar) of q(z|x) to
 * out_path (.npy). labels_path: each row's class (1-D IDX or .npy), required by a conditional model and refused by
 * others (NULL or "": none). */
int cuvae_encode_file(const char *checkpoint_path, const char *device, const char *data_path, const char *labels_path,
                      const char *out_path, cuvae_codec_info *info);
/* Decodes z_path (float32 .npy [N, Z]) and writes the decoder means float32 [N, D] (sigmoid of the logits for a
 * Bernoulli decoder, the output itself for a Gaussian one) to out_path (.npy). labels_path: as for encode. */
int cuvae_decode_file(const char *checkpoint_path, const char *device, const char *z_path, const char *labels_path,
                      const char *out_path, cuvae_codec_info *info);

#ifdef __cplusplus
}
#endif
#endif
