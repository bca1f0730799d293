#!/usr/bin/env bash
# Run a long job in a detached tmux session, its output teed to RUN_DIR/launch.log (seed 003).
#
#   launch/tmux.sh SESSION RUN_DIR COMMAND [ARGS...]
#   launch/tmux.sh ddgan_c10 runs/ddgan_c10 launch/run.sh torchrun 4 flags/ddgan/cifar10.sh ddgan.train --logdir runs/ddgan_c10
#
# Attach with `tmux attach -t SESSION`; the job keeps running when you detach or log out.
set -euo pipefail
die() { echo "tmux.sh: error: $*" >&2; exit 2; }
[[ $# -ge 3 ]] || die "usage: tmux.sh SESSION RUN_DIR COMMAND [ARGS...]"
session="$1" run_dir="$2"; shift 2
command -v tmux >/dev/null || die "tmux is not installed"
[[ "$session" =~ ^[A-Za-z0-9_.-]+$ ]] || die "session name '$session' may only hold letters, digits, '_', '.', '-'"
tmux has-session -t "=$session" 2>/dev/null && die "tmux session '$session' already exists"
mkdir -p "$run_dir" || die "$run_dir: cannot create"
printf -v cmd ' %q' "$@"
log=$(cd "$run_dir" && pwd)/launch.log
# pipefail inside the session so the recorded exit status is the job's, not tee's; tee ignores
# Ctrl-C (-i) so that the job, which stops gracefully on it, can still print its last lines.
# When the job ends, the session signals the channel SESSION-done: `tmux wait-for SESSION-done`
# blocks until then (handy in scripts and tests).
tmux new-session -d -s "$session" -c "$PWD" "set -o pipefail; {$cmd; } 2>&1 | tee -i -a $(printf %q "$log"); echo \"exit status \$?\" >> $(printf %q "$log"); tmux wait-for -S $(printf %q "$session-done")"
echo "started tmux session '$session'; log: $log; wait with: tmux wait-for $session-done"
