/* The comparison of cuvae verify (verify_backends.h): the CPU reference backend and the CUDA backend from the same
 * initial state, rows and noise; step 0 and the evaluation at the initial parameters judged against derived bounds,
 * the later steps' drift reported. */
#include "verify_backends.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "cuvae/error.h"
#include "cuvae/model.h"
#include "cuvae/rng.h"

/* What the comparison works on: the caller's sets, model and backends, and its own buffers. */
typedef struct pair {
  const cuvae_config *cfg;
  const cuvae_dataset *train, *test;
  const cuvae_model *m;
  cuvae_backend *cpu, *cuda;
  uint32_t *perm, *rows;
  float *a, *b;  /* n_params each: one backend's vector, the other's */
} pair;

/* The gap G between the two backends' values of one GEMM entry, relative to its magnitude sum S = sum_k |a_k b_k|,
 * when their operands agree (docs/ARCHITECTURE.md, "cuvae verify"): each side is within gamma_K S of the exact
 * product of what it multiplies (Higham 3.1); tf32 adds the GPU's rounding of both operands to 10 fraction bits
 * (2 u_tf32, the CPU runs fp32), bf16 each side's rounding of both operands to 7 (2 u16 + u16^2, docs/MATH.md (8.3)). */
static double gemm_gap(cuvae_precision precision, int K) {
  const double u = ldexp(1.0, -24), gamma = K * u / (1 - K * u);
  if (precision == CUVAE_PRECISION_BF16) {
    const double u16 = ldexp(1.0, -8);
    return 2 * (2 * u16 + u16 * u16 + gamma);
  }
  if (precision == CUVAE_PRECISION_TF32) return 2 * ldexp(1.0, -11) + 2 * gamma;
  return 2 * gamma;
}

/* The step's GEMMs' longest inner dimension: a layer's in (forward), out (input gradient) or the rows (weight
 * gradient: the decoder's are batch x samples). */
static int longest_inner(const cuvae_model *m, const cuvae_config *cfg) {
  size_t k = (size_t)cfg->batch_size * (size_t)(cfg->samples > 1 ? cfg->samples : 1);
  for (int s = 0; s < 2; s++) {
    const cuvae_layer *layers = s ? m->dec : m->enc;
    for (int i = 0; i < (s ? m->n_dec : m->n_enc); i++) {
      if (layers[i].in > k) k = layers[i].in;
      if (layers[i].out > k) k = layers[i].out;
    }
  }
  return (int)k;
}

/* A loss (evaluation or step): the forward's n_enc + n_dec GEMMs each within G of its magnitude sum, the terms
 * being non-negative sums whose magnitude is the loss (the condition assumed), plus 1e-4 for the elementwise
 * functions and the noise's Box-Muller (the parity tests' allowance, tests/cuda/test_backend_parity.cc). */
static double loss_bound(const pair *p) {
  return (p->m->n_enc + p->m->n_dec) * gemm_gap(p->cfg->precision, longest_inner(p->m, p->cfg)) + 1e-4;
}

/* A gradient tensor, as a share of its largest entry: the forward's and the backward's 2 (n_enc + n_dec) GEMMs, each
 * within G of a magnitude sum <= 0.4 max|g| (the condition assumed, tests/cuda/parity_util.h); at least 1e-5. */
static double grad_bound(const pair *p) {
  const double b = 0.8 * (p->m->n_enc + p->m->n_dec) * gemm_gap(p->cfg->precision, longest_inner(p->m, p->cfg));
  return b > 1e-5 ? b : 1e-5;
}

static void judge(cuvae_verify_check *c, double cpu, double cuda, double bound) {
  c->diff = fabs(cpu - cuda) / (fabs(cpu) > 1e-30 ? fabs(cpu) : 1e-30);
  c->bound = bound;
  c->ok = c->diff <= bound;
}

/* Training step t's rows: the trainer's epoch permutation (cuvae_shuffle with the config's seed), batch t mod the
 * epoch's full batches. */
