#!/usr/bin/env bash
# Regenerates docs/CONFIG.md from the program's own schema (`cuvae help config`).
#   scripts/gen_config_doc.sh [path/to/cuvae]        (default: build/cuvae)
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-build/cuvae}"
{
  echo '# Config reference'
  echo
  echo 'Every key `cuvae` accepts, as printed by `cuvae help config`. The schema itself is the key table in'
  echo '`src/core/config.c`; `tests/test_cli.cc` fails when this page and the program disagree (regenerate it with'
  echo '`scripts/gen_config_doc.sh`).'
  echo
  echo '```'
  "$bin" help config
  echo '```'
} > docs/CONFIG.md
