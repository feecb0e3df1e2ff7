/* cuvae train CONFIG [--set section.key=value]... [--out RUN_DIR] [--device D] [--resume RUN_DIR] */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cuvae/config.h"
#include "cuvae/device.h"
#include "cuvae/dist.h"
#include "cuvae/error.h"
#include "cuvae/train.h"


void help_train(void) {
  printf("usage: cuvae train CONFIG [options]\n"
         "       cuvae train [CONFIG] --resume RUN_DIR [options]\n\n"
         "Trains the VAE described by CONFIG (an INI file with [data] [model] [train]; `cuvae help config`\n"
         "lists every key). Progress goes to stderr (a live bar on a terminal, plain lines otherwise); the final\n"
         "result is one JSON line on stdout. The run directory receives:\n"
         "  config.ini         the effective config (CONFIG plus --set overrides)\n"
         "  metrics.jsonl      one JSON object per epoch (train/test negative ELBO, recon, kl, samples/s, ...)\n"
         "  steps.jsonl        per-step losses every [train] log_every steps\n"
         "  checkpoint.cuvae   the latest checkpoint (written atomically at step 0, every epoch end and on a stop)\n"
         "  samples.png        decoder means of 64 fixed prior samples, rewritten at every epoch end\n"
         "  recon.png          the first 32 test examples above their reconstructions, every epoch end\n"
         "  loss.png           train and test negative ELBO per epoch\n\n"
         "options:\n"
         "  --set S.K=V       override config key K of section S (repeatable), e.g. --set train.epochs=3\n"
         "  --out RUN_DIR     run directory (default: runs/<config name>, numbered if taken)\n"
         "  --device D        auto (default: cuda when present, else cpu), cpu or cuda\n"
         "  --resume RUN_DIR  continue the run in RUN_DIR from its checkpoint; the losses equal those of an\n"
         "                    uninterrupted run. CONFIG defaults to RUN_DIR/config.ini; its architecture must\n"
         "                    match the checkpoint; epochs and max_steps may be raised to train longer.\n"
         "  --progress P      auto (default), bar or lines\n"
         "  -h, --help        this help\n\n"
         "Ctrl-C (SIGINT) or SIGTERM finishes the current step, saves a checkpoint there, prints the command that\n"
         "continues the run and stops (exit 130, or 143 for SIGTERM); a second Ctrl-C stops at once. A run killed\n"
         "outright (SIGKILL, power loss) resumes from its last checkpoint; metrics.jsonl and steps.jsonl are cut back\n"
         "to that checkpoint, so the resumed run's numbers equal those of an uninterrupted run (all but the\n"
         "wall-clock samples_per_s and seconds).\n"
         "A non-finite loss stops training with a message naming the step (exit 1); the last checkpoint stays.\n\n"
         "Data parallel: `mpirun -np N cuvae train CONFIG ...` (or srun) trains on N processes, each taking\n"
         "batch_size / N rows of every batch, with the gradients summed over them (MPI); the result is one process's\n"
         "up to the order of that sum. Rank 0 writes the run directory; a run resumes on any number of ranks; if one\n"
         "rank dies the job stops. Threads per rank: [train] threads (default: the cores the rank is bound to).\n"
         "To stop such a run with a checkpoint, send SIGUSR1 to mpirun (it passes it to every rank; SIGINT and\n"
         "SIGTERM make mpirun kill the job, which then resumes from its last checkpoint). SIGUSR1 stops a\n"
         "one-process run the same way (exit 138).\n");
}

static volatile sig_atomic_t stop_signal = 0;

static void on_stop_signal(int sig) {
  stop_signal = sig;
  cuvae_train_request_stop();
}

/* `s` as one shell word: unchanged when it holds only safe characters, else in single quotes. */
static void shell_word(FILE *f, const char *s) {
  int safe = *s != '\0';
  for (const char *p = s; *p && safe; p++)
    safe = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
           strchr("_./-+,:=@%", *p) != NULL;
  if (safe) {
    fputs(s, f);
    return;
  }
  fputc('\'', f);
  for (const char *p = s; *p; p++) {
    if (*p == '\'')
      fputs("'\\''", f);  /* close the quotes, an escaped quote, reopen */
    else
      fputc(*p, f);
  }
  fputc('\'', f);
}

