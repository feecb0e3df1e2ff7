/* Probabilistic PCA (docs/MATH.md section 6): moments, the closed-form and EM fits, the exact log-likelihood, and the
 * conversion into a cuvae checkpoint (equations in include/cuvae/ppca.h). All in double; LAPACK (src/core/linalg.h) for
 * the eigendecompositions and Cholesky factors, CBLAS for the products. */
#include "cuvae/ppca.h"

#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cuvae/checkpoint.h"
#include "cuvae/error.h"
#include "cuvae/model.h"
#include "cuvae/rng.h"
#include "linalg.h"

#define LOG_2PI 1.8378770664093454836
#define ROW_BLOCK 512  /* data rows converted to double at a time */

/* ---- moments ----------------------------------------------------------------------------------------- */

void cuvae_ppca_moments_free(cuvae_ppca_moments *mo) {
  free(mo->mean);
  free(mo->S);
  memset(mo, 0, sizeof *mo);
}

/* b = (1/N) sum x_n, then S = (1/N) sum (x_n - b)(x_n - b)^T by blocks of centred rows (two passes: no
 * cancellation from E[x x^T] - b b^T). */
int cuvae_ppca_moments_compute(cuvae_ppca_moments *mo, const float *x, size_t n, size_t D) {
  memset(mo, 0, sizeof *mo);
  if (n < 2 || D < 2)
    return cuvae_error("ppca: need at least 2 data points of at least 2 features (got %zu x %zu)", n, D);
  if (D > 65536) return cuvae_error("ppca: %zu features: the D x D covariance would not fit in memory", D);
  mo->D = D;
  mo->n = n;
  mo->mean = calloc(D, sizeof(double));
  mo->S = calloc(D * D, sizeof(double));
  double *blk = malloc(ROW_BLOCK * D * sizeof(double));
  if (!mo->mean || !mo->S || !blk) {
    free(blk);
    cuvae_ppca_moments_free(mo);
    return cuvae_error("ppca: out of memory for the %zu x %zu covariance", D, D);
  }
  for (size_t i = 0; i < n; i++)
    for (size_t d = 0; d < D; d++) mo->mean[d] += x[i * D + d];
  for (size_t d = 0; d < D; d++) mo->mean[d] /= (double)n;
  for (size_t i0 = 0; i0 < n; i0 += ROW_BLOCK) {
    const size_t nb = n - i0 < ROW_BLOCK ? n - i0 : ROW_BLOCK;
    for (size_t i = 0; i < nb; i++)
      for (size_t d = 0; d < D; d++) blk[i * D + d] = (double)x[(i0 + i) * D + d] - mo->mean[d];
    /* S (upper) += blk^T blk */
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)D, (int)nb, 1.0, blk, (int)D, 1.0, mo->S, (int)D);
  }
  free(blk);
  for (size_t r = 0; r < D; r++)
    for (size_t c = r; c < D; c++) {
      const double v = mo->S[r * D + c] / (double)n;
      mo->S[r * D + c] = v;
      mo->S[c * D + r] = v;
    }
  for (size_t d = 0; d < D; d++)
    if (!isfinite(mo->S[d * D + d])) {
      cuvae_ppca_moments_free(mo);
      return cuvae_error("ppca: the data's covariance is not finite (feature %zu)", d);
    }
  return 0;
}

static double trace(const double *A, size_t D) {
  double t = 0.0;
  for (size_t d = 0; d < D; d++) t += A[d * D + d];
  return t;
}

/* ---- models -------------------------------------------------------------------------------------------- */

void cuvae_ppca_free(cuvae_ppca *p) {
  free(p->W);
  free(p->b);
  memset(p, 0, sizeof *p);
}

static int ppca_alloc(cuvae_ppca *p, size_t D, size_t Z) {
  memset(p, 0, sizeof *p);
  if (Z < 1 || Z >= D) return cuvae_error("ppca: latent Z = %zu must be from 1 to D - 1 = %zu", Z, D - 1);
  p->D = D;
  p->Z = Z;
  p->W = calloc(D * Z, sizeof(double));
  p->b = calloc(D, sizeof(double));
  if (!p->W || !p->b) {
    cuvae_ppca_free(p);
    return cuvae_error("ppca: out of memory");
  }
  return 0;
}

