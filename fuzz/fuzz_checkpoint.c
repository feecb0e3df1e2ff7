/* Fuzz harness for the checkpoint loader (src/io/checkpoint.c), opened as `cuvae eval` opens one (src/engine/inference.c:
 * load, its config, the model it describes, the layout check). Each input is opened twice: as it is, and
 * "sealed": its file-length field (bytes 16..23) set to its size and its last 4 bytes replaced by the CRC32 of
 * the rest, so that mutations reach the header and layout checks behind the checksum. A checkpoint that opens must
 * also save and load back unchanged. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h> /* unlink */
#include <zlib.h>

#include "cuvae/checkpoint.h"
#include "cuvae/error.h"
#include "fuzz.h"
#include "fuzz_checks.h"
#include "inference.h"

/* What loaded must save (a resumed run rewrites it) and load back the same, field by field and bit for bit. */
static void check_save_round_trip(const cuvae_checkpoint *ck) {
  const char *path = fuzz_scratch_path();
  if (cuvae_checkpoint_save(path, ck) != 0) {
    fprintf(stderr, "fuzz: a checkpoint that loads cannot be saved: %s\n", cuvae_last_error());
    abort();
  }
  cuvae_checkpoint back;
  if (cuvae_checkpoint_load(path, &back) != 0) {
    fprintf(stderr, "fuzz: a saved checkpoint does not load: %s\n", cuvae_last_error());
    abort();
  }
  unlink(path);
  FUZZ_REQUIRE(strcmp(back.config_ini, ck->config_ini) == 0);
  FUZZ_REQUIRE(back.input_dim == ck->input_dim && back.n_params == ck->n_params && back.step == ck->step);
  FUZZ_REQUIRE(back.rng_offset == ck->rng_offset && back.n_tensors == ck->n_tensors);
  FUZZ_REQUIRE(memcmp(&back.progress, &ck->progress, sizeof back.progress) == 0);
  for (int i = 0; i < ck->n_tensors; i++) {
    const cuvae_tensor *a = &ck->tensors[i], *b = &back.tensors[i];
    FUZZ_REQUIRE(strncmp(a->name, b->name, CUVAE_TENSOR_NAME) == 0 && a->rank == b->rank);
    FUZZ_REQUIRE(a->shape[0] == b->shape[0] && a->shape[1] == b->shape[1]);
    FUZZ_REQUIRE(a->offset == b->offset && a->count == b->count);
  }
  const size_t bytes = (size_t)ck->n_params * sizeof(float);
  FUZZ_REQUIRE(memcmp(back.params, ck->params, bytes) == 0 && memcmp(back.adam_m, ck->adam_m, bytes) == 0 &&
               memcmp(back.adam_v, ck->adam_v, bytes) == 0);
  cuvae_checkpoint_free(&back);
}

static void open_one(const uint8_t *data, size_t size) {
  cuvae_inference inf;
  cuvae_clear_error();
  int rc = cuvae_inference_open(&inf, fuzz_file(data, size), NULL, CUVAE_SPLIT_NONE);
  if (rc != 0) {
    FUZZ_REQUIRE(rc == -1 && cuvae_last_error()[0] != '\0');
    return;
  }
  const cuvae_checkpoint *ck = &inf.ck;
  FUZZ_REQUIRE(ck->params && ck->adam_m && ck->adam_v && ck->config_ini && ck->n_params == inf.model.n_params);
  FUZZ_REQUIRE(ck->step >= 0 && ck->input_dim == inf.model.input_dim);
  check_save_round_trip(ck);
  cuvae_inference_close(&inf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > (1u << 24)) return 0;
  open_one(data, size);
  if (size < 28) return 0; /* no room for the file-length field and a CRC */
  unsigned char *sealed = malloc(size);
  FUZZ_REQUIRE(sealed != NULL);
  memcpy(sealed, data, size);
  for (int i = 0; i < 8; i++) sealed[16 + i] = (unsigned char)((uint64_t)size >> (8 * i));
  uint32_t crc = (uint32_t)crc32(0L, sealed, (uInt)(size - 4));
  for (int i = 0; i < 4; i++) sealed[size - 4 + i] = (unsigned char)(crc >> (8 * i));
  if (memcmp(sealed, data, size) != 0) open_one(sealed, size);
  free(sealed);
  return 0;
}
