/* Backend selection: --device auto | cpu | cuda. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "cuvae/device.h"
#include "cuvae/error.h"

#if CUVAE_HAVE_CUDA
int cuda_set_device_checked(int device, char *msg, size_t n);  /* kernels/device_info.cu */

int cuvae_cuda_set_device(int device) {
  char msg[256];
  return cuda_set_device_checked(device, msg, sizeof msg) ? cuvae_error("%s", msg) : 0;
}
#else
int cuvae_cuda_device_count(char *desc, size_t n) {
  if (desc && n) snprintf(desc, n, "this build has no CUDA backend (configure with -DCUVAE_CUDA=ON)");
  return 0;
}

int cuvae_cuda_set_device(int device) {
  return cuvae_error("CUDA device %d: this build has no CUDA backend", device);
}
#endif

int cuvae_device_check(const char *device) {
  if (device && (strcmp(device, "auto") == 0 || strcmp(device, "cpu") == 0 || strcmp(device, "cuda") == 0)) return 0;
  return cuvae_error("--device '%s': expected " CUVAE_DEVICE_CHOICES, device ? device : "");
}

int cuvae_device_for_rank(int local_rank, int local_size, int devices, char *note, size_t n) {
  if (note && n) note[0] = '\0';
  if (devices < 1) return -1;
  const int device = local_rank % devices;
  if (local_size > devices && note && n)
    snprintf(note, n, "%d ranks on this machine share its %d CUDA device%s round-robin (this rank: device %d); one rank "
                      "per device trains faster", local_size, devices, devices > 1 ? "s" : "", device);
  return device;
}

int cuvae_device_place_rank(int local_rank, int local_size, char *note, size_t n) {
  if (note && n) note[0] = '\0';
  const char *visible = getenv("CUDA_VISIBLE_DEVICES");
  if (local_size < 2 || (visible && visible[0])) return 0;  /* one process, or the launcher placed the ranks */
  const int devices = cuvae_cuda_device_count(NULL, 0);
  if (devices < 1) return 0;
  return cuvae_cuda_set_device(cuvae_device_for_rank(local_rank, local_size, devices, note, n));
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