/* s^2 must be positive (else C is singular): data that lie in a Z-dimensional subspace have no noise to fit. */
static int check_s2(double s2, double trS, size_t D, size_t Z) {
  if (!(s2 > 1e-12 * (trS / (double)D)) || !isfinite(s2))
    return cuvae_error("ppca: the noise variance s^2 = %g is not positive next to the mean variance %g: the data "
                       "lie (numerically) in a %zu-dimensional subspace; choose a smaller latent Z",
                       s2, trS / (double)D, Z);
  return 0;
}

/* M = W^T W + s^2 I (Z x Z), its lower Cholesky factor L (column-major, upper part zero) and log det M. */
static int cholesky_m(const cuvae_ppca *p, double *L, double *logdet) {
  const size_t Z = p->Z;
  if (!(p->s2 > 0.0) || !isfinite(p->s2))
    return cuvae_error("ppca: the noise variance s^2 = %g is not a positive number", p->s2);
  cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)Z, (int)Z, (int)p->D, 1.0, p->W, (int)Z, p->W, (int)Z,
              0.0, L, (int)Z);
  for (size_t j = 0; j < Z; j++) L[j * Z + j] += p->s2;
  if (cuvae_cholesky_lower((int)Z, L, (int)Z) != 0)
    return cuvae_error("ppca: W^T W + s^2 I is not positive definite (s^2 = %g)", p->s2);
  *logdet = 0.0;
  for (size_t j = 0; j < Z; j++) {
    *logdet += 2.0 * log(L[j * Z + j]);
    for (size_t i = 0; i < j; i++) L[j * Z + i] = 0.0;  /* column j, rows above the diagonal */
  }
  return 0;
}

/* Mean log-likelihood from moments: with A = W^T S W and d = m - b,
 * tr(C^-1 S) = (tr S - tr(M^-1 A)) / s^2 and d^T C^-1 d = (||d||^2 - ||L^-1 W^T d||^2) / s^2 (Woodbury). */
int cuvae_ppca_loglik_moments(const cuvae_ppca *p, const cuvae_ppca_moments *mo, double *mean) {
  const size_t D = p->D, Z = p->Z;
  if (mo->D != D) return cuvae_error("ppca: the model has %zu features, the data %zu", D, mo->D);
  double *L = malloc(Z * Z * sizeof(double)), *SW = malloc(D * Z * sizeof(double)),
         *A = malloc(Z * Z * sizeof(double)), *v = malloc(Z * sizeof(double));
  double logdet = 0.0;
  int rc = (!L || !SW || !A || !v) ? cuvae_error("ppca: out of memory") : 0;
  if (rc == 0) rc = cholesky_m(p, L, &logdet);
  if (rc == 0) {
    cblas_dsymm(CblasRowMajor, CblasLeft, CblasUpper, (int)D, (int)Z, 1.0, mo->S, (int)D, p->W, (int)Z, 0.0, SW,
                (int)Z);
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)Z, (int)Z, (int)D, 1.0, p->W, (int)Z, SW, (int)Z, 0.0,
                A, (int)Z);
    /* tr(M^-1 A): the trace of X solving M X = A */
    if (cuvae_cholesky_solve_lower((int)Z, (int)Z, L, (int)Z, A, (int)Z) != 0)
      rc = cuvae_error("ppca: solve with M failed");
  }
  if (rc == 0) {
    double trMA = 0.0, dd = 0.0, vv = 0.0;
    for (size_t j = 0; j < Z; j++) trMA += A[j * Z + j];
    for (size_t j = 0; j < Z; j++) v[j] = 0.0;
    for (size_t d = 0; d < D; d++) {
      const double dm = mo->mean[d] - p->b[d];
      dd += dm * dm;
      for (size_t j = 0; j < Z; j++) v[j] += p->W[d * Z + j] * dm;
    }
    cblas_dtrsv(CblasColMajor, CblasLower, CblasNoTrans, CblasNonUnit, (int)Z, L, (int)Z, v, 1);
    for (size_t j = 0; j < Z; j++) vv += v[j] * v[j];
    const double quad = (trace(mo->S, D) - trMA + dd - vv) / p->s2;
    const double logdetC = (double)(D - Z) * log(p->s2) + logdet;
    *mean = -0.5 * ((double)D * LOG_2PI + logdetC + quad);
  }
  free(L);
  free(SW);
  free(A);
  free(v);
  return rc;
}

