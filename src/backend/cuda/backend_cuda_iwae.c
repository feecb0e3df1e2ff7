/* The CUDA backend's importance-weighted log-likelihood (src/backend/backend.h, `iwae`; docs/MATH.md section 5):
 *   log_px[i] = logsumexp_k(log w_ik) - log K,   log w = log p(x|z) + log N(z; 0, I) - log N(z; mu, diag exp(lv)),
 * z_k = mu + exp(lv / 2) eps_k, eps from the evaluation noise stream (device Philox: the CPU's numbers).
 *
 * The same plan as the CPU backend (src/backend/cpu/backend_cpu_iwae.c; cuvae_iwae_plan_make, cuvae_iwae_noise_offset), so
 * both use the same eps for every sample. Per pass of R data rows: the encoder once (cuda_dense_forward per layer,
 * mu | lv in the last enc_out), the targets replicated for a full chunk (iwae_replicate_cuda into be->x; a shorter
 * last chunk uses a prefix, the layout being sample-major). Per chunk: eps (one draw of the full stride into
 * be->eps), iwae_reparam_cuda (be->z), the decoder (dec_out), *_nll_grad_cuda without gradient (be->nll_row), and
 * iwae_log_weights_cuda folding the chunk into each row's running (max, sum exp) in device memory (double, fixed
 * reduction order). iwae_finalize_cuda writes the pass's log_px on the device; one copy at the end brings all rows
 * back, so the host never waits inside the loop. Data parallel: pass p is rank (p mod size)'s, the others' rows are
 * zeroed on the device and the ranks' rows gathered on the host at the end (cuvae_iwae_gather).
 *
 * Memory: the backend's buffers for max_batch rows (x, eps, z, nll_row, enc_out, dec_out; grad_a stages rows of a
 * data set that was not uploaded at creation), the per-row state (iwae_state, 2 doubles per pass row; a pass has at
 * most max_batch rows) and the call's log_px (iwae_log_px, one double per data row), all allocated at creation:
 * nothing is allocated per call, except that a set larger than any before (beyond max(n_eval, max_batch) rows)
 * grows iwae_log_px once. */
#include <stdlib.h>

#include "backend_cuda_internal.h"
#include "cuda_check.h"
#include "cuvae/error.h"
#include "cuvae/rng.h"
#include "cuvae_kernels.h"

