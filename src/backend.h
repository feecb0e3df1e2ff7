/* The backend interface: one set of operations that the CPU reference and (issue 4) the CUDA backend both
 * implement. The trainer talks only to this interface. Every backend keeps the parameters, gradients and Adam
 * moments in the ONE layout of cuvae_model, so state moves between backends as three flat arrays. */
#ifndef CUVAE_BACKEND_H
#define CUVAE_BACKEND_H
#include <stddef.h>
#include <stdint.h>

#include "cuvae/config.h"
#include "cuvae/cpu.h"
#include "cuvae/data.h"
#include "cuvae/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cuvae_backend cuvae_backend;

typedef struct cuvae_step_result {
  cuvae_loss loss;     /* of the batch, before the update */
  double grad_norm;    /* global L2 norm of the gradient, before clipping */
} cuvae_step_result;

struct cuvae_backend {
  const char *name;    /* "cpu" | "cuda" */
  /* One Adam step on train rows rows[0..B) with the noise of training step `step` (0-based). Fails (with a
   * message naming the step) when the loss or the gradient is not finite; then the state is unchanged. */
  int (*train_step)(cuvae_backend *be, const uint32_t *rows, int B, int64_t step, cuvae_step_result *out);
  /* Mean negative ELBO over all of ds, batches of `batch` rows, evaluation noise stream. */
  int (*evaluate)(cuvae_backend *be, const cuvae_dataset *ds, int batch, cuvae_loss *out);
  /* Copy the state out / in (host arrays of n_params floats; m, v may be NULL on read of params only). */
  int (*get_state)(cuvae_backend *be, float *params, float *adam_m, float *adam_v);
  int (*set_state)(cuvae_backend *be, const float *params, const float *adam_m, const float *adam_v);
  void (*destroy)(cuvae_backend *be);
};

/* device: "cpu", "cuda" or "auto". The backend starts from freshly initialised parameters (cfg seed) and zero
 * Adam moments; train is the training set (kept by reference or uploaded). */
cuvae_backend *cuvae_backend_create(const char *device, const cuvae_model *m, const cuvae_config *cfg,
                                    const cuvae_dataset *train);
/* Number of usable CUDA devices (0 in builds without CUDA); desc receives a one-line description. */
int cuvae_cuda_device_count(char *desc, size_t n);
cuvae_backend *cuvae_backend_cpu_create(const cuvae_model *m, const cuvae_config *cfg, const cuvae_dataset *train);
/* The CUDA backend (src/backend_cuda.c; only in builds with CUDA, or linked from the emulation's
 * cuvae_cuda_emu library in the tests). Uses the current device; train is uploaded once. */
cuvae_backend *cuvae_backend_cuda_create(const cuvae_model *m, const cuvae_config *cfg, const cuvae_dataset *train);

#ifdef __cplusplus
}
#endif
#endif
