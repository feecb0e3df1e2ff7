/* Column-major LAPACK calls (see linalg.h) with their workspace queries, on OpenBLAS's bundled LAPACK. */
#include "linalg.h"

#include <lapack.h>
#include <stdlib.h>

int cuvae_cholesky_lower(int n, double *a, int lda) {
  const lapack_int ln = n, llda = lda;
  lapack_int info = 0;
  LAPACK_dpotrf("L", &ln, a, &llda, &info);
  return (int)info;
}

int cuvae_cholesky_solve_lower(int n, int nrhs, const double *l, int ldl, double *b, int ldb) {
  const lapack_int ln = n, lnrhs = nrhs, lldl = ldl, lldb = ldb;
  lapack_int info = 0;
  LAPACK_dpotrs("L", &ln, &lnrhs, l, &lldl, b, &lldb, &info);
  return (int)info;
}

int cuvae_spd_solve_lower(int n, int nrhs, double *a, int lda, double *b, int ldb) {
  const lapack_int ln = n, lnrhs = nrhs, llda = lda, lldb = ldb;
  lapack_int info = 0;
  LAPACK_dposv("L", &ln, &lnrhs, a, &llda, b, &lldb, &info);
  return (int)info;
}

int cuvae_symmetric_eigen_range(int n, double *a, int lda, int il, int iu, double *w, double *z, int ldz,
                                int *found) {
  const lapack_int ln = n, llda = lda, lil = il, liu = iu, lldz = ldz;
  const double none = 0.0;
  lapack_int m = 0, info = 0, lwork = -1, liwork = -1, iwork_size = 0;
  double work_size = 0.0;
  lapack_int *isuppz = malloc(2 * (size_t)(n > 0 ? n : 1) * sizeof *isuppz);
  if (!isuppz) return -1000;
  /* workspace query (lwork = liwork = -1), then the call */
  LAPACK_dsyevr("V", "I", "U", &ln, a, &llda, &none, &none, &lil, &liu, &none, &m, w, z, &lldz, isuppz, &work_size,
                &lwork, &iwork_size, &liwork, &info);
  double *work = NULL;
  lapack_int *iwork = NULL;
  if (info == 0) {
    lwork = (lapack_int)work_size;
    liwork = iwork_size;
    work = malloc((size_t)lwork * sizeof *work);
    iwork = malloc((size_t)liwork * sizeof *iwork);
    if (!work || !iwork) info = -1000;
  }
  if (info == 0)
    LAPACK_dsyevr("V", "I", "U", &ln, a, &llda, &none, &none, &lil, &liu, &none, &m, w, z, &lldz, isuppz, work,
                  &lwork, iwork, &liwork, &info);
  *found = (int)m;
  free(work);
  free(iwork);
  free(isuppz);
  return (int)info;
}

int cuvae_symmetric_eigen(int n, double *a, int lda, double *w) {
  const lapack_int ln = n, llda = lda;
  lapack_int info = 0, lwork = -1, liwork = -1, iwork_size = 0;
  double work_size = 0.0;
  LAPACK_dsyevd("V", "U", &ln, a, &llda, w, &work_size, &lwork, &iwork_size, &liwork, &info);
  if (info != 0) return (int)info;
  lwork = (lapack_int)work_size;
  liwork = iwork_size;
  double *work = malloc((size_t)lwork * sizeof *work);
  lapack_int *iwork = malloc((size_t)liwork * sizeof *iwork);
  if (work && iwork)
    LAPACK_dsyevd("V", "U", &ln, a, &llda, w, work, &lwork, iwork, &liwork, &info);
  else
    info = -1000;
  free(work);
  free(iwork);
  return (int)info;
}
