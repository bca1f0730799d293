#!/usr/bin/env bash
# The GPU check in one command: every family trained in fp32 / fp16 / bf16 on every local GPU,
# FLOPs and MFU, 50k DDGAN samples, FID feature throughput against pytorch-fid; one markdown
# table. Options are benchmarks/gpu_check.py's (--dry_run: the same on the CPU at toy sizes).
#
#   bash benchmarks/gpu_check.sh [--out benchmarks/gpu_check_results.md] [--dry_run] [--help]
#
# Environment: PYTHON (default: python3 on PATH), the interpreter of the driver and of every job.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# no cd: --out and --workdir are the caller's paths; the driver finds the repository itself
exec "${PYTHON:-python3}" "$here/gpu_check.py" "$@"
