/* The data splits a config names, loaded and checked against the model it configures (labels of a conditional
 * model, [0, 1] for a Bernoulli decoder, binarization and dequantization drawn at load); and mkdir -p for run
 * directories. Shared by training, evaluation, inference, pPCA and the benchmarks. */
#ifndef CUVAE_DATA_SPLIT_H
#define CUVAE_DATA_SPLIT_H
#include "cuvae/config.h"
#include "cuvae/data.h"
#ifdef __cplusplus
extern "C" {
#endif

/* Which split of a config: its train or its test files (NONE: no data, for callers that take an optional split). */
enum { CUVAE_SPLIT_NONE = -1, CUVAE_SPLIT_TRAIN = 0, CUVAE_SPLIT_TEST = 1, CUVAE_SPLIT_VALIDATION = 2 };

/* Loads the CUVAE_SPLIT_TRAIN or CUVAE_SPLIT_TEST split named by cfg and checks it fits the model (finite, in
 * [0, 1] for a Bernoulli decoder, labels inside 0..classes-1 for a conditional one, 8-bit values k/255 with [data]
 * dequantize = uniform); static binarization (and a dynamic run's test split) is drawn here, from the stream of
 * rng.h, and so is the dequantization of the test split (the training split stays 8-bit: the backends dequantize
 * it afresh every step). */
int cuvae_load_split(const cuvae_config *cfg, int which, cuvae_dataset *ds);
/* With [data] dequantize = uniform, dequantizes every value of ds once, y = (255 x + u) / 256 with the uniforms of
 * stream cfg seed ^ CUVAE_SEED_STATIC ^ which in row order (docs/MATH.md (4.6), include/cuvae/rng.h), as
 * cuvae_load_split does to the test split: for a set that is evaluated rather than trained on, taken from the
 * training split (cuvae eval --split train; rows held out for validation, with a `which` of their own); else 0
 * and nothing. ds must hold 8-bit values (cuvae_load_split checked them). */
int cuvae_dequantize_split(const cuvae_config *cfg, int which, cuvae_dataset *ds);
/* [data] validation = N: the last N examples of the loaded training split move into *val (train keeps the first
 * n - N), drawn once as the test split is (binarize = dynamic: x ~ Bernoulli(x); dequantize = uniform), from the
 * streams of `which` = CUVAE_SPLIT_VALIDATION. N = 0: val is left empty. Fails when N leaves no training data. */
int cuvae_hold_out(const cuvae_config *cfg, cuvae_dataset *train, cuvae_dataset *val);
/* mkdir -p PATH; fails with a message when a component cannot be created or PATH is not a directory. */
int cuvae_make_dirs(const char *path);

#ifdef __cplusplus
}
#endif
#endif