/* The summary of a run stopped by a signal: where it stands, on stdout as JSON, and the command to continue it. */
static int report_interrupted(const cuvae_train_summary *s, const char *run_dir, const char *device) {
  const int sig = stop_signal ? (int)stop_signal : SIGINT;
  const long long spe = (long long)s->steps_per_epoch, step = (long long)s->step;
  const long long epoch = step > 0 ? (step - 1) / spe + 1 : 1, epoch_step = step > 0 ? (step - 1) % spe + 1 : 0;
  fprintf(stderr, "interrupted by %s: checkpoint saved at step %lld (epoch %lld, step %lld of %lld). Continue the "
                  "run with:\n    ", sig == SIGTERM ? "SIGTERM" : sig == SIGUSR1 ? "SIGUSR1" : "SIGINT",
          step, epoch, epoch_step, spe);
  if (cuvae_dist_size() > 1) fprintf(stderr, "mpirun -np %d ", cuvae_dist_size());
  fprintf(stderr, "cuvae train --resume ");
  shell_word(stderr, run_dir);
  if (strcmp(device, "auto") != 0) fprintf(stderr, " --device %s", device);
  fputc('\n', stderr);
  printf("{\"run_dir\": ");
  cli_json_string(stdout, run_dir);
  printf(", \"step\": %lld, \"epoch\": %lld, \"epoch_step\": %lld, \"steps_per_epoch\": %lld, "
         "\"epochs_completed\": %d, \"seconds\": %.1f, \"interrupted\": true}\n",
         step, epoch, epoch_step, spe, s->epochs_completed, s->seconds);
  return 128 + sig;
}

/* Trains with SIGINT, SIGTERM and SIGUSR1 turned into a stop at the next step; the result as one JSON line on
 * stdout. */
static int run_training(const cuvae_config *cfg, const cuvae_train_opts *opts) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_stop_signal;
  sa.sa_flags = SA_RESETHAND;  /* a second Ctrl-C terminates at once */
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGUSR1, &sa, NULL);  /* what mpirun forwards to every rank (it answers SIGINT / SIGTERM by killing the job) */

  cuvae_train_summary s;
  const int rank = cuvae_dist_rank(), ranks = cuvae_dist_size();
  if (cuvae_train(cfg, opts, &s)) {
    if (ranks == 1)
      fprintf(stderr, "error: %s\n", cuvae_last_error());
    else if (s.failure_agreed == 2 ? rank == 0 : strcmp(cuvae_last_error(), CUVAE_DIST_OTHER_RANK_FAILED) != 0)
      fprintf(stderr, "error (rank %d of %d): %s\n", rank, ranks, cuvae_last_error());
    if (!s.failure_agreed) cuvae_dist_abort(CUVAE_EXIT_FAIL);  /* the other ranks may be waiting for this one */
    return CUVAE_EXIT_FAIL;
  }
  if (rank != 0) return s.interrupted ? 128 + (stop_signal ? (int)stop_signal : SIGINT) : 0;  /* rank 0 reports */
  if (s.interrupted) return report_interrupted(&s, opts->out_dir, opts->device);
  printf("{\"run_dir\": ");
  cli_json_string(stdout, opts->out_dir);
  printf(", \"step\": %lld, \"epochs\": %d, \"test_nelbo\": %.6f, \"recon\": %.6f, "
         "\"kl\": %.6f, \"seconds\": %.1f, \"interrupted\": false}\n",
         (long long)s.step, s.epochs_completed, s.test.nelbo, s.test.recon, s.test.kl, s.seconds);
  return 0;
}

/* What the command line asks for. */
typedef struct train_args {
  cli_config_args config;
  const char *out, *resume, *device, *progress;
} train_args;