/* The passes; state[2 * plan->rows] and dev_log_px[ds->n] are device buffers. */
static int iwae_passes(cuda_backend *be, const cuvae_dataset *ds, int K, const cuvae_iwae_plan *plan,
                       double *state, double *dev_log_px, double *log_px) {
  const cuvae_model *m = be->model;
  const int Z = (int)m->latent, D = (int)m->input_dim;
  const size_t n_draw = (size_t)plan->rows * (size_t)plan->chunk * (size_t)Z;  /* every draw's length */
  /* The set uploaded at creation is read in place; any other set is copied up pass by pass. */
  const int resident = ds == be->eval_ds && ds->n == be->n_eval;
  int64_t pass = 0;
  for (size_t start = 0; start < ds->n; start += (size_t)plan->rows, pass++) {
    const int R = (int)(ds->n - start < (size_t)plan->rows ? ds->n - start : (size_t)plan->rows);
    if (!cuvae_dp_owns(be->base.dp, pass)) {  /* another rank's rows: 0 until cuvae_iwae_gather */
      CU_CHECK(cudaMemsetAsync(dev_log_px + start, 0, (size_t)R * sizeof *dev_log_px, be->stream));
      continue;
    }
    const float *x = be->eval_x + start * ds->dim;
    if (!resident) {
      /* grad_a holds max_batch rows of the widest layer (>= D); stream order keeps it until the pass has read it,
       * and ds->x (pageable) outlives the call, which ends with a synchronisation. */
      CU_CHECK(cudaMemcpyAsync(be->grad_a, ds->x + start * ds->dim, (size_t)R * ds->dim * sizeof(float),
                               cudaMemcpyHostToDevice, be->stream));
      x = be->grad_a;
    }
    /* Conditional: the pass's labels, from the resident copy or uploaded (be->labels holds max_batch >= R). */
    const int32_t *labels = be->labels;
    if (m->cond && resident) labels = be->eval_labels + start;
    else if (cuda_labels_upload(be, m->cond ? ds->labels + start : NULL, (size_t)R)) return -1;
    if (cuda_encoder_forward(be, x, labels, R)) return -1;
    const float *mulv = be->enc_out[m->n_enc - 1];
    CU_LAUNCH(be, iwae_replicate_cuda(x, be->x, R, plan->chunk, D, be->stream));
    for (int c = 0; c < plan->n_chunks; c++) {
      const int C = K - c * plan->chunk < plan->chunk ? K - c * plan->chunk : plan->chunk;
      const int B = R * C;
      if (cuda_noise_draw(be, &be->eval_noise, cuvae_iwae_noise_offset(plan, (size_t)Z, pass, c), n_draw)) return -1;
      CU_LAUNCH(be, iwae_reparam_cuda(mulv, be->eps, be->z, R, C, Z, be->stream));
      if (cuda_decoder_forward(be, be->z, labels, R, B)) return -1;
      /* -log p(x | z) per batch row (docs/MATH.md section 4), no gradient. */
      if (cuda_decoder_nll(be, be->dec_out[m->n_dec - 1], be->x, be->nll_row, NULL, NULL, 1.0f, B)) return -1;
      CU_LAUNCH(be, iwae_log_weights_cuda(mulv, be->eps, be->z, be->nll_row, R, C, Z, NULL, state, c == 0, be->stream));
    }
    CU_LAUNCH(be, iwae_finalize_cuda(state, R, K, dev_log_px + start, be->stream));
    if (be->base.progress) CU_CHECK(cudaStreamSynchronize(be->stream));  /* the pass has run, not just been queued */
    cuvae_backend_pass_done(&be->base, pass, ds->n, plan->rows);
  }
  CU_CHECK(cudaMemcpyAsync(log_px, dev_log_px, ds->n * sizeof(double), cudaMemcpyDeviceToHost, be->stream));
  CU_CHECK(cudaStreamSynchronize(be->stream));
  return cuvae_iwae_gather(be->base.dp, log_px, ds->n);
}

int cuda_iwae(cuvae_backend *base, const cuvae_dataset *ds, int K, int batch, double *log_px) {
  cuda_backend *be = (cuda_backend *)base;
  const cuvae_model *m = be->model;
  if (K < 1) return cuvae_error("IWAE: K = %d samples per point must be >= 1", K);
  if (batch < 1) return cuvae_error("IWAE: batch %d must be >= 1", batch);
  if (ds->dim != m->input_dim)
    return cuvae_error("IWAE: the data has %zu features, the model %zu", ds->dim, m->input_dim);
  if (be->n_pending) return cuvae_error("IWAE: %d training steps are pending; collect them first", be->n_pending);
  if (ds->n == 0) return 0;
  if (cuvae_backend_check_labels(m, ds->labels, ds->n, "IWAE")) return -1;
  cuvae_iwae_plan plan;
  if (cuvae_iwae_plan_make(K, batch, be->max_batch, &plan)) return -1;
  if (ds->n > be->iwae_cap) {  /* a set larger than any before: grow the results once, kept for later calls */
    CU_CHECK(cudaStreamSynchronize(be->stream));
    CU_CHECK(cudaFree(be->iwae_log_px));
    be->iwae_log_px = NULL;
    be->iwae_cap = 0;
    CU_CHECK(cudaMalloc((void **)&be->iwae_log_px, ds->n * sizeof(double)));
    be->iwae_cap = ds->n;
  }
  return iwae_passes(be, ds, K, &plan, be->iwae_state, be->iwae_log_px, log_px);
}
