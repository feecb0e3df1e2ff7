/* Fuzz harness for the config parser (src/core/config.c, src/core/config_check.c): each input is loaded as INI text over the
 * defaults (from memory and from a file), and each of its lines is applied as a --set assignment. A config that
 * loads and finalizes must come back unchanged through its own INI output (cuvae_config_to_ini, as checkpoints
 * store it). */
#include <stdlib.h>
#include <string.h>

#include "cuvae/config.h"
#include "cuvae/error.h"
#include "fuzz.h"
#include "fuzz_checks.h"

/* to_ini, load, finalize: the same config again. */
static void check_round_trip(const cuvae_config *c) {
  char *ini = cuvae_config_to_ini(c);
  FUZZ_REQUIRE(ini != NULL);
  cuvae_config back;
  cuvae_config_defaults(&back);
  if (cuvae_config_load_string(&back, ini, "<round trip>") != 0 || cuvae_config_finalize(&back) != 0) {
    fprintf(stderr, "fuzz: the config's own INI text does not load: %s\n%s", cuvae_last_error(), ini);
    abort();
  }
  FUZZ_REQUIRE(memcmp(c, &back, sizeof back) == 0);
  free(ini);
}

/* Every line (up to the newline) as one --set argument. */
static void apply_sets(const char *text) {
  cuvae_config c;
  cuvae_config_defaults(&c);
  char line[2048];
  int applied = 0;
  for (const char *p = text; *p;) {
    const char *nl = strchr(p, '\n');
    size_t len = nl ? (size_t)(nl - p) : strlen(p);
    if (len < sizeof line) {
      memcpy(line, p, len);
      line[len] = '\0';
      cuvae_clear_error();
      int rc = cuvae_config_set(&c, line);
      FUZZ_REQUIRE(rc == 0 || (rc == -1 && cuvae_last_error()[0] != '\0'));
      applied += rc == 0;
    }
    p += len + (nl != NULL);
  }
  if (applied && cuvae_config_finalize(&c) == 0) check_round_trip(&c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > (1u << 20)) return 0;
  char *text = malloc(size + 1);
  FUZZ_REQUIRE(text != NULL);
  memcpy(text, data, size);
  text[size] = '\0'; /* an embedded NUL ends the text, as it does for a C string from anywhere */
  cuvae_config c;
  cuvae_config_defaults(&c);
  cuvae_clear_error();
  int rc = cuvae_config_load_string(&c, text, "<fuzz>");
  FUZZ_REQUIRE(rc == 0 || (rc == -1 && cuvae_last_error()[0] != '\0'));
  /* The file reader refuses NUL bytes; otherwise it must agree with the text reader. */
  cuvae_config cf;
  cuvae_config_defaults(&cf);
  int rc_file = cuvae_config_load_file(&cf, fuzz_file(data, size));
  if (memchr(data, '\0', size) == NULL) FUZZ_REQUIRE(rc_file == rc);
  if (rc == 0 && cuvae_config_finalize(&c) == 0) check_round_trip(&c);
  apply_sets(text);
  free(text);
  return 0;
}