int cuvae_ppca_loglik(const cuvae_ppca *p, const float *x, size_t n, double *per_row, double *mean) {
  const size_t D = p->D, Z = p->Z;
  if (n == 0) return cuvae_error("ppca: no data rows");
  double *L = malloc(Z * Z * sizeof(double)), *blk = malloc(ROW_BLOCK * D * sizeof(double)),
         *P = malloc(ROW_BLOCK * Z * sizeof(double));
  double logdet = 0.0, sum = 0.0;
  int rc = (!L || !blk || !P) ? cuvae_error("ppca: out of memory") : 0;
  if (rc == 0) rc = cholesky_m(p, L, &logdet);
  const double c0 = (double)D * LOG_2PI + (double)(D - Z) * log(p->s2) + logdet;  /* D log 2pi + log det C */
  for (size_t i0 = 0; rc == 0 && i0 < n; i0 += ROW_BLOCK) {
    const size_t nb = n - i0 < ROW_BLOCK ? n - i0 : ROW_BLOCK;
    for (size_t i = 0; i < nb; i++)
      for (size_t d = 0; d < D; d++) blk[i * D + d] = (double)x[(i0 + i) * D + d] - p->b[d];
    /* P = (X - b) W, rows p_i = W^T (x_i - b); then, column-major Z x nb, P <- L^-1 P */
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nb, (int)Z, (int)D, 1.0, blk, (int)D, p->W, (int)Z,
                0.0, P, (int)Z);
    cblas_dtrsm(CblasColMajor, CblasLeft, CblasLower, CblasNoTrans, CblasNonUnit, (int)Z, (int)nb, 1.0, L, (int)Z, P,
                (int)Z);
    for (size_t i = 0; i < nb; i++) {
      double xx = 0.0, vv = 0.0;
      for (size_t d = 0; d < D; d++) xx += blk[i * D + d] * blk[i * D + d];
      for (size_t j = 0; j < Z; j++) vv += P[i * Z + j] * P[i * Z + j];
      const double lp = -0.5 * (c0 + (xx - vv) / p->s2);
      if (per_row) per_row[i0 + i] = lp;
      sum += lp;
    }
  }
  if (rc == 0) *mean = sum / (double)n;
  free(L);
  free(blk);
  free(P);
  return rc;
}

/* ---- closed form -------------------------------------------------------------------------------------- */

int cuvae_ppca_fit_closed(const cuvae_ppca_moments *mo, size_t Z, cuvae_ppca *out) {
  const size_t D = mo->D;
  if (ppca_alloc(out, D, Z)) return -1;
  double *A = malloc(D * D * sizeof(double)), *w = malloc(D * sizeof(double)), *U = malloc(D * Z * sizeof(double));
  int rc = (!A || !w || !U) ? cuvae_error("ppca: out of memory") : 0;
  if (rc == 0) {
    /* The Z largest eigenpairs of S (range 'I': indices D-Z+1..D, ascending); U is column-major D x Z. */
    memcpy(A, mo->S, D * D * sizeof(double));
    int found = 0;
    const int info = cuvae_symmetric_eigen_range((int)D, A, (int)D, (int)(D - Z + 1), (int)D, w, U, (int)D, &found);
    if (info != 0 || (size_t)found != Z)
      rc = cuvae_error("ppca: eigendecomposition failed (LAPACK dsyevr info %d)", (int)info);
  }
  if (rc == 0) {
    /* s^2 = mean of the D - Z smallest eigenvalues = (tr S - sum of the Z largest) / (D - Z) */
    const double trS = trace(mo->S, D);
    double top = 0.0;
    for (size_t j = 0; j < Z; j++) top += w[j];
    out->s2 = (trS - top) / (double)(D - Z);
    rc = check_s2(out->s2, trS, D, Z);
  }
  if (rc == 0) {
    /* W = U_Z (L_Z - s^2 I)^{1/2}, columns by decreasing eigenvalue */
    for (size_t j = 0; j < Z; j++) {
      const size_t k = Z - 1 - j;
      const double g = w[k] > out->s2 ? sqrt(w[k] - out->s2) : 0.0;
      for (size_t d = 0; d < D; d++) out->W[d * Z + j] = U[k * D + d] * g;
    }
    memcpy(out->b, mo->mean, D * sizeof(double));
    out->iterations = 0;
    out->converged = 1;
    rc = cuvae_ppca_loglik_moments(out, mo, &out->train_loglik);
  }
  free(A);
  free(w);
  free(U);
  if (rc) cuvae_ppca_free(out);
  return rc;
}

