/* Vectorised expf / log1pf for the fused CPU loops, from glibc's vector math library (libmvec).
 *
 * glibc ships SIMD versions of expf and log1pf (SSE4, AVX2 and AVX-512 widths) but its headers announce them
 * only under -ffast-math, which would also drop the NaN / Inf semantics the divergence checks rely on. Declaring
 * them here lets a loop marked CUVAE_SIMD call the vector versions while every other operation keeps IEEE
 * semantics. libmvec's documented accuracy is within 4 ulp (scalar glibc: within 1); the CUDA twins' tests state
 * their tolerances against that bound.
 *
 * CUVAE_VECTOR_CLONES compiles a function once per x86 vector width (AVX-512, AVX2, baseline SSE) and picks one
 * at load time (GCC target_clones), so one binary uses the widest vector math the CPU has. Elsewhere (other
 * compilers, libcs or architectures) both macros expand to nothing and the loops stay scalar. */
#ifndef CUVAE_SIMD_MATH_H
#define CUVAE_SIMD_MATH_H
#include <math.h>

#if defined(CUVAE_HAVE_MVEC) && defined(__x86_64__) && defined(__GLIBC__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((simd("notinbranch"))) float expf(float);
__attribute__((simd("notinbranch"))) float log1pf(float);
#define CUVAE_SIMD _Pragma("omp simd")
#define CUVAE_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CUVAE_SIMD
#define CUVAE_VECTOR_CLONES
#endif

#endif
