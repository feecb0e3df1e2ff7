/* backend_cpu_iwae.c -- placeholder until the implementation lands (issue 6). */
#include "backend_cpu_internal.h"
#include "cuvae/error.h"

int cpu_iwae(cuvae_backend *be, const cuvae_dataset *ds, int K, int batch, double *log_px) {
  (void)be;
  (void)ds;
  (void)K;
  (void)batch;
  (void)log_px;
  return cuvae_error("cpu_iwae: not implemented yet");
}
