/* Probabilistic PCA (docs/MATH.md section 6; Tipping & Bishop 1999): the linear Gaussian model
 *   x = W z + b + e,  z ~ N(0, I_Z),  e ~ N(0, s^2 I_D),  so  p(x) = N(x; b, C),  C = W W^T + s^2 I.
 * Fitted by maximum likelihood in closed form (eigendecomposition of the sample covariance) or by EM, evaluated
 * by its exact log-likelihood, and converted into a cuvae checkpoint whose encoder is the exact posterior.
 * Everything is computed in double; data are float rows [n][D]. Details and results: docs/PPCA.md. */
#ifndef CUVAE_PPCA_H
#define CUVAE_PPCA_H
#include <stddef.h>
#include <stdint.h>

#include "cuvae/config.h"
#ifdef __cplusplus
extern "C" {
#endif

/* The data's first two moments: mean b = (1/N) sum x_n and the ML sample covariance
 * S = (1/N) sum (x_n - b)(x_n - b)^T (full D x D, both triangles filled). */
typedef struct cuvae_ppca_moments {
  size_t D, n;
  double *mean;  /* [D] */
  double *S;     /* [D][D] */
} cuvae_ppca_moments;

int cuvae_ppca_moments_compute(cuvae_ppca_moments *mo, const float *x, size_t n, size_t D);
void cuvae_ppca_moments_free(cuvae_ppca_moments *mo);

/* A fitted model. */
typedef struct cuvae_ppca {
  size_t D, Z;
  double *W;          /* [D][Z] row-major */
  double *b;          /* [D] */
  double s2;          /* noise variance s^2 > 0 */
  int iterations;     /* EM iterations run (0 for the closed form) */
  int converged;      /* EM: 1 when the log-likelihood change fell below the tolerance (closed form: 1) */
  double train_loglik;/* mean log p(x) per data point over the fitting data, at the returned parameters */
} cuvae_ppca;

void cuvae_ppca_free(cuvae_ppca *p);

/* Closed form: S = U L U^T, l_1 >= ... >= l_D; s^2 = (tr S - l_1 - ... - l_Z) / (D - Z) (the mean of the D - Z
 * smallest eigenvalues), W = U_Z (L_Z - s^2 I)^{1/2}, b = mean. Needs 1 <= Z < D and s^2 > 0. */
int cuvae_ppca_fit_closed(const cuvae_ppca_moments *mo, size_t Z, cuvae_ppca *out);

/* EM in its covariance form (the data enter only through S; O(D^2 Z) per iteration), docs/MATH.md section 6:
 *   E-step  M = W^T W + s^2 I,  E[z_n] = M^-1 W^T (x_n - b),  E[z z^T]_n = s^2 M^-1 + E[z_n] E[z_n]^T;
 *   M-step  W' = (sum (x_n - b) E[z_n]^T)(sum E[z z^T]_n)^-1 = S W (s^2 I + M^-1 W^T S W)^-1,
 *           s^2' = (1/(N D)) sum [ ||x_n - b||^2 - 2 E[z_n]^T W'^T (x_n - b) + tr(E[z z^T]_n W'^T W') ]
 *                = (1/D) tr(S - S W M^-1 W'^T)   (using W' sum E[zz^T] = sum (x - b) E[z]^T).
 * Start: W_0 = sqrt(tr S / D) * G / sqrt(Z), G[d][j] ~ N(0, 1) from the noise stream of `seed` (rng.h),
 * s^2_0 = tr S / D. Stops when the mean log-likelihood per point changes by less than `tol` nats between two
 * iterations, or after max_iters. progress (optional) is called after every iteration. */
typedef struct cuvae_ppca_em_opts {
  int max_iters;
  double tol;
  uint64_t seed;
  void (*progress)(void *ctx, int iter, double loglik, double change);
  void *ctx;
} cuvae_ppca_em_opts;

int cuvae_ppca_fit_em(const cuvae_ppca_moments *mo, size_t Z, const cuvae_ppca_em_opts *opts, cuvae_ppca *out);

/* Exact log-likelihood log N(x; b, C) of each of n rows (per_row, optional, n values) and their mean (*mean).
 * Woodbury and the matrix determinant lemma with M = W^T W + s^2 I = L L^T (Cholesky):
 *   (x - b)^T C^-1 (x - b) = (||x - b||^2 - ||L^-1 W^T (x - b)||^2) / s^2,
 *   log det C = (D - Z) log s^2 + log det M,
 *   log p(x) = -0.5 [ D log 2pi + log det C + (x - b)^T C^-1 (x - b) ]. */
int cuvae_ppca_loglik(const cuvae_ppca *p, const float *x, size_t n, double *per_row, double *mean);

/* The same mean from a data set's moments alone (mean m, covariance S about m), as used during EM:
 *   mean (x - b)^T C^-1 (x - b) = tr(C^-1 (S + (m - b)(m - b)^T)). */
int cuvae_ppca_loglik_moments(const cuvae_ppca *p, const cuvae_ppca_moments *mo, double *mean);

/* The config of the equivalent cuvae model: base's [data] and [train] keys, with [model] hidden = (none),
 * decoder = linear, likelihood = gaussian, gaussian_variance = learned_shared, sigma = s, latent = Z,
 * conditional = 0; and what a Gaussian model cannot take: [data] binarize = none, corrupt = none, and
 * [train] objective = elbo when it was ae; the fit is that of the data as given: [data] dequantize = none, [model]
 * min_variance = 0. Finalized (dataset paths resolved). */
int cuvae_ppca_config(const cuvae_config *base, size_t Z, double s2, cuvae_config *out);

/* Writes the checkpoint of the model: decoder dec.out.weight = W R [D][Z], dec.out.bias = b, dec.logvar = log s^2,
 * where R (the eigenvectors of W^T W, by decreasing eigenvalue) makes (W R)^T (W R) = Lambda diagonal without
 * changing W W^T; the encoder is the exact posterior p(z|x) = N(M^-1 W^T (x - b), s^2 M^-1), M = Lambda + s^2 I
 * diagonal: enc.mu.weight = M^-1 W^T, enc.mu.bias = -M^-1 W^T b, enc.lv.weight = 0, enc.lv.bias_j = log(s^2/M_jj).
 * Step 0, zero Adam moments; config_ini from cuvae_ppca_config(base, ...). */
int cuvae_ppca_save_checkpoint(const cuvae_ppca *p, const cuvae_config *base, const char *path);

#ifdef __cplusplus
}
#endif
#endif
