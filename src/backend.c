/* Backend selection: --device auto | cpu | cuda. */
#include <stdio.h>
#include <string.h>

#include "backend.h"
#include "cuvae/error.h"

#if !CUVAE_HAVE_CUDA
int cuvae_cuda_device_count(char *desc, size_t n) {
  if (desc && n) snprintf(desc, n, "this build has no CUDA backend (configure with -DCUVAE_CUDA=ON)");
  return 0;
}
#endif

int cuvae_backend_max_pending(const cuvae_config *cfg) {
  /* The trainer collects once per log interval; a bound keeps the result buffers small for huge intervals. */
  return cfg->log_every < 1 ? 1 : cfg->log_every > 4096 ? 4096 : cfg->log_every;
}

int cuvae_backend_step(cuvae_backend *be, const uint32_t *rows, int B, int64_t step, cuvae_step_result *out) {
  if (be->train_step(be, rows, B, step)) return -1;
  cuvae_step_result res[1];
  int n = 0;
  if (be->collect(be, res, &n)) return -1;
  if (n != 1) return cuvae_error("step %lld: collected %d results, expected 1", (long long)step + 1, n);
  *out = res[0];
  return 0;
}

cuvae_backend *cuvae_backend_create(const char *device, const cuvae_model *m, const cuvae_config *cfg,
                                    const cuvae_dataset *train, const cuvae_dataset *eval) {
  const int is_auto = strcmp(device, "auto") == 0;
  if (strcmp(device, "cpu") != 0 && strcmp(device, "cuda") != 0 && !is_auto) {
    cuvae_error("--device '%s': expected auto, cpu or cuda", device);
    return NULL;
  }
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