/* ---- EM ---------------------------------------------------------------------------------------------- */

typedef struct em_work {
  double *L, *SW, *B, *K, *Y, *V;
} em_work;

/* One E-step on (W, s^2): L = chol(M), SW = S W, B = W^T S W, and the mean log-likelihood
 * -0.5 [D log 2pi + (D - Z) log s^2 + log det M + (tr S - tr(M^-1 B)) / s^2]  (b = the mean). */
static int em_estep(const cuvae_ppca *p, const cuvae_ppca_moments *mo, double trS, em_work *w, double *ll) {
  const int D = (int)p->D, Z = (int)p->Z;
  double logdet;
  if (cholesky_m(p, w->L, &logdet)) return -1;
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, D, Z, D, 1.0, mo->S, D, p->W, Z, 0.0, w->SW, Z);
  cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Z, Z, D, 1.0, p->W, Z, w->SW, Z, 0.0, w->B, Z);
  memcpy(w->K, w->B, (size_t)Z * Z * sizeof(double));
  if (cuvae_cholesky_solve_lower(Z, Z, w->L, Z, w->K, Z) != 0)
    return cuvae_error("ppca: solve with M failed");
  double trMB = 0.0;
  for (int j = 0; j < Z; j++) trMB += w->K[j * Z + j];
  *ll = -0.5 * ((double)D * LOG_2PI + (double)(D - Z) * log(p->s2) + logdet + (trS - trMB) / p->s2);
  return 0;
}

/* M-step (covariance form). With M = L L^T and B = W^T S W from the E-step:
 * W' = S W (s^2 I + M^-1 B)^-1 = S W (s^2 M + B)^-1 M  [K = s^2 M + B symmetric positive definite];
 * s^2' = (tr S - tr(W'^T S W M^-1)) / D. */
static int em_mstep(cuvae_ppca *p, double trS, em_work *w) {
  const int D = (int)p->D, Z = (int)p->Z;
  /* M = L L^T, rebuilt from the factor */
  double *M = w->V;  /* Z x Z scratch at the start of V (V has D*Z >= Z*Z entries) */
  cblas_dgemm(CblasColMajor, CblasNoTrans, CblasTrans, Z, Z, Z, 1.0, w->L, Z, w->L, Z, 0.0, M, Z);
  for (int i = 0; i < Z * Z; i++) w->K[i] = p->s2 * M[i] + w->B[i];
  /* Y = S W K^-1: column-major, Y^T (Z x D) solves K Y^T = (S W)^T */
  memcpy(w->Y, w->SW, (size_t)D * Z * sizeof(double));
  if (cuvae_spd_solve_lower(Z, D, w->K, Z, w->Y, Z) != 0)
    return cuvae_error("ppca: EM step: s^2 M + W^T S W is not positive definite");
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, D, Z, Z, 1.0, w->Y, Z, M, Z, 0.0, p->W, Z);  /* W' = Y M */
  /* V = S W M^-1: column-major, V^T solves M V^T = (S W)^T */
  memcpy(w->V, w->SW, (size_t)D * Z * sizeof(double));
  if (cuvae_cholesky_solve_lower(Z, D, w->L, Z, w->V, Z) != 0)
    return cuvae_error("ppca: solve with M failed");
  double t = 0.0;
  for (int i = 0; i < D * Z; i++) t += p->W[i] * w->V[i];
  p->s2 = (trS - t) / (double)D;
  return check_s2(p->s2, trS, (size_t)D, (size_t)Z);
}

