/* OpenBLAS kernels and OpenMP idle waits chosen before the program runs, and their description (cuvae/blas.h). */
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

/* The OpenBLAS core to ask for instead of a generic one (NULL: keep what OpenBLAS chose). */
static const char *better_core(void) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (getenv("OPENBLAS_CORETYPE")) return NULL;  /* the user's choice */
  const char *core = openblas_get_corename();
  if (!core || !is_generic_core(core)) return NULL;
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    return "SkylakeX";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
#endif
  return NULL;
}

void cuvae_blas_select_kernels(char **argv) {
  if (getenv("CUVAE_BLAS_SELECTED")) return;  /* already re-executed once: never loop */
  int changed = 0;
  const char *core = better_core();
  if (core) {
    setenv("OPENBLAS_CORETYPE", core, 1);
    changed = 1;
  }
  /* OpenMP's idle threads: short spins, then sleep (see blas.h), unless the user set a policy. */
  if (!getenv("OMP_WAIT_POLICY") && !getenv("GOMP_SPINCOUNT")) {
    setenv("GOMP_SPINCOUNT", CUVAE_GOMP_SPINCOUNT, 1);
    changed = 1;
  }
  if (!changed) return;
  setenv("CUVAE_BLAS_SELECTED", core ? core : "1", 1);
  execv("/proc/self/exe", argv);
  /* exec failed: carry on as we are (slower, same results). */
}

const char *cuvae_blas_describe(void) {
  static char buf[256];
  const int par = openblas_get_parallel();  /* 0 sequential, 1 pthreads, 2 OpenMP */
  /* How idle OpenMP threads wait (blas.h): the user's OMP_WAIT_POLICY, else GOMP_SPINCOUNT spins then sleep. */
  const char *policy = getenv("OMP_WAIT_POLICY"), *spins = getenv("GOMP_SPINCOUNT");
  char wait[96] = "";
  if (par == 2 && policy && policy[0])
    snprintf(wait, sizeof wait, ", wait policy %.40s", policy);
  else if (par == 2 && spins && spins[0])
    snprintf(wait, sizeof wait, ", spin %.40s", spins);
  snprintf(buf, sizeof buf, "OpenBLAS core %s, %d threads, %s%s", openblas_get_corename(), openblas_get_num_threads(),
           par == 2 ? "OpenMP" : par == 1 ? "pthreads" : "sequential", wait);
  return buf;
}
