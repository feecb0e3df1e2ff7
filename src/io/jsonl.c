/* One row of a row log read as a flat JSON object: keys, and values that are numbers, booleans, null or strings. */
#include "jsonl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cuvae/error.h"

typedef struct cursor {
  const char *s;
  size_t i;
} cursor;

static void skip_space(cursor *c) {
  while (c->s[c->i] == ' ' || c->s[c->i] == '\t' || c->s[c->i] == '\n' || c->s[c->i] == '\r') c->i++;
}

static int expected(const cursor *c, const char *what) {
  const char ch = c->s[c->i];
  if (ch == '\0') return cuvae_error("column %zu: expected %s, found the end of the line", c->i + 1, what);
  return cuvae_error("column %zu: expected %s, found '%c'", c->i + 1, what, ch);
}

static int hex4(const char *p) {
  static const char digits[] = "0123456789abcdef";
  int v = 0;
  for (int k = 0; k < 4; k++) {
    const char h = p[k];
    const char *digit = h ? strchr(digits, h >= 'A' && h <= 'F' ? h - 'A' + 'a' : h) : NULL;
    if (!digit) return -1;
    const int d = (int)(digit - digits);
    v = 16 * v + d;
  }
  return v;
}

/* A string at the cursor (which is on its opening quote), decoded into out (cap bytes with the NUL; out NULL:
 * skipped). A \u escape beyond ASCII decodes to '?': keys of the logs are ASCII. */
static int read_string(cursor *c, char *out, size_t cap) {
  if (c->s[c->i] != '"') return expected(c, "'\"'");
  c->i++;
  size_t n = 0;
  for (;;) {
    char ch = c->s[c->i];
    if (ch == '"') break;
    if ((unsigned char)ch < 0x20) return ch ? expected(c, "a printable character or '\\u00XX' in a string")
                                             : expected(c, "the closing '\"' of a string");
    if (ch == '\\') {
      const char e = c->s[++c->i];
      const char *from = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t";
      const char *k = e ? strchr(from, e) : NULL;
      if (k) {
        ch = to[k - from];
      } else if (e == 'u' && hex4(c->s + c->i + 1) >= 0) {
        const int u = hex4(c->s + c->i + 1);
        ch = u < 0x80 ? (char)u : '?';
        c->i += 4;
      } else {
        return expected(c, "an escape (\\\" \\\\ \\/ \\b \\f \\n \\r \\t or \\uXXXX)");
      }
    }
    if (out && n + 1 >= cap) return cuvae_error("column %zu: a key longer than %zu bytes", c->i + 1, cap - 1);
    if (out) out[n++] = ch;
    c->i++;
  }
  c->i++;
  if (out) out[n] = '\0';
  return 0;
}

/* A JSON number, or nan / -nan / inf / -inf. */
static int read_number(cursor *c, double *v) {
  const char *p = c->s + c->i;
  const int neg = *p == '-';
  if (strncmp(p + neg, "nan", 3) == 0 || strncmp(p + neg, "inf", 3) == 0) {
    *v = p[neg] == 'n' ? NAN : neg ? -INFINITY : INFINITY;
    c->i += (size_t)neg + 3;
    return 0;
  }
  size_t j = (size_t)neg;
  if (p[j] < '0' || p[j] > '9') return expected(c, "a value (a number, true, false, null or a string)");
  while (p[j] >= '0' && p[j] <= '9') j++;
  if (p[j] == '.') {
    if (p[++j] < '0' || p[j] > '9') return cuvae_error("column %zu: expected a digit after '.'", c->i + j + 1);
    while (p[j] >= '0' && p[j] <= '9') j++;
  }
  if (p[j] == 'e' || p[j] == 'E') {
    j++;
    if (p[j] == '+' || p[j] == '-') j++;
    if (p[j] < '0' || p[j] > '9') return cuvae_error("column %zu: expected a digit in the exponent", c->i + j + 1);
    while (p[j] >= '0' && p[j] <= '9') j++;
  }
  char *end = NULL;
  *v = strtod(p, &end);
  if (end != p + j) return cuvae_error("column %zu: a malformed number", c->i + 1);
  c->i += j;
  return 0;
}

/* The value at the cursor: its kind and number. */
static int read_value(cursor *c, cuvae_jsonl_kind *kind, double *v) {
  static const struct {
    const char *word;
    cuvae_jsonl_kind kind;
    double v;
  } words[] = {{"true", CUVAE_JSONL_BOOL, 1}, {"false", CUVAE_JSONL_BOOL, 0}, {"null", CUVAE_JSONL_NULL, NAN}};
  for (size_t k = 0; k < sizeof words / sizeof words[0]; k++)
    if (strncmp(c->s + c->i, words[k].word, strlen(words[k].word)) == 0) {
      c->i += strlen(words[k].word);
      *kind = words[k].kind;
      *v = words[k].v;
      return 0;
    }
  if (c->s[c->i] == '"') {
    *kind = CUVAE_JSONL_STRING;
    *v = NAN;
    return read_string(c, NULL, 0);
  }
  if (c->s[c->i] == '{' || c->s[c->i] == '[')
    return cuvae_error("column %zu: a nested %s (a row holds numbers, true, false, null and strings)", c->i + 1,
                       c->s[c->i] == '{' ? "object" : "array");
  *kind = CUVAE_JSONL_NUMBER;
  return read_number(c, v);
}

int cuvae_jsonl_parse(const char *line, cuvae_jsonl_visit visit, void *ctx) {
  cursor c = {line, 0};
  skip_space(&c);
  if (line[c.i] != '{') return expected(&c, "'{' (a row is one JSON object)");
  c.i++;
  skip_space(&c);
  for (int more = line[c.i] != '}'; more;) {
    char key[CUVAE_JSONL_KEY_MAX + 1];
    if (read_string(&c, key, sizeof key)) return -1;
    skip_space(&c);
    if (line[c.i] != ':') return expected(&c, "':' after the key");
    c.i++;
    skip_space(&c);
    cuvae_jsonl_kind kind = CUVAE_JSONL_NULL;
    double v = NAN;
    if (read_value(&c, &kind, &v)) return -1;
    const int rc = visit(ctx, key, kind, v);
    if (rc) return rc;
    skip_space(&c);
    more = line[c.i] == ',';
    if (!more && line[c.i] != '}') return expected(&c, "',' or '}'");
    if (more) c.i++;
    skip_space(&c);
  }
  c.i++;
  skip_space(&c);
  if (line[c.i] != '\0') return expected(&c, "the end of the line after the row's '}'");
  return 0;
}
