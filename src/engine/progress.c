/* The training progress display (progress.h): a bar redrawn in place on a terminal, plain lines otherwise. */
#include "progress.h"

#include <stdarg.h>
#include <time.h>
#include <unistd.h>

double cuvae_now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void cuvae_progress_begin(cuvae_progress *p, FILE *out, int mode, int every, int64_t first_step,
                          int64_t total_steps, int epochs) {
  p->out = out;
  p->bar = mode < 0 ? isatty(fileno(out)) : mode;
  p->every = every > 0 ? every : 1;
  p->first_step = first_step;
  p->total_steps = total_steps;
  p->epochs = epochs;
  p->t_start = cuvae_now_seconds();
  p->t_last_draw = 0.0;
  p->line_dirty = 0;
}

static void format_duration(double s, char *buf, size_t n) {
  if (!(s >= 0.0) || s > 1e7) {
    snprintf(buf, n, "--");
    return;
  }
  const long t = (long)(s + 0.5);
  if (t >= 3600)
    snprintf(buf, n, "%ldh%02ldm", t / 3600, (t / 60) % 60);
  else if (t >= 60)
    snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
  else
    snprintf(buf, n, "%lds", t);
}

void cuvae_progress_step(cuvae_progress *p, int64_t step, int epoch, const cuvae_loss *loss,
                         double samples_per_s) {
  const double now = cuvae_now_seconds();
  const int last = step == p->total_steps;
  if (p->bar) {
    if (!last && now - p->t_last_draw < 0.1) return;  /* at most 10 redraws per second */
  } else if (step % p->every != 0 && !last) {
    return;
  }
  p->t_last_draw = now;
  const double done = (double)(step - p->first_step), left = (double)(p->total_steps - step);
  const double eta = done > 0 ? (now - p->t_start) / done * left : -1.0;
  char eta_s[32];
  format_duration(eta, eta_s, sizeof eta_s);
  if (p->bar) {
    const int width = 24;
    const int filled = p->total_steps > 0 ? (int)(width * (double)step / (double)p->total_steps) : width;
    char bar[32];
    for (int i = 0; i < width; i++) bar[i] = i < filled ? '#' : '.';
    bar[width] = '\0';
    fprintf(p->out, "\r\033[K[%s] step %lld/%lld  epoch %d/%d  loss %.2f  %.0f samples/s  ETA %s", bar,
            (long long)step, (long long)p->total_steps, epoch, p->epochs, loss->nelbo, samples_per_s, eta_s);
    p->line_dirty = 1;
  } else {
    fprintf(p->out, "step %lld/%lld epoch %d/%d loss %.4f recon %.4f kl %.4f samples/s %.0f eta %s\n",
            (long long)step, (long long)p->total_steps, epoch, p->epochs, loss->nelbo, loss->recon, loss->kl,
            samples_per_s, eta_s);
  }
  fflush(p->out);
}

void cuvae_progress_log(cuvae_progress *p, const char *fmt, ...) {
  if (p->line_dirty) {
    fputs("\r\033[K", p->out);
    p->line_dirty = 0;
  }
  va_list ap;
  va_start(ap, fmt);
  vfprintf(p->out, fmt, ap);
  va_end(ap);
  fputc('\n', p->out);
  fflush(p->out);
}

void cuvae_progress_end(cuvae_progress *p) {
  if (p->line_dirty) {
    fputc('\n', p->out);
    p->line_dirty = 0;
  }
  fflush(p->out);
}
