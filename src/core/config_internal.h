/* The config schema shared by src/core/config.c (the key table, parsing, --set) and src/core/config_check.c (cross-key checks,
 * finalize, INI output, the printed schema, architecture comparison). Private to src/. The key table itself is
 * defined once, in src/core/config.c. */
#ifndef CUVAE_CONFIG_INTERNAL_H
#define CUVAE_CONFIG_INTERNAL_H
#include <stddef.h>

#include "cuvae/config.h"

typedef enum { T_INT, T_INT64, T_UINT64, T_FLOAT, T_STRING, T_ENUM, T_INT_LIST, T_CORRUPT } key_type;
enum { HAS_MIN = 1, HAS_MAX = 2, MIN_EXCL = 4, MAX_EXCL = 8 }; /* key_def.bounds */

typedef struct {
  const char *section, *name;
  key_type type;
  size_t offset, size;          /* the field in cuvae_config (strings: buffer incl. NUL; lists: whole array) */
  unsigned bounds;              /* which of min/max apply, and whether they are exclusive */
  double min, max;              /* numbers; for lists, the bounds of each entry */
  const char *def;              /* default, as INI text */
  const char *const *choices;   /* enum: names in value order; string: the allowed values (NULL = any) */
  const char *help;
  size_t count_offset;          /* lists: the int holding the number of entries */
} key_def;

extern const key_def cfg_keys[];  /* the schema */
extern const int cfg_n_keys;
/* Choice names, in enum value order (NULL-terminated). */
extern const char *const cfg_likelihoods[], *const cfg_activations[], *const cfg_inits[], *const cfg_false_true[],
    *const cfg_variances[], *const cfg_decoders[], *const cfg_objectives[], *const cfg_binarize[],
    *const cfg_dequantize[], *const cfg_precisions[], *const cfg_lr_schedules[];
/* Named datasets: their default directory (replaced by $CUVAE_DATA_DIR) and the files in it, in the order of
 * cfg_path_keys: train_images, train_labels, test_images, test_labels. */
typedef struct {
  const char *name, *dir, *files[4];
} cfg_dataset;
extern const cfg_dataset cfg_datasets[];
extern const int cfg_n_datasets;
extern const char *const cfg_path_keys[4];

/* The index of section.name in cfg_keys, or -1. */
int cfg_find_key(const char *section, const char *name);
/* "a, b, \"\" (empty)": the choices of an enum or restricted string. */
const char *cfg_choice_list(const char *const *choices, const char *sep, char *buf, size_t n);
/* Shortest "%.Ng" text that reads back as exactly f. */
void cfg_format_float(float f, char *buf, size_t n);
/* The value of key k in c, as INI text. */
void cfg_format_value(const cuvae_config *c, const key_def *k, char *buf, size_t n);

#endif
