/* Dense double-precision linear algebra on column-major matrices: Cholesky factor and solves, symmetric
 * eigendecompositions. LAPACK itself comes from the one OpenBLAS the process links (it bundles LAPACK), called
 * through the Fortran interface that <lapack.h> declares, so no second BLAS is ever mapped. */
#ifndef CUVAE_LINALG_H
#define CUVAE_LINALG_H
#include <stddef.h>
#ifdef __cplusplus
extern "C" {
#endif

/* Each returns LAPACK's info: 0 on success, < 0 for a bad argument, > 0 for the routine's own failure (a matrix
 * that is not positive definite, an eigensolver that did not converge), or -1000 when out of memory. */

/* A (n x n, leading dimension lda) = L L^T: the lower triangle of A is overwritten by L (dpotrf). */
int cuvae_cholesky_lower(int n, double *a, int lda);
/* Solves (L L^T) X = B in place for nrhs right-hand sides, L from cuvae_cholesky_lower (dpotrs). */
int cuvae_cholesky_solve_lower(int n, int nrhs, const double *l, int ldl, double *b, int ldb);
/* Solves A X = B for symmetric positive definite A (lower triangle read, overwritten by its factor) (dposv). */
int cuvae_spd_solve_lower(int n, int nrhs, double *a, int lda, double *b, int ldb);
/* The eigenpairs il..iu (1-based, ascending) of symmetric A (upper triangle read, destroyed): eigenvalues into
 * w[0 .. iu-il], eigenvectors into the columns of z (n x (iu-il+1), leading dimension ldz); *found = their count
 * (dsyevr, range 'I'). */
int cuvae_symmetric_eigen_range(int n, double *a, int lda, int il, int iu, double *w, double *z, int ldz,
                                int *found);
/* All eigenpairs of symmetric A (upper triangle read): ascending eigenvalues into w, eigenvectors overwrite the
 * columns of A (dsyevd). */
int cuvae_symmetric_eigen(int n, double *a, int lda, double *w);

#ifdef __cplusplus
}
#endif
#endif