int cuvae_ppca_fit_em(const cuvae_ppca_moments *mo, size_t Z, const cuvae_ppca_em_opts *opts, cuvae_ppca *out) {
  const size_t D = mo->D;
  if (opts->max_iters < 1) return cuvae_error("ppca: EM needs at least 1 iteration (got %d)", opts->max_iters);
  if (!(opts->tol >= 0.0)) return cuvae_error("ppca: EM tolerance %g must be >= 0", opts->tol);
  if (ppca_alloc(out, D, Z)) return -1;
  em_work w = {malloc(Z * Z * sizeof(double)), malloc(D * Z * sizeof(double)), malloc(Z * Z * sizeof(double)),
               malloc(Z * Z * sizeof(double)), malloc(D * Z * sizeof(double)), malloc(D * Z * sizeof(double))};
  float *g = malloc(D * Z * sizeof(float));
  int rc = (!w.L || !w.SW || !w.B || !w.K || !w.Y || !w.V || !g) ? cuvae_error("ppca: out of memory") : 0;
  const double trS = trace(mo->S, D);
  if (rc == 0 && !(trS > 0.0)) rc = cuvae_error("ppca: the data have no variance (tr S = %g)", trS);
  if (rc == 0) {
    /* W_0 = sqrt(tr S / D) G / sqrt(Z), G ~ N(0, 1) (seeded noise stream); s^2_0 = tr S / D */
    cuvae_noise *gen = cuvae_noise_create(opts->seed);
    rc = gen ? cuvae_noise_normal(gen, 0, g, D * Z) : -1;
    cuvae_noise_destroy(gen);
    const double scale = sqrt(trS / (double)D / (double)Z);
    for (size_t i = 0; rc == 0 && i < D * Z; i++) out->W[i] = scale * g[i];
    out->s2 = trS / (double)D;
    memcpy(out->b, mo->mean, D * sizeof(double));
  }
  double ll = 0.0, prev = 0.0;
  int it = 0;
  for (; rc == 0; it++) {
    rc = em_estep(out, mo, trS, &w, &ll);
    if (rc) break;
    const double change = it ? ll - prev : INFINITY;
    if (opts->progress) opts->progress(opts->ctx, it, ll, change);
    if (it > 0 && fabs(change) < opts->tol) {
      out->converged = 1;
      break;
    }
    if (it == opts->max_iters) break;
    prev = ll;
    rc = em_mstep(out, trS, &w);
  }
  out->iterations = it;  /* M-steps done */
  out->train_loglik = ll;
  free(w.L);
  free(w.SW);
  free(w.B);
  free(w.K);
  free(w.Y);
  free(w.V);
  free(g);
  if (rc) cuvae_ppca_free(out);
  return rc;
}

/* ---- conversion to a cuvae model ------------------------------------------------------------------------ */

int cuvae_ppca_config(const cuvae_config *base, size_t Z, double s2, cuvae_config *out) {
  if (Z < 1 || Z > INT_MAX) return cuvae_error("ppca: latent Z = %zu out of range", Z);
  *out = *base;
  out->n_hidden = 0;
  memset(out->hidden, 0, sizeof out->hidden);
  out->latent = (int)Z;
  out->decoder = CUVAE_DECODER_LINEAR;
  out->likelihood = CUVAE_LIK_GAUSSIAN;
  out->gaussian_variance = CUVAE_VAR_LEARNED_SHARED;
  out->sigma = (float)sqrt(s2);
  if (!(out->sigma > 0.0f)) out->sigma = 1.0f;
  out->conditional = 0;
  out->binarize = CUVAE_BINARIZE_NONE;
  out->dequantize = CUVAE_DEQUANTIZE_NONE;
  out->min_variance = 0.0f;
  out->corrupt.kind = CUVAE_CORRUPT_NONE;
  out->corrupt.level = 0.0f;
  if (out->objective == CUVAE_OBJ_AE) out->objective = CUVAE_OBJ_ELBO;
  return cuvae_config_finalize(out);
}

