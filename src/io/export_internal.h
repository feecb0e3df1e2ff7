/* Shared by src/io/export.c and src/io/import.c. Private to src/. */
#ifndef CUVAE_EXPORT_INTERNAL_H
#define CUVAE_EXPORT_INTERNAL_H
#include <stddef.h>

#include "cuvae/config.h"

#define EXPORT_FORMAT_NAME "cuvae-vae"
#define EXPORT_FORMAT_VERSION "1"

/* "[a, b]" or "[a]". */
void export_shape_text(char *buf, size_t cap, int rank, const size_t *shape);
/* The hidden widths as the metadata writes them: "400", "512,256", "" for none. */
void export_hidden_text(const cuvae_config *cfg, char *buf, size_t cap);

#endif
