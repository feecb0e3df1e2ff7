/* cuvae export | import | encode | decode (docs/EXPORT.md) */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "cuvae/device.h"
#include "cuvae/error.h"
#include "cuvae/export.h"

void help_export(void) {
  printf("usage: cuvae export CHECKPOINT --out PATH [--format safetensors|npy]\n\n"
         "Writes the parameters of CHECKPOINT for PyTorch, named and shaped like the module CuvaeVAE in\n"
         "scripts/torch_vae_module.py (nn.Linear: weight [out, in], bias [out]; names encoder.0.weight, ...,\n"
         "encoder_head.weight [2Z, h] = mu rows then logvar rows, decoder.0.weight, ...). Mapping: docs/EXPORT.md.\n\n"
         "  safetensors  one file: F32 little-endian tensors; __metadata__ holds input_dim, hidden, latent,\n"
         "               likelihood, sigma, activation, step and the full config INI. Loads with\n"
         "               model.load_state_dict(load_safetensors(PATH)[0]) (no safetensors package needed)\n"
         "  npy          a new directory PATH with one NAME.npy per tensor plus metadata.json\n\n"
         "Output is written to a temporary name and renamed into place when complete; a directory PATH for npy\n"
         "must not exist or be empty. Prints one JSON line.\n\n"
         "options:\n"
         "  --out PATH      where to write (required)\n"
         "  --format F      safetensors (default) or npy\n"
         "  -h, --help      this help\n\n"
         "example:\n"
         "  cuvae export runs/fmnist/checkpoint.cuvae --out fmnist.safetensors\n");
}

void help_import(void) {
  printf("usage: cuvae import SAFETENSORS --out CHECKPOINT\n\n"
         "Reads a safetensors file in the layout `cuvae export` writes (for example a model trained further in\n"
         "PyTorch and saved with save_safetensors from scripts/torch_vae_module.py) and writes a cuvae checkpoint\n"
         "with these parameters, fresh (zero) Adam moments and step 0, which `cuvae eval`, `encode`, `decode` and\n"
         "`train --resume` accept. The architecture comes from __metadata__ (input_dim and config); every tensor\n"
         "must be present with dtype F32 and the expected shape, and the offsets must cover the data exactly.\n"
         "export followed by import gives bit-identical parameters. Prints one JSON line.\n\n"
         "options:\n"
         "  --out PATH      checkpoint to write (required; written atomically)\n"
         "  -h, --help      this help\n");
}

void help_encode(void) {
  printf("usage: cuvae encode CHECKPOINT --in DATA --out OUT.npy [--labels LABELS] [--device auto|cpu|cuda]\n\n"
         "Encodes every row of DATA (IDX, plain or .gz, or .npy float32/uint8 as the data loaders accept; uint8 is\n"
         "scaled to [0, 1]; D features per row) and writes float32 [N, 2Z] to OUT.npy: each row is mu (Z values)\n"
         "then logvar (Z values) of q(z|x). No noise is drawn. Prints one JSON line.\n\n"
         "options:\n"
         "  --in DATA       input rows (required)\n"
         "  --labels FILE   each row's class (1-D IDX or .npy): required by a conditional model, else refused\n"
         "  --out OUT.npy   output (required; written atomically)\n"
         "  --device D      auto (default), cpu or cuda\n"
         "  -h, --help      this help\n");
}

void help_decode(void) {
  printf("usage: cuvae decode CHECKPOINT --in Z.npy --out OUT.npy [--labels LABELS] [--device auto|cpu|cuda]\n\n"
         "Decodes latent vectors: Z.npy is float32 [N, Z]; writes float32 [N, D] to OUT.npy, the decoder's means\n"
         "(sigmoid of the logits for a Bernoulli decoder, the output for a Gaussian one). Prints one JSON line.\n\n"
         "options:\n"
         "  --in Z.npy      latent vectors (required)\n"
         "  --labels FILE   each row's class (1-D IDX or .npy): required by a conditional model, else refused\n"
         "  --out OUT.npy   output (required; written atomically)\n"
         "  --device D      auto (default), cpu or cuda\n"
         "  -h, --help      this help\n");
}

/* Parsed command line of one of these commands. */
typedef struct args {
  const char *pos, *out, *in, *format, *device, *labels;
} args;

enum { WANT_IN = 1, WANT_FORMAT = 2, WANT_DEVICE = 4 };