static const uint32_t *rows_of_step(pair *p, int64_t t) {
  const int B = p->cfg->batch_size;
  const int64_t per_epoch = (int64_t)(p->train->n / (size_t)B);
  cuvae_shuffle(p->perm, p->train->n, p->cfg->seed, t / per_epoch);
  memcpy(p->rows, p->perm + (size_t)(t % per_epoch) * (size_t)B, (size_t)B * sizeof *p->rows);
  return p->rows;
}

/* Every gradient tensor of the last step: max over entries beyond 1e-4 |g_cpu| of |d g| / max|g_cpu|. */
static int judge_gradient(pair *p, cuvae_verify_check *c) {
  if (p->cpu->get_grad(p->cpu, p->a) || p->cuda->get_grad(p->cuda, p->b)) return -1;
  c->bound = grad_bound(p);
  c->diff = 0.0;
  for (int i = 0; i < p->m->n_tensors; i++) {
    const cuvae_tensor *t = &p->m->tensors[i];
    double scale = 0.0, worst = 0.0;
    for (size_t j = t->offset; j < t->offset + t->count; j++) scale = fmax(scale, fabs((double)p->a[j]));
    for (size_t j = t->offset; j < t->offset + t->count; j++) {
      const double d = fabs((double)p->a[j] - (double)p->b[j]) - 1e-4 * fabs((double)p->a[j]);
      worst = fmax(worst, d / (scale > 0.0 ? scale : 1.0));
    }
    if (!(worst <= c->diff)) {  /* NaN counts as worst */
      c->diff = worst;
      snprintf(c->where, sizeof c->where, "%s", t->name);
    }
  }
  c->ok = c->diff <= c->bound;
  return 0;
}

/* Both backends' parameters into p->a (CPU) and p->b (CUDA); their Adam moments go to a scratch buffer. */
static int params_of_both(pair *p) {
  const size_t n = p->m->n_params;
  float *scratch = malloc(2 * n * sizeof *scratch);
  if (!scratch) return cuvae_error("out of memory");
  const int rc = p->cpu->get_state(p->cpu, p->a, scratch, scratch + n) ||
                 p->cuda->get_state(p->cuda, p->b, scratch, scratch + n);
  free(scratch);
  return rc ? -1 : 0;
}

/* The same bits at the start (both from cuvae_model_init with the config's seed), else nothing can be compared. */
static int same_start(pair *p) {
  if (params_of_both(p)) return -1;
  if (memcmp(p->a, p->b, p->m->n_params * sizeof *p->a) != 0)
    return cuvae_error("internal: the two backends start from different parameters");
  return 0;
}

static void log_check(FILE *log, const char *what, const cuvae_verify_check *c) {
  if (!log) return;
  fprintf(log, "  %-44s %-9.3g bound %-9.3g %s%s%s\n", what, c->diff, c->bound, c->ok ? "ok" : "DIFFERENT",
          c->where[0] ? "  worst: " : "", c->where);
}

/* Steps 0..steps-1 on both; step 0 judged, the later ones' largest loss difference and the final parameters' kept. */
static int run_steps(pair *p, int steps, FILE *log, cuvae_verify_result *out) {
  for (int64_t t = 0; t < steps; t++) {
    const uint32_t *rows = rows_of_step(p, t);
    cuvae_step_result rc, rg;
    if (cuvae_backend_step(p->cpu, rows, p->cfg->batch_size, t, &rc) ||
        cuvae_backend_step(p->cuda, rows, p->cfg->batch_size, t, &rg))
      return -1;
    if (t == 0) {
      judge(&out->loss, rc.loss.nelbo, rg.loss.nelbo, loss_bound(p));
      if (judge_gradient(p, &out->grad)) return -1;
      if (log) fprintf(log, "step 0 (cpu nelbo %.9g, cuda %.9g):\n", rc.loss.nelbo, rg.loss.nelbo);
      log_check(log, "batch loss, |d| / |nelbo|", &out->loss);
      log_check(log, "gradient, max |d| / max |g| per tensor", &out->grad);
    } else {
      const double d = fabs(rc.loss.nelbo - rg.loss.nelbo) / fmax(fabs(rc.loss.nelbo), 1e-30);
      if (!(d <= out->drift_loss)) out->drift_loss = d, out->drift_step = (int)t;
    }
  }
  if (params_of_both(p)) return -1;
  for (size_t i = 0; i < p->m->n_params; i++)
    out->drift_params = fmax(out->drift_params, fabs((double)p->a[i] - (double)p->b[i]) / p->cfg->lr);
  return 0;
}

