/* Fuzz harness for the safetensors import (src/io/import.c): each input is read as a .safetensors file; what it
 * accepts must be a complete checkpoint of the model its __metadata__ describes, which saves and loads back. */
#include <string.h>

#include "cuvae/checkpoint.h"
#include "cuvae/error.h"
#include "cuvae/export.h"
#include "fuzz.h"
#include "fuzz_checks.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > (1u << 24)) return 0;
  cuvae_checkpoint ck;
  cuvae_clear_error();
  int rc = cuvae_import_safetensors(fuzz_file(data, size), &ck);
  if (rc != 0) {
    FUZZ_REQUIRE(rc == -1 && cuvae_last_error()[0] != '\0' && ck.params == NULL && ck.config_ini == NULL);
    return 0;
  }
  FUZZ_REQUIRE(ck.params && ck.adam_m && ck.adam_v && ck.config_ini && ck.n_params >= 1 && ck.step == 0);
  uint64_t values = 0;  /* the tensors' floats all come from the file; the alignment gaps are not stored */
  for (int i = 0; i < ck.n_tensors; i++) values += ck.tensors[i].count;
  FUZZ_REQUIRE(values <= ck.n_params && 4 * values < size);
  /* `cuvae import` saves what it read: that must succeed and load back. */
  if (cuvae_checkpoint_save(fuzz_scratch_path(), &ck) != 0) {
    fprintf(stderr, "fuzz: an imported checkpoint cannot be saved: %s\n", cuvae_last_error());
    abort();
  }
  cuvae_checkpoint back;
  FUZZ_REQUIRE(cuvae_checkpoint_load(fuzz_scratch_path(), &back) == 0);
  FUZZ_REQUIRE(back.n_params == ck.n_params && memcmp(back.params, ck.params, 4 * (size_t)ck.n_params) == 0);
  cuvae_checkpoint_free(&back);
  cuvae_checkpoint_free(&ck);
  return 0;
}