/* 0: parsed; 1: help printed (exit 0); CUVAE_EXIT_USAGE: message printed. */
static int parse_args(int argc, char **argv, const char *posname, int want, void (*help)(void), args *a) {
  const char *cmd = argv[0], *v;
  memset(a, 0, sizeof *a);
  for (int i = 1; i < argc; i++) {
    int missing = 0;
    if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
      help();
      return 1;
    } else if ((v = cli_flag_value(argc, argv, &i, "--out", &missing))) {
      a->out = v;
    } else if (!missing && (want & WANT_IN) && (v = cli_flag_value(argc, argv, &i, "--in", &missing))) {
      a->in = v;
    } else if (!missing && (want & WANT_IN) && (v = cli_flag_value(argc, argv, &i, "--labels", &missing))) {
      a->labels = v;
    } else if (!missing && (want & WANT_FORMAT) && (v = cli_flag_value(argc, argv, &i, "--format", &missing))) {
      a->format = v;
    } else if (!missing && (want & WANT_DEVICE) && (v = cli_flag_value(argc, argv, &i, "--device", &missing))) {
      a->device = v;
    } else if (missing) {
      return CUVAE_EXIT_USAGE;
    } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
      fprintf(stderr, "error: unknown option '%s' for %s (see cuvae %s --help)\n", argv[i], cmd, cmd);
      return CUVAE_EXIT_USAGE;
    } else if (a->pos) {
      fprintf(stderr, "error: %s takes one %s, got '%s' and '%s'\n", cmd, posname, a->pos, argv[i]);
      return CUVAE_EXIT_USAGE;
    } else {
      a->pos = argv[i];
    }
  }
  if (!a->pos) {
    fprintf(stderr, "error: %s needs a %s (see cuvae %s --help)\n", cmd, posname, cmd);
    return CUVAE_EXIT_USAGE;
  }
  if ((want & WANT_IN) && (!a->in || !a->in[0])) {
    fprintf(stderr, "error: %s needs --in (see cuvae %s --help)\n", cmd, cmd);
    return CUVAE_EXIT_USAGE;
  }
  if (!a->out || !a->out[0]) {
    fprintf(stderr, "error: %s needs --out (see cuvae %s --help)\n", cmd, cmd);
    return CUVAE_EXIT_USAGE;
  }
  if (a->format && strcmp(a->format, "safetensors") != 0 && strcmp(a->format, "npy") != 0) {
    fprintf(stderr, "error: --format '%s': expected safetensors or npy\n", a->format);
    return CUVAE_EXIT_USAGE;
  }
  if (!a->device) a->device = "auto";
  if ((want & WANT_DEVICE) && cuvae_device_check(a->device)) {
    fprintf(stderr, "error: %s\n", cuvae_last_error());
    return CUVAE_EXIT_USAGE;
  }
  return 0;
}

static int fail(void) {
  fprintf(stderr, "error: %s\n", cuvae_last_error());
  return CUVAE_EXIT_FAIL;
}

/* {"KEY1": "in", "KEY2": "out" ... the common start of the report line. */
static void report_paths(const char *k1, const char *v1, const char *k2, const char *v2) {
  printf("{\"%s\": ", k1);
  cli_json_string(stdout, v1);
  printf(", \"%s\": ", k2);
  cli_json_string(stdout, v2);
}

int cmd_export(int argc, char **argv) {
  args a;
  int rc = parse_args(argc, argv, "CHECKPOINT", WANT_FORMAT, help_export, &a);
  if (rc) return rc == 1 ? 0 : rc;
  const int npy = a.format && strcmp(a.format, "npy") == 0;
  if (cuvae_export_checkpoint(a.pos, npy ? CUVAE_EXPORT_NPY : CUVAE_EXPORT_SAFETENSORS, a.out)) return fail();
  report_paths("checkpoint", a.pos, "out", a.out);
  printf(", \"format\": \"%s\"}\n", npy ? "npy" : "safetensors");
  return 0;
}

int cmd_import(int argc, char **argv) {
  args a;
  int rc = parse_args(argc, argv, "SAFETENSORS file", 0, help_import, &a);
  if (rc) return rc == 1 ? 0 : rc;
  if (cuvae_import_to_checkpoint(a.pos, a.out)) return fail();
  report_paths("safetensors", a.pos, "checkpoint", a.out);
  printf("}\n");
  return 0;
}

static int codec(int argc, char **argv, int decode) {
  args a;
  int rc = parse_args(argc, argv, "CHECKPOINT", WANT_IN | WANT_DEVICE, decode ? help_decode : help_encode, &a);
  if (rc) return rc == 1 ? 0 : rc;
  cuvae_codec_info info;
  if ((decode ? cuvae_decode_file : cuvae_encode_file)(a.pos, a.device, a.in, a.labels, a.out, &info)) return fail();
  report_paths("checkpoint", a.pos, "out", a.out);
  printf(", \"rows\": %zu, \"cols\": %zu, \"device\": \"%s\"}\n", info.rows, info.cols, info.device);
  return 0;
}

int cmd_encode(int argc, char **argv) { return codec(argc, argv, 0); }
int cmd_decode(int argc, char **argv) { return codec(argc, argv, 1); }
