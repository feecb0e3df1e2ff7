/* Backend selection: --device auto | cpu | cuda. */
#include <stdio.h>
#include <string.h>

#include "backend.h"
#include "cuvae/error.h"

#if !CUVAE_HAVE_CUDA
int cuvae_cuda_device_count(char *desc, size_t n) {
  if (desc && n) snprintf(desc, n, "built without CUDA");
  return 0;
}
#endif

cuvae_backend *cuvae_backend_create(const char *device, const cuvae_model *m, const cuvae_config *cfg,
                                    const cuvae_dataset *train) {
  if (strcmp(device, "cpu") == 0 || strcmp(device, "auto") == 0)
    return cuvae_backend_cpu_create(m, cfg, train);
  if (strcmp(device, "cuda") == 0) {
    cuvae_error("--device cuda: this build has no CUDA backend yet (it lands with issue 4); use --device cpu");
    return NULL;
  }
  cuvae_error("--device '%s': expected auto, cpu or cuda", device);
  return NULL;
}
