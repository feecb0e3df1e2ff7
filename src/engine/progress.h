/* Progress display: a one-line bar refreshed in place on a terminal, plain log lines otherwise. */
#ifndef CUVAE_PROGRESS_H
#define CUVAE_PROGRESS_H
#include <stdint.h>
#include <stdio.h>

#include "cuvae/objective.h"
#include "cuvae/error.h"

typedef struct cuvae_progress {
  FILE *out;
  int bar;                /* 1: in-place bar (terminal); 0: plain lines every `every` steps */
  int every;
  int64_t total_steps, first_step;
  int epochs;
  double t_start, t_last_draw;
  int line_dirty;         /* the bar occupies the current line */
} cuvae_progress;

double cuvae_now_seconds(void);
void cuvae_progress_begin(cuvae_progress *p, FILE *out, int mode, int every, int64_t first_step,
                          int64_t total_steps, int epochs);
/* After step `step` (1-based count of completed steps) of epoch `epoch` (1-based). */
void cuvae_progress_step(cuvae_progress *p, int64_t step, int epoch, const cuvae_loss *loss,
                         double samples_per_s);
/* A whole log line (the bar is cleared first and redrawn at the next step). */
void cuvae_progress_log(cuvae_progress *p, const char *fmt, ...) CUVAE_PRINTF(2, 3);
void cuvae_progress_end(cuvae_progress *p);

#endif
