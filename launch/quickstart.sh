#!/usr/bin/env bash
# The main job, started by the README's first command: every family trained on the embedded
# digits as a 2-process job, sampled with the same seeds, judged and compared in one report.
#
#   bash launch/quickstart.sh [--smoke] [OUT_DIR] [compare flags...]
#
# --smoke: a 3-minute budget and fewer samples (CI). Other flags go to evaluations.compare
# (e.g. --minutes 30, --reuse). Ends by printing the report's path.
set -euo pipefail
# In a checkout, run from its root (runs/ and data/ land there); the copy a wheel installs (under
# site-packages/genbench_data/) runs where it is called and finds the shipped flag files itself.
root="$(cd "$(dirname "$0")/.." && pwd)"
if [[ -f "$root/setup.py" ]]; then cd "$root"; fi
extra=()
if [[ "${1:-}" == "--smoke" ]]; then extra=(--minutes 3 --num_samples 100); shift; fi
out="runs/quickstart-$(date +%Y%m%d-%H%M%S)"
# OUT_DIR is optional: a first argument that looks like a flag belongs to evaluations.compare
if [[ $# -gt 0 && "$1" != -* ]]; then out="$1"; shift; fi
exec "${PYTHON:-python3}" -m evaluations.compare --config flags/compare/digits.sh --logdir "$out" "${extra[@]}" "$@"
