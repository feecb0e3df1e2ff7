#include "cuvae/blas.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The generic cores DYNAMIC_ARCH falls back to when it does not recognise the CPU model. */
static int is_generic_core(const char *core) {
  static const char *generic[] = {"Prescott", "Core2", "Penryn", "Dunnington", "Nehalem", "Sandybridge", NULL};
  for (int i = 0; generic[i]; i++)
    if (strcmp(core, generic[i]) == 0) return 1;
  return 0;
}

void cuvae_blas_select_kernels(char **argv) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (getenv("OPENBLAS_CORETYPE") || getenv("CUVAE_BLAS_SELECTED")) return;
  const char *core = openblas_get_corename();
  if (!core || !is_generic_core(core)) return;
  __builtin_cpu_init();
  const char *want = NULL;
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    want = "SkylakeX";
  else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    want = "Haswell";
  if (!want) return;
  setenv("OPENBLAS_CORETYPE", want, 1);
  setenv("CUVAE_BLAS_SELECTED", want, 1);  /* never loop, even if OpenBLAS ignores the request */
  execv("/proc/self/exe", argv);
  /* exec failed: carry on with the generic kernels (slower, same results). */
#else
  (void)argv;
#endif
}

const char *cuvae_blas_describe(void) {
  static char buf[256];
  const int par = openblas_get_parallel();  /* 0 sequential, 1 pthreads, 2 OpenMP */
  snprintf(buf, sizeof buf, "OpenBLAS core %s, %d threads, %s", openblas_get_corename(), openblas_get_num_threads(),
           par == 2 ? "OpenMP" : par == 1 ? "pthreads" : "sequential");
  return buf;
}
