/* Fuzz harness for the .npy reader (src/io/npy.c): each input is read as a .npy file, and one that reads is also
 * loaded as images and labels through the data set loader (src/io/data.c). */
#include "cuvae/data.h"
#include "cuvae/error.h"
#include "fuzz.h"
#include "fuzz_checks.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *path = fuzz_file(data, size);
  cuvae_array a;
  cuvae_clear_error();
  int rc = cuvae_npy_read(path, &a);
  fuzz_check_array(rc, &a);
  if (rc == 0) {
    FUZZ_REQUIRE(a.dtype == CUVAE_DTYPE_U8 || a.dtype == CUVAE_DTYPE_I32 || a.dtype == CUVAE_DTYPE_F32 ||
                 a.dtype == CUVAE_DTYPE_I64);
    cuvae_dataset ds;
    if (cuvae_dataset_load(&ds, path, path) == 0) FUZZ_REQUIRE(ds.x != NULL && ds.n * ds.dim >= 1);
    cuvae_dataset_free(&ds);
  }
  cuvae_array_free(&a);
  return 0;
}
