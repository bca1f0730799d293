"""Issue 39 items 1 and 6, in-process with torch.cuda patched (no GPU here): the one device
index shared by set_device and device(), the too-many-ranks error, and NCCL's failure settings."""

import datetime

import pytest
import torch
import torch.distributed as td

from trainkit import dist
from trainkit.errors import UserError

_LAUNCH_VARS = ("LOCAL_RANK", "SLURM_LOCALID", "OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "PMI_LOCAL_RANK",
                "LOCAL_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE", "CUDA_VISIBLE_DEVICES",
                "TORCHELASTIC_RUN_ID", "RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                "TORCHELASTIC_RESTART_COUNT", "TORCH_NCCL_ASYNC_ERROR_HANDLING", "OMPI_COMM_WORLD_SIZE",
                "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK")


@pytest.fixture
def gpus(monkeypatch):
    """`gpus(n)`: torch.cuda says n GPUs are visible; returns the list set_device was called with."""
    for var in _LAUNCH_VARS:
        monkeypatch.delenv(var, raising=False)
    calls = []

    def fake(n):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
        monkeypatch.setattr(torch.cuda, "set_device", lambda i: calls.append(int(i)))
        return calls

    return fake


@pytest.mark.parametrize("count,local_rank,local_size,visible,expected", [
    (1, 0, None, None, 0),   # one GPU, one process
    (1, 0, 1, None, 0),      # torchrun --nproc 1 on a 1-GPU node
    (2, 0, 2, None, 0),      # two ranks, two GPUs
    (2, 1, 2, None, 1),
    (1, 1, 2, "3", 0),       # srun --gpus-per-task=1: each rank sees its own GPU as index 0
    (1, 0, 2, "2", 0),
    (4, 1, 2, None, 1),      # fewer ranks than GPUs
])
def test_device_index(gpus, monkeypatch, count, local_rank, local_size, visible, expected):
    gpus(count)
    monkeypatch.setenv("LOCAL_RANK", str(local_rank))
    if local_size is not None:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local_size))
    if visible is not None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert dist._device_index() == expected
    assert dist.device() == torch.device("cuda", expected)


@pytest.mark.parametrize("var", ["LOCAL_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE"])
def test_more_ranks_than_gpus_is_one_line(gpus, monkeypatch, var):
    gpus(1)
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv(var, "2")
    with pytest.raises(UserError) as e:
        dist.device()
    msg = str(e.value)
    assert "\n" not in msg
    assert f"2 ranks on this node ({var})" in msg and "torch.cuda.device_count() is 1" in msg


def _join_capturing(gpus, monkeypatch, count, local_rank, world=2):
    """Run dist._join as torchrun's rank `local_rank` would, init_process_group replaced by a recorder."""
    calls = gpus(count)
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    monkeypatch.setenv("RANK", str(local_rank))
    monkeypatch.setenv("WORLD_SIZE", str(world))
    monkeypatch.setenv("LOCAL_RANK", str(local_rank))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(world))
    seen = {}

    def fake_init(**kwargs):
        import os

        seen.update(kwargs, env=os.environ.get("TORCH_NCCL_ASYNC_ERROR_HANDLING"))

    monkeypatch.setattr(td, "init_process_group", fake_init)
    dist._join(7.0)
    return calls, seen


def test_init_sets_the_shared_device_and_nccl_failure_semantics(gpus, monkeypatch):
    calls, seen = _join_capturing(gpus, monkeypatch, count=2, local_rank=1)
    assert calls == [1]
    assert seen["backend"] == "nccl"
    assert seen["device_id"] == torch.device("cuda", 1)
    # --dist_timeout reaches NCCL's group, and async error handling makes it raise after it
    assert seen["timeout"] == datetime.timedelta(seconds=7.0)
    assert seen["env"] == "1"


def test_init_keeps_a_users_nccl_setting(gpus, monkeypatch):
    monkeypatch.setenv("TORCH_NCCL_ASYNC_ERROR_HANDLING", "3")
    _, seen = _join_capturing(gpus, monkeypatch, count=2, local_rank=0)
    assert seen["env"] == "3"


def test_init_with_more_ranks_than_gpus_stops_before_the_group(gpus, monkeypatch):
    with pytest.raises(UserError,
                       match=r"2 ranks on this node \(LOCAL_WORLD_SIZE\) but torch.cuda.device_count\(\) is 1"):
        _join_capturing(gpus, monkeypatch, count=1, local_rank=1)


def test_gloo_leaves_nccl_settings_alone(gpus, monkeypatch):
    _, seen = _join_capturing(gpus, monkeypatch, count=0, local_rank=1)
    assert seen["backend"] == "gloo" and "device_id" not in seen and seen["env"] is None


@pytest.mark.parametrize("count,nproc,expected", [(0, 2, 2), (1, 2, 1), (2, 2, 2), (4, 2, 2), (8, 16, 8)])
def test_compare_runs_no_more_ranks_than_gpus(gpus, count, nproc, expected):
    from evaluations import compare

    gpus(count)
    assert compare.ranks_for_this_host(nproc) == expected


@pytest.mark.slow
def test_a_hung_peer_fails_the_other_rank_within_dist_timeout(tmp_path, digits):
    """gloo, the path that runs here (NCCL's settings are checked above): rank 1 stopped
    (SIGSTOP, a hung peer), rank 0 released into its next collective; rank 0 fails once
    --dist_timeout has passed with the one 'lost contact' line, and the job ends non-zero."""
    import json
    import os
    import signal
    import subprocess
    import time

    import helpers

    timeout = 8
    run_dir = tmp_path / "run"
    cmd = ["bash", str(helpers.ROOT / "launch" / "run.sh"), "torchrun", "2", "trainkit.selfcheck",
           "--data_dir", str(digits(16)), "--logdir", str(run_dir), "--max_steps", "50", "--hold_step", "2",
           "--save_interval", "1000", "--log_interval", "1"]
    proc = subprocess.Popen(cmd, cwd=str(helpers.ROOT), env=helpers.test_env(TRAINKIT_DIST_TIMEOUT=timeout),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stopped = None
    try:
        holds = [run_dir / f"hold_rank{r}.json" for r in (0, 1)]
        deadline = time.monotonic() + 240
        while not all(h.exists() and h.stat().st_size for h in holds):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        pids = [json.loads(h.read_text())["pid"] for h in holds]
        os.kill(pids[1], signal.SIGSTOP)
        stopped = pids[1]
        released = time.monotonic()
        os.kill(pids[0], signal.SIGTERM)  # rank 0 leaves its hold and meets rank 1 at a collective
        out, err = proc.communicate(timeout=timeout + 90)
        took = time.monotonic() - released
    finally:
        if stopped is not None:
            try:
                os.kill(stopped, signal.SIGCONT)
            except ProcessLookupError:
                pass
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0, (out, err)
    lines = [ln for ln in err.splitlines() if "lost contact with another rank" in ln]
    assert len(lines) == 1 and "rank 0 of 2" in lines[0] and "--dist_timeout" in lines[0], err[-3000:]
    assert timeout <= took < timeout + 60, took
