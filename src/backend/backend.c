/* Backend selection: --device auto | cpu | cuda. */
#include <stdio.h>
#include <string.h>

#include "backend.h"
#include "cuvae/device.h"
#include "cuvae/error.h"

#if !CUVAE_HAVE_CUDA
int cuvae_cuda_device_count(char *desc, size_t n) {
  if (desc && n) snprintf(desc, n, "this build has no CUDA backend (configure with -DCUVAE_CUDA=ON)");
  return 0;
}
#endif

int cuvae_device_check(const char *device) {
  if (device && (strcmp(device, "auto") == 0 || strcmp(device, "cpu") == 0 || strcmp(device, "cuda") == 0)) return 0;
  return cuvae_error("--device '%s': expected " CUVAE_DEVICE_CHOICES, device ? device : "");
}

cuvae_backend *cuvae_backend_create(const char *device, const cuvae_model *m, const cuvae_config *cfg,
                                    const cuvae_dataset *train, const cuvae_dataset *eval) {
  if (cuvae_device_check(device)) return NULL;
  const int is_auto = strcmp(device, "auto") == 0;
  char desc[256] = "";
  const int devices = cuvae_cuda_device_count(desc, sizeof desc);
  if (strcmp(device, "cuda") == 0 && devices < 1) {
    cuvae_error("--device cuda: %s; use --device cpu (or auto, which falls back to the CPU)", desc);
    return NULL;
  }
  if (strcmp(device, "cpu") == 0 || devices < 1) {
    cuvae_backend *be = cuvae_backend_cpu_create(m, cfg, train, eval);
    if (be && is_auto)
      snprintf(be->notice, sizeof be->notice, "--device auto: %.200s; running on the CPU", desc);
    return be;
  }
#if CUVAE_HAVE_CUDA
  return cuvae_backend_cuda_create(m, cfg, train, eval);
#else
  cuvae_error("internal: a CUDA device was reported in a build without CUDA");
  return NULL;
#endif
}
