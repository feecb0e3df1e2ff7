/* Loops of the fused CPU kernels split across threads (OpenMP, the same thread pool as OpenBLAS's OpenMP build:
 * see CMakeLists.txt). Each iteration writes its own outputs and every sum keeps its order, so results do not
 * depend on the thread count. Loops with less work than CUVAE_PARALLEL_MIN_WORK elements stay on one thread:
 * waking the pool costs a few microseconds. */
#ifndef CUVAE_PARALLEL_H
#define CUVAE_PARALLEL_H

#define CUVAE_PARALLEL_MIN_WORK 16384
#define CUVAE_PRAGMA(x) _Pragma(#x)
#ifdef _OPENMP
#define CUVAE_PARALLEL_FOR(work) \
  CUVAE_PRAGMA(omp parallel for schedule(static) if ((size_t)(work) >= CUVAE_PARALLEL_MIN_WORK))
#else
#define CUVAE_PARALLEL_FOR(work)
#endif

#endif
