"""Real multi-process runs of the runtime self-check: mpiexec, torchrun, multi-node torchrun,
resume, a dead rank, SIGTERM. Every run is a subprocess started through launch/run.sh."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys

import pytest
import torch

import helpers
from trainkit import checkpoint, data, logger

pytestmark = pytest.mark.slow

STEPS = ["--max_steps", "10", "--save_interval", "5", "--log_interval", "5", "--batch_size", "4"]


def _params(run_dir, rank):
    return torch.load(os.path.join(run_dir, f"params_rank{rank}.pt"), weights_only=True)


def _indices(run_dir, rank):
    with open(os.path.join(run_dir, f"indices_rank{rank}.json")) as f:
        return json.load(f)


def _assert_same_tensors(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        if torch.is_tensor(a[k]):
            assert torch.equal(a[k], b[k]), k
        elif isinstance(a[k], dict):
            _assert_same_tensors(a[k], b[k])
        elif isinstance(a[k], list):
            for x, y in zip(a[k], b[k]):
                _assert_same_tensors({"_": x}, {"_": y})
        else:
            assert a[k] == b[k], k


@pytest.fixture(scope="module")
def two_rank_runs(digits, tmp_path_factory):
    """launcher -> (process, run dir) of one 10-step 2-rank self-check run on the digits, started
    on first use. Several tests read the same run (none writes to it): test_two_ranks_agree_shard_and_reduce
    checks it, the resume test compares with torchrun's, the data-cache test with mpiexec's."""
    root = tmp_path_factory.mktemp("two_rank_runs")
    made = {}

    def get(launcher):
        if launcher not in made:
            run_dir = root / launcher
            proc = helpers.launch(launcher, 2, "trainkit.selfcheck", "--data_dir", digits(16), "--logdir", run_dir,
                                  "--dump", *STEPS)
            assert proc.returncode == 0, helpers.describe(proc)
            made[launcher] = proc, run_dir
        return made[launcher]

    return get


@pytest.mark.parametrize("launcher", ["mpiexec", "torchrun"])
def test_two_ranks_agree_shard_and_reduce(launcher, digits, two_rank_runs):
    proc, run_dir = two_rank_runs(launcher)
    assert "+ " in proc.stderr  # run.sh printed the command it ran
    # all ranks hold the same parameters after the steps
    _assert_same_tensors(_params(run_dir, 0), _params(run_dir, 1))
    # each global batch is split disjointly, and the two halves make up exactly that batch
    whole = data.Batches(data.load_dataset(str(digits(16)), 16, channels=1), 8, seed=0, rank=0, world=1)
    r0, r1 = _indices(run_dir, 0)["batches"], _indices(run_dir, 1)["batches"]
    assert len(r0) == len(r1) == 10
    for k, (a, b) in enumerate(zip(r0, r1)):
        assert not set(a) & set(b)
        assert sorted(a + b) == sorted(whole.indices(k).tolist())
    # progress.csv holds the rank-reduced mean (mean of ranks 0 and 1)
    rows = logger.read_progress(str(run_dir))
    assert [r["step"] for r in rows] == [5.0, 10.0]
    assert all(r["rank"] == 0.5 for r in rows)
    assert all(0 < r["loss"] < 10 for r in rows)
    # the checkpoint reloads with identical tensors
    ck = checkpoint.latest(str(run_dir))
    assert ck.step == 10
    _assert_same_tensors(ck.load("model"), _params(run_dir, 0))
    assert ck.has("ema_0.99_") and ck.has("ema_0.9_") and ck.has("opt")
    options = json.loads((run_dir / "options.json").read_text())
    assert options["_run"]["world_size"] == 2 and options["max_steps"] == 10


def test_resume_is_bit_exact_on_two_ranks(digits, tmp_path, two_rank_runs):
    split = tmp_path / "split"
    common = ["--data_dir", digits(16), "--batch_size", "4", "--save_interval", "5", "--log_interval", "5", "--dump"]
    # the straight 10-step run is the torchrun one of two_rank_runs: these flags and --max_steps 10 (STEPS)
    straight = two_rank_runs("torchrun")[1]
    b1 = helpers.launch("torchrun", 2, "trainkit.selfcheck", *common, "--logdir", split, "--max_steps", "5")
    assert b1.returncode == 0, helpers.describe(b1)
    b2 = helpers.launch("torchrun", 2, "trainkit.selfcheck", *common, "--logdir", split, "--max_steps", "10",
                        "--resume_checkpoint", split)
    assert b2.returncode == 0, helpers.describe(b2)
    assert f"resuming from {split} step 5" in b2.stdout and _indices(split, 0)["start"] == 5
    x, y = checkpoint.latest(str(straight)), checkpoint.latest(str(split))
    assert x.step == y.step == 10
    for prefix in ["model", "opt", "ema_0.99_", "ema_0.9_"]:
        _assert_same_tensors(x.load(prefix), y.load(prefix))
    _assert_same_tensors(x.state["rng"][1], y.state["rng"][1])  # rank 1's RNG too


def test_multinode_torchrun_on_one_machine(digits, tmp_path):
    """Two torchrun agents, one process each, meet at a c10d rendezvous and form one job. As root,
    under a host name that does not resolve (torchrun publishes the host name unless told an
    address: the agents used to wait 10 minutes for each other; run.sh gives loopback endpoints
    a loopback local address)."""
    port = helpers.free_port()
    run_dir = tmp_path / "run"
    unresolvable = os.geteuid() == 0 and shutil.which("unshare") is not None
    # the fork server's children keep its host name: real interpreters under a name of their own
    env = helpers._base_env() if unresolvable else helpers.test_env()
    agents = []
    for node_rank in (0, 1):
        cmd = ["bash", helpers.ROOT / "launch" / "run.sh", "--nnodes", "2", "--node_rank", str(node_rank),
               "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", f"t{port}", "torchrun", "1",
               "trainkit.selfcheck", "--data_dir", digits(16), "--logdir", run_dir, "--dump", *STEPS]
        if unresolvable:
            cmd = ["unshare", "--uts", "--", "bash", "-c", 'hostname "tk-unresolvable-$$"; exec "$@"', "_", *cmd]
        agents.append(subprocess.Popen([str(c) for c in cmd], cwd=helpers.ROOT, env=env,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=600) for p in agents]
    for p, (out, err) in zip(agents, outs):
        assert p.returncode == 0, f"exit {p.returncode}\n{out[-3000:]}\n{err[-3000:]}"
    assert "--rdzv_backend c10d" in outs[0][1]
    _assert_same_tensors(_params(run_dir, 0), _params(run_dir, 1))
    assert all(r["rank"] == 0.5 for r in logger.read_progress(str(run_dir)))


def test_a_large_folder_is_decoded_once_per_node_and_mapped_by_every_rank(digits, tmp_path, two_rank_runs):
    folder = tmp_path / "images"
    shutil.copytree(digits(16), folder)
    cache = tmp_path / "cache"
    env = helpers.test_env(TRAINKIT_DATA_CACHE=cache, TRAINKIT_DATA_CACHE_MB=0)

    def train(name, launcher="mpiexec", **kw):
        return helpers.launch(launcher, 2, "trainkit.selfcheck", "--data_dir", folder, "--logdir", tmp_path / name,
                              "--dump", *STEPS, **kw)

    # without the cache: the mpiexec run of two_rank_runs, the same flags on the same images (the
    # folder here is a copy of them)
    plain = two_rank_runs("mpiexec")[1]
    cached = train("cached", env=env)
    assert cached.returncode == 0, helpers.describe(cached)
    (name,) = os.listdir(cache)  # one file, no temporary left
    assert name.endswith(f"-{len(os.listdir(folder))}x1x16x16.u8")
    _assert_same_tensors(_params(tmp_path / "cached", 0), _params(plain, 0))
    # Blank every image but keep its size and time: both ranks of the next run read the cache,
    # not the folder, so they train exactly as before.
    for path in folder.iterdir():
        st = path.stat()
        path.write_bytes(bytes(st.st_size))
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    reused = train("reused", "torchrun", env=env)
    assert reused.returncode == 0, helpers.describe(reused)
    _assert_same_tensors(_params(tmp_path / "reused", 1), _params(plain, 1))
    # A changed image makes a new file: the decoding ranks fail on the blanked images, and
    # every rank stops with its error.
    sorted(folder.iterdir())[3].write_bytes(b"not an image")
    failed = train("failed", env=env)
    assert failed.returncode != 0, helpers.describe(failed)
    errors = [line for line in helpers.error_lines(failed) if "error:" in line]
    assert len(errors) == 2 and all(f"{folder}/0_00000.png: cannot read image" in e for e in errors), errors
    assert os.listdir(cache) == [name]


# A dead rank: tests/faults/test_signals.py kills one rank of every family under both launchers.


def test_sigterm_to_a_plain_process_checkpoints_and_exits_zero(digits, tmp_path):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "trainkit.selfcheck", "--data_dir", str(digits(16)), "--logdir", str(run_dir),
           "--max_steps", "100000000", "--log_interval", "1", "--save_interval", "1000000"]
    proc = subprocess.Popen(cmd, cwd=helpers.ROOT, env=helpers.test_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:  # wait for evidence of training, not for a timer
            if line.startswith("| step") and int(line.split("|")[2]) >= 3:
                break
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    stopped = re.search(r"^stopped at step (\d+) by a signal", out, re.M)
    assert stopped, out[-2000:]
    step = int(stopped[1])
    ck = checkpoint.latest(str(run_dir))
    assert ck is not None and ck.step == step >= 3


def test_sigterm_on_one_rank_stops_every_rank_at_the_same_step(digits, tmp_path):
    """Rank 0 alone is signalled after step 4. The ranks vote every few steps (trainkit.loop), so
    the contract is: both stop after the same step, at or after 4, checkpointed, exit 0."""
    run_dir = tmp_path / "run"
    proc = helpers.launch("torchrun", 2, "trainkit.selfcheck", "--data_dir", digits(16), "--logdir", run_dir,
                          "--max_steps", "1000", "--save_interval", "1000", "--selfterm_step", "4", "--dump")
    assert proc.returncode == 0, helpers.describe(proc)
    stopped = re.search(r"^stopped at step (\d+) by a signal", proc.stdout, re.M)
    assert stopped and 4 <= int(stopped[1]) < 1000, proc.stdout[-2000:]
    step = int(stopped[1])
    assert checkpoint.latest(str(run_dir)).step == step
    assert len(_indices(run_dir, 0)["batches"]) == len(_indices(run_dir, 1)["batches"]) == step


def test_tmux_runs_a_detached_job_and_logs_it(digits, tmp_path):
    import shutil

    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    session = f"tk-test-{helpers.free_port()}"
    run_dir = tmp_path / "run"
    env = helpers.test_env(TMUX_TMPDIR=str(tmp_path))  # a private tmux server for this test
    started = helpers._run(["bash", helpers.ROOT / "launch" / "tmux.sh", session, run_dir, "bash",
                            helpers.ROOT / "launch" / "run.sh", "local", "1", "trainkit.selfcheck",
                            "--data_dir", digits(16), "--logdir", run_dir, "--max_steps", "3"], 60, env, None)
    assert started.returncode == 0, helpers.describe(started)
    try:
        done = helpers._run(["tmux", "wait-for", f"{session}-done"], 300, env, None)
        assert done.returncode == 0
        log = (run_dir / "launch.log").read_text()
        assert "done at step 3" in log and log.rstrip().endswith("exit status 0")
        # a second job under a name that is still running is refused
        tmux_sh = ["bash", helpers.ROOT / "launch" / "tmux.sh", "held", tmp_path / "held"]
        assert helpers._run([*tmux_sh, "tmux", "wait-for", "release"], 60, env, None).returncode == 0
        again = helpers._run([*tmux_sh, "true"], 60, env, None)
        assert again.returncode == 2 and "tmux session 'held' already exists" in again.stderr
        helpers._run(["tmux", "wait-for", "-S", "release"], 60, env, None)
    finally:
        helpers._run(["tmux", "kill-server"], 60, env, None)


def test_deadline_stops_like_a_signal(digits, tmp_path):
    """A deadline already past: the first step ends the run with a checkpoint and exit 0."""
    import time

    run_dir = tmp_path / "run"
    proc = helpers.launch("torchrun", 2, "trainkit.selfcheck", "--data_dir", digits(16), "--logdir", run_dir,
                          "--max_steps", "100000", "--save_interval", "100000",
                          env=helpers.test_env(TRAINKIT_DEADLINE=str(time.time())))
    assert proc.returncode == 0, helpers.describe(proc)
    assert "stopped at step 1 by a signal" in proc.stdout
    assert checkpoint.latest(str(run_dir)).step == 1
    bad = helpers.py("trainkit.selfcheck", "--data_dir", digits(16), "--logdir", tmp_path / "b",
                     env=helpers.test_env(TRAINKIT_DEADLINE="soon"))
    assert bad.returncode == 2 and "TRAINKIT_DEADLINE" in bad.stderr