/* Fills a model's parameters from the pPCA (see cuvae_ppca_save_checkpoint in ppca.h). */
static int fill_params(const cuvae_ppca *p, const cuvae_model *m, float *params) {
  const size_t D = p->D, Z = p->Z;
  const cuvae_tensor *emw = cuvae_model_find(m, "enc.mu.weight"), *elw = cuvae_model_find(m, "enc.lv.weight"),
                     *emb = cuvae_model_find(m, "enc.mu.bias"), *elb = cuvae_model_find(m, "enc.lv.bias"),
                     *dw = cuvae_model_find(m, "dec.out.weight"), *db = cuvae_model_find(m, "dec.out.bias"),
                     *lv = cuvae_model_find(m, "dec.logvar");
  if (!emw || !elw || !emb || !elb || !dw || !db || !lv || m->n_enc != 1 || m->n_dec != 1 || emw->shape[0] != Z ||
      emw->shape[1] != D || dw->shape[0] != D || dw->shape[1] != Z)
    return cuvae_error("ppca: the model layout is not the expected linear Gaussian one");
  double *A = malloc(Z * Z * sizeof(double)), *ev = malloc(Z * sizeof(double)), *WR = malloc(D * Z * sizeof(double));
  int rc = (!A || !ev || !WR) ? cuvae_error("ppca: out of memory") : 0;
  /* R: eigenvectors of W^T W (ascending from dsyevd; reversed so latent 0 carries the most variance) */
  if (rc == 0) {
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)Z, (int)Z, (int)D, 1.0, p->W, (int)Z, p->W, (int)Z, 0.0,
                A, (int)Z);
    if (cuvae_symmetric_eigen((int)Z, A, (int)Z, ev) != 0)
      rc = cuvae_error("ppca: eigendecomposition of W^T W failed");
  }
  if (rc == 0) {
    /* A holds the eigenvectors as columns (column-major); R is A with its columns reversed */
    for (size_t j = 0; j < Z / 2; j++)
      for (size_t r = 0; r < Z; r++) {
        const double t = A[j * Z + r];
        A[j * Z + r] = A[(Z - 1 - j) * Z + r];
        A[(Z - 1 - j) * Z + r] = t;
      }
    /* W R, with R read row-major as the transpose of the column-major A */
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)D, (int)Z, (int)Z, 1.0, p->W, (int)Z, A, (int)Z, 0.0,
                WR, (int)Z);
    for (size_t j = 0; j < Z; j++) {
      /* M_jj = ||(W R)_j||^2 + s^2; the off-diagonal of (W R)^T (W R) is rounding error */
      double m = p->s2, mb = 0.0;
      for (size_t d = 0; d < D; d++) m += WR[d * Z + j] * WR[d * Z + j];
      for (size_t d = 0; d < D; d++) {
        params[emw->offset + j * D + d] = (float)(WR[d * Z + j] / m);  /* M^-1 W^T */
        params[elw->offset + j * D + d] = 0.0f;
        mb += WR[d * Z + j] * p->b[d];
      }
      params[emb->offset + j] = (float)(-mb / m);                   /* -M^-1 W^T b */
      params[elb->offset + j] = (float)log(p->s2 / m);              /* log of the posterior variance s^2 / M_jj */
    }
    for (size_t d = 0; d < D; d++) {
      for (size_t j = 0; j < Z; j++) params[dw->offset + d * Z + j] = (float)WR[d * Z + j];
      params[db->offset + d] = (float)p->b[d];
    }
    params[lv->offset] = (float)log(p->s2);
  }
  free(A);
  free(ev);
  free(WR);
  return rc;
}

int cuvae_ppca_save_checkpoint(const cuvae_ppca *p, const cuvae_config *base, const char *path) {
  cuvae_config cfg;
  cuvae_model m;
  if (cuvae_ppca_config(base, p->Z, p->s2, &cfg) || cuvae_model_build(&m, p->D, &cfg)) return -1;
  float *params = calloc(m.n_params, sizeof(float)), *zeros = calloc(m.n_params, sizeof(float));
  char *ini = cuvae_config_to_ini(&cfg);
  int rc = (!params || !zeros || !ini) ? cuvae_error("ppca: out of memory") : 0;
  if (rc == 0) rc = fill_params(p, &m, params);
  if (rc == 0) {
    cuvae_checkpoint ck;
    memset(&ck, 0, sizeof ck);
    ck.config_ini = ini;
    ck.input_dim = p->D;
    ck.n_tensors = m.n_tensors;
    memcpy(ck.tensors, m.tensors, sizeof ck.tensors);
    ck.n_params = m.n_params;
    ck.params = params;
    ck.adam_m = zeros;
    ck.adam_v = zeros;
    ck.step = 0;
    ck.rng_offset = 0;
    rc = cuvae_checkpoint_save(path, &ck);
  }
  free(params);
  free(zeros);
  free(ini);
  return rc;
}
