#!/usr/bin/env bash
# The main job on the embedded digits data set, started by the README's first command.
#
#   bash launch/quickstart.sh [--smoke] [OUT_DIR]
#
# Exports sklearn's digits to data/digits (once), then runs the runtime self-check as a 2-process
# job (mpiexec when mpi4py and mpiexec are installed, else torchrun) and prints where its run
# directory is. --smoke runs a few steps only (CI). The family comparison will replace the
# self-check here as the families land.
set -euo pipefail
cd "$(dirname "$0")/.."
smoke=0
if [[ "${1:-}" == "--smoke" ]]; then smoke=1; shift; fi
out="${1:-runs/quickstart-$(date +%Y%m%d-%H%M%S)}"
python="${PYTHON:-python3}"

"$python" datasets/digits.py --out data/digits --size 32

if command -v mpiexec >/dev/null && "$python" -c "import mpi4py" 2>/dev/null; then launcher=mpiexec; else launcher=torchrun; fi
extra=()
[[ $smoke == 1 ]] && extra=(--max_steps 20 --save_interval 10 --log_interval 10)
bash launch/run.sh "$launcher" 2 flags/trainkit/selfcheck_digits.sh trainkit.selfcheck \
  --data_dir data/digits/train --logdir "$out/selfcheck" "${extra[@]}"

echo "quickstart finished: run directory $out/selfcheck (options.json, progress.csv, checkpoints)"