enum { HELP_SHOWN = -1 };

/* 0 to go on, HELP_SHOWN after --help, or CUVAE_EXIT_USAGE after a message. */
static int parse_train_args(int argc, char **argv, train_args *a) {
  const char *v;
  for (int i = 1; i < argc; i++) {
    int missing = 0;
    if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
      help_train();
      return HELP_SHOWN;
    } else if ((v = cli_flag_value(argc, argv, &i, "--set", &missing))) {
      if (cli_add_set(&a->config, v)) return CUVAE_EXIT_USAGE;
    } else if (!missing && (v = cli_flag_value(argc, argv, &i, "--out", &missing))) {
      a->out = v;
    } else if (!missing && (v = cli_flag_value(argc, argv, &i, "--device", &missing))) {
      a->device = v;
    } else if (!missing && (v = cli_flag_value(argc, argv, &i, "--resume", &missing))) {
      a->resume = v;
    } else if (!missing && (v = cli_flag_value(argc, argv, &i, "--progress", &missing))) {
      a->progress = v;
    } else if (missing) {
      return CUVAE_EXIT_USAGE;
    } else if (argv[i][0] == '-') {
      fprintf(stderr, "error: unknown option '%s' for train (see cuvae train --help)\n", argv[i]);
      return CUVAE_EXIT_USAGE;
    } else if (cli_add_config(&a->config, "train", argv[i])) {
      return CUVAE_EXIT_USAGE;
    }
  }
  return 0;
}

/* --progress auto | bar | lines; 0, or CUVAE_EXIT_USAGE after a message. */
static int parse_progress(const char *progress, cuvae_progress_mode *mode) {
  if (strcmp(progress, "auto") == 0) {
    *mode = CUVAE_PROGRESS_AUTO;
  } else if (strcmp(progress, "bar") == 0) {
    *mode = CUVAE_PROGRESS_BAR;
  } else if (strcmp(progress, "lines") == 0) {
    *mode = CUVAE_PROGRESS_LINES;
  } else {
    fprintf(stderr, "error: --progress '%s': expected auto, bar or lines\n", progress);
    return CUVAE_EXIT_USAGE;
  }
  return 0;
}


int cmd_train(int argc, char **argv) {
  train_args a = {.device = "auto", .progress = "auto"};
  int rc = parse_train_args(argc, argv, &a);
  if (rc) return rc == HELP_SHOWN ? 0 : rc;
  if (cuvae_device_check(a.device)) {
    fprintf(stderr, "error: %s\n", cuvae_last_error());
    return CUVAE_EXIT_USAGE;
  }
  cuvae_progress_mode mode;
  if ((rc = parse_progress(a.progress, &mode))) return rc;
  if (a.resume && a.out && strcmp(a.resume, a.out) != 0) {
    fprintf(stderr, "error: --resume %s continues that run in place; --out %s conflicts with it\n", a.resume, a.out);
    return CUVAE_EXIT_USAGE;
  }
  char resume_config[CUVAE_PATH_MAX + 16];
  if (!a.config.path && a.resume) {
    snprintf(resume_config, sizeof resume_config, "%s/config.ini", a.resume);
    a.config.path = resume_config;
  }
  if (!a.config.path) {
    fprintf(stderr, "error: train needs a CONFIG file (see cuvae train --help)\n");
    return CUVAE_EXIT_USAGE;
  }
  cuvae_config cfg;
  if ((rc = cli_load_config(&cfg, &a.config))) return rc;

  char run_dir[CUVAE_PATH_MAX];
  if (a.resume)
    snprintf(run_dir, sizeof run_dir, "%s", a.resume);
  else if (a.out)
    snprintf(run_dir, sizeof run_dir, "%s", a.out);
  else
    cli_default_run_dir(a.config.path, run_dir, sizeof run_dir);

  cuvae_train_opts opts = {run_dir, a.resume != NULL, a.device, mode, stderr};
  return run_training(&cfg, &opts);
}
