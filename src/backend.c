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
#if CUVAE_HAVE_CUDA
  if (strcmp(device, "cuda") == 0) {
    char desc[256] = "";
    if (cuvae_cuda_device_count(desc, sizeof desc) < 1) {
      cuvae_error("--device cuda: %s; use --device cpu or auto", desc);
      return NULL;
    }
    return cuvae_backend_cuda_create(m, cfg, train);
  }
  if (strcmp(device, "auto") == 0)  /* a device when there is one, else the CPU, silently */
    return cuvae_cuda_device_count(NULL, 0) > 0 ? cuvae_backend_cuda_create(m, cfg, train)
                                                : cuvae_backend_cpu_create(m, cfg, train);
  if (strcmp(device, "cpu") == 0) return cuvae_backend_cpu_create(m, cfg, train);
#else
  if (strcmp(device, "cpu") == 0 || strcmp(device, "auto") == 0)
    return cuvae_backend_cpu_create(m, cfg, train);
  if (strcmp(device, "cuda") == 0) {
    cuvae_error("--device cuda: this build has no CUDA backend; rebuild with -DCUVAE_CUDA=ON, or use --device cpu");
    return NULL;
  }
#endif
  cuvae_error("--device '%s': expected auto, cpu or cuda", device);
  return NULL;
}
