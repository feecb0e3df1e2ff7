/* OpenBLAS kernel selection. Debian's OpenBLAS is built with DYNAMIC_ARCH and picks its kernels from the CPU
 * model; on virtual CPUs that report an unknown model (e.g. "Intel Xeon Processor") it falls back to the
 * generic Prescott (SSE3) kernels, 4-5x slower than the AVX2/AVX-512 ones the CPU actually supports
 * (measured: 34 vs 156 GFLOP/s sgemm with 2 threads). OpenBLAS reads OPENBLAS_CORETYPE only when it is loaded,
 * so the fix has to happen before the program starts: cuvae_blas_select_kernels sets it from the CPU's
 * feature flags and re-executes the program once. A user's own OPENBLAS_CORETYPE is always respected.
 *
 * The same re-execution sets GOMP_SPINCOUNT (libgomp, whose threads OpenBLAS's OpenMP build and the fused CPU
 * loops share, also reads it only at load) unless OMP_WAIT_POLICY or GOMP_SPINCOUNT is set. libgomp's default
 * lets an idle thread spin 300,000 times before it sleeps; when anything else runs on the cores, the spinning
 * threads take the time the working ones need. Measured on the 2-core machine (docs/PERFORMANCE.md, "OpenMP
 * and a busy machine"): with one other busy process, config A ran 7,600-10,000 samples/s with the default and
 * 12,000-14,000 with 1000 spins; on a quiet machine the two were within the run-to-run noise (~2%). */
#ifndef CUVAE_BLAS_H
#define CUVAE_BLAS_H
#ifdef __cplusplus
extern "C" {
#endif

#define CUVAE_GOMP_SPINCOUNT "1000"

/* Call first thing in main(). Returns only when no re-exec is needed or the re-exec failed. */
void cuvae_blas_select_kernels(char **argv);
/* "OpenBLAS <config> | core <name> | <n> threads", for logs. */
const char *cuvae_blas_describe(void);

#ifdef __cplusplus
}
#endif
#endif
