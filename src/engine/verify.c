/* cuvae verify (include/cuvae/verify.h): the config's data, model and both backends, then their comparison
 * (verify_backends.c). */
#include "cuvae/verify.h"

#include <string.h>

#include "backend.h"
#include "cuvae/dist.h"
#include "cuvae/error.h"
#include "cuvae/model.h"
#include "data_split.h"
#include "verify_backends.h"

int cuvae_verify(const cuvae_config *cfg, const cuvae_verify_opts *opts, cuvae_verify_result *out) {
  memset(out, 0, sizeof *out);
  if (cuvae_dist_size() > 1)
    return cuvae_error("cuvae verify compares two backends inside one process: run it without mpirun");
  char desc[256] = "";
  if (cuvae_cuda_device_count(desc, sizeof desc) < 1)
    return cuvae_error("cuvae verify needs a CUDA device to compare with the CPU: %s", desc);
  cuvae_dataset train, test;
  memset(&train, 0, sizeof train);
  memset(&test, 0, sizeof test);
  cuvae_model m;
  cuvae_backend *cpu = NULL, *cuda = NULL;
  int rc = cuvae_load_split(cfg, CUVAE_SPLIT_TRAIN, &train) || cuvae_load_split(cfg, CUVAE_SPLIT_TEST, &test) ? -1 : 0;
  if (rc == 0 && train.dim != test.dim)
    rc = cuvae_error("train data has %zu features per example but test data has %zu", train.dim, test.dim);
  if (rc == 0) rc = cuvae_model_build(&m, train.dim, cfg);
  if (rc == 0 && !(cpu = cuvae_backend_create("cpu", &m, cfg, &train, &test))) rc = -1;
  if (rc == 0 && !(cuda = cuvae_backend_create("cuda", &m, cfg, &train, &test))) rc = -1;
  if (rc == 0) rc = cuvae_verify_backends(cfg, &m, &train, &test, cpu, cuda, opts, out);
  if (cpu) cpu->destroy(cpu);
  if (cuda) cuda->destroy(cuda);
  cuvae_dataset_free(&train);
  cuvae_dataset_free(&test);
  return rc;
}
