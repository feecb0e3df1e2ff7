/* Fuzz harness for the checkpoint loader (src/checkpoint.c), opened as `cuvae eval` opens one (src/inference.c:
 * load, its config, the model it describes, the layout check). Each input is opened twice: as it is, and
 * "sealed": its file-length field (bytes 16..23) set to its size and its last 4 bytes replaced by the CRC32 of
 * the rest, so that mutations reach the header and layout checks behind the checksum. */
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "cuvae/checkpoint.h"
#include "cuvae/error.h"
#include "fuzz.h"
#include "fuzz_checks.h"
#include "inference.h"

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