/* The evaluation at the initial parameters, then the steps. */
static int compare(pair *p, const cuvae_verify_opts *opts, cuvae_verify_result *out) {
  FILE *log = opts->log;
  snprintf(out->cpu_gemm, sizeof out->cpu_gemm, "%s", p->cpu->gemm);
  snprintf(out->cuda_gemm, sizeof out->cuda_gemm, "%s", p->cuda->gemm);
  for (int i = 0; log && i < 2; i++) {
    const cuvae_backend *be = i ? p->cuda : p->cpu;
    if (be->notice[0]) fprintf(log, "note (%s): %s\n", be->name, be->notice);
  }
  if (log)
    fprintf(log, "cpu:  %s\ncuda: %s\nsame initial parameters on both (%zu values)\n", out->cpu_gemm, out->cuda_gemm,
            p->m->n_values);
  cuvae_loss ec, eg;
  if (p->cpu->evaluate(p->cpu, p->test, p->cfg->eval_batch_size, &ec) ||
      p->cuda->evaluate(p->cuda, p->test, p->cfg->eval_batch_size, &eg))
    return -1;
  judge(&out->eval, ec.nelbo, eg.nelbo, loss_bound(p));
  if (log) fprintf(log, "evaluation, test split, initial parameters (cpu nelbo %.9g, cuda %.9g):\n", ec.nelbo, eg.nelbo);
  log_check(log, "nelbo, |d| / |nelbo|", &out->eval);
  if (run_steps(p, opts->steps, log, out)) return -1;
  out->steps = opts->steps;
  out->agree = out->eval.ok && out->loss.ok && out->grad.ok;
  if (log && opts->steps > 1)
    fprintf(log, "steps 1..%d (reported, not judged: the differences feed back through the parameters):\n"
                 "  largest batch-loss difference %.3g (step %d); after step %d max |dp| = %.3g lr\n",
            opts->steps - 1, out->drift_loss, out->drift_step, opts->steps - 1, out->drift_params);
  return 0;
}

int cuvae_verify_backends(const cuvae_config *cfg, const cuvae_model *m, const cuvae_dataset *train,
                          const cuvae_dataset *test, cuvae_backend *cpu, cuvae_backend *cuda,
                          const cuvae_verify_opts *opts, cuvae_verify_result *out) {
  memset(out, 0, sizeof *out);
  if (opts->steps < 1) return cuvae_error("cuvae verify: steps must be at least 1 (got %d)", opts->steps);
  if ((size_t)cfg->batch_size > train->n || train->n > UINT32_MAX)
    return cuvae_error("[train] batch_size %d does not fit the training set of %zu examples", cfg->batch_size,
                       train->n);
  pair p = {.cfg = cfg, .train = train, .test = test, .m = m, .cpu = cpu, .cuda = cuda};
  p.perm = malloc(train->n * sizeof *p.perm);
  p.rows = malloc((size_t)cfg->batch_size * sizeof *p.rows);
  p.a = malloc(m->n_params * sizeof *p.a);
  p.b = malloc(m->n_params * sizeof *p.b);
  int rc = p.perm && p.rows && p.a && p.b ? 0 : cuvae_error("out of memory");
  if (rc == 0) rc = same_start(&p) || compare(&p, opts, out) ? -1 : 0;
  free(p.perm);
  free(p.rows);
  free(p.a);
  free(p.b);
  return rc;
}
