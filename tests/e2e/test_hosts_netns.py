"""Multi-host launches on two real hosts: two network namespaces with their own addresses, host
names and /etc/hosts, sharing the file system like a cluster (tests/netns_hosts.py). Each launch is
the command docs/operations.md ("Multiple hosts") gives: torchrun through launch/run.sh on each
host, mpiexec with a hostfile (Open MPI starts the other host's ranks through an ssh stand-in that
enters its namespace, with an ssh login's empty environment), DDGAN's own --num_proc_node 2.

Host names are resolvable, Debian-style (a host's own name -> 127.0.1.1) or missing. A killed host,
a cut link and a rank that raises each end the job within a minute, non-zero, with one line.

The few tests at the top need no namespaces (the local rank of a hand-written srun line, the DDGAN
run id, rank 0's TRAINKIT_* settings under mpiexec).
"""

import json
import os
import re
import subprocess
import sys
import time

import pytest
import torch

import helpers
import netns_hosts
from trainkit import checkpoint, logger

RUN_SH = str(helpers.ROOT / "launch" / "run.sh")
STEPS = ["--max_steps", "4", "--save_interval", "2", "--log_interval", "2", "--batch_size", "4"]
FAILURE_BOUND = 60  # seconds from a failure to the end of the job (the bound)


# --- without namespaces ---------------------------------------------------------------------


@pytest.mark.slow
def test_mpiexec_ranks_take_rank_0s_trainkit_settings():
    """Ranks started with different TRAINKIT_* (another host's login): rank 0's win on every rank."""
    code = ("import json, os; from trainkit import dist; dist.init(); "
            "print(json.dumps([dist.rank(), {k: v for k, v in os.environ.items() if k.startswith('TRAINKIT_')}]), "
            "flush=True); dist.shutdown(True)")
    env = _env()
    for k in [k for k in env if k.startswith("TRAINKIT_")]:
        del env[k]
    app = [sys.executable, "-c", code]
    cmd = ["mpiexec", "--allow-run-as-root", "--oversubscribe", "-x", "PYTHONPATH",
           "-n", "1", "-x", "TRAINKIT_DATA_CACHE_MB=0", "-x", "TRAINKIT_DIST_TIMEOUT=33", *app, ":",
           "-n", "1", "-x", "TRAINKIT_DATA_CACHE_MB=4096", "-x", "TRAINKIT_DATA_DECODERS=1", *app]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=helpers.ROOT)
    assert proc.returncode == 0, helpers.describe(proc)
    seen = dict(tuple(json.loads(line)) for line in proc.stdout.splitlines() if line.startswith("["))
    assert seen == {0: {"TRAINKIT_DATA_CACHE_MB": "0", "TRAINKIT_DIST_TIMEOUT": "33"},
                    1: {"TRAINKIT_DATA_CACHE_MB": "0", "TRAINKIT_DIST_TIMEOUT": "33"}}, proc.stdout


# --- two hosts --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hosts():
    why = netns_hosts.unavailable()
    if why:
        pytest.skip(why)
    with netns_hosts.Hosts() as h:
        yield h


def _env(**extra):
    """A host's environment: helpers' (repository on PYTHONPATH, one thread, short timeouts), minus
    the fork server (it lives in the machine's own namespace) and minus the suite's permission to
    oversubscribe (a hostfile's slots must count here)."""
    env = helpers._base_env(**extra)
    for k in ("OMPI_MCA_rmaps_base_oversubscribe", "PRTE_MCA_rmaps_default_mapping_policy"):
        env.pop(k, None)
    return env


class Launch:
    """One command on one host, its output in a file (read while it runs)."""

    def __init__(self, hosts, key, argv, out, style="resolvable", env=None):
        self.out = out
        self.file = open(out, "wb")
        self.proc = subprocess.Popen(hosts.cmd(key, argv, style=style), env=env or _env(), cwd=helpers.ROOT,
                                     stdout=self.file, stderr=subprocess.STDOUT)

    def text(self):
        return self.out.read_text(errors="replace")

    def wait(self, timeout):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"no exit within {timeout} s:\n{self.text()[-3000:]}")
        finally:
            self.file.close()

    def wait_for(self, pattern, timeout=120):
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.text(), re.M):
            assert self.proc.poll() is None, f"exit {self.proc.returncode} before {pattern!r}:\n{self.text()[-3000:]}"
            assert time.monotonic() < deadline, f"no {pattern!r} within {timeout} s:\n{self.text()[-3000:]}"
            time.sleep(0.1)  # polling a file for a condition, with a deadline


def _run_sh(*args):
    return ["bash", RUN_SH, *[str(a) for a in args]]


def _torchrun(hosts, tmp_path, endpoint, module_args, options=(), style="resolvable", name="run", env=None):
    """run.sh --nnodes 2 on both hosts (the README's line, --node_rank included); the two launches."""
    return [Launch(hosts, key, _run_sh("--nnodes", 2, "--node_rank", r, "--rdzv_endpoint", endpoint, *options,
                                       "torchrun", 1, *module_args),
                   tmp_path / f"{name}-{key}.out", style=style, env=env)
            for r, key in enumerate("ab")]


def _mpiexec_env(hosts, slots=(1, 1), style="resolvable", ssh_env=True, **extra):
    env = _env(**extra)
    env["MPIEXEC_ARGS"] = f"--hostfile {hosts.hostfile(slots)} --mca plm_rsh_agent {hosts.rsh_agent}"
    env["NETNS_SSH_ENV"] = "1" if ssh_env else "0"  # read by the ssh stand-in
    env["NETNS_HOSTS_STYLE"] = style
    return env


def _selfcheck(data, run_dir, *more):
    return ["trainkit.selfcheck", "--data_dir", data, "--logdir", run_dir, "--dump", *STEPS, *more]


def _dump(run_dir, rank):
    with open(os.path.join(run_dir, f"indices_rank{rank}.json")) as f:
        return json.load(f)


def _one_group_rank0_once(run_dir, outs, steps=(2.0, 4.0)):
    """Both ranks trained in one group across the two hosts; rank 0's files were written once."""
    options = json.loads((run_dir / "options.json").read_text())
    assert options["_run"]["world_size"] == 2
    assert {_dump(run_dir, 0)["host"], _dump(run_dir, 1)["host"]} == {"nodea", "nodeb"}
    a, b = (torch.load(run_dir / f"params_rank{r}.pt", weights_only=True) for r in (0, 1))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["step"] for r in logger.read_progress(str(run_dir))] == list(steps)
    assert sum(out.count(f"Logging to {run_dir}") for out in outs) == 1


def _error_lines(text):
    return sorted({line for line in text.splitlines() if re.search(r"(^run\.sh|^[\w.]+): error: ", line)})


@pytest.mark.slow
def test_torchrun_two_hosts_as_the_readme_says_and_resume(hosts, digits, tmp_path):
    run_dir = tmp_path / "run"
    endpoint = f"{hosts.a.addr}:{helpers.free_port()}"
    launches = _torchrun(hosts, tmp_path, endpoint, _selfcheck(digits(16), run_dir))
    for launch in launches:
        assert launch.wait(180) == 0, launch.text()[-3000:]
    assert "--node_rank" not in launches[0].text().splitlines()[0]  # ignored by c10d: not passed on
    _one_group_rank0_once(run_dir, [la.text() for la in launches])
    more = _torchrun(hosts, tmp_path, endpoint, _selfcheck(digits(16), run_dir, "--max_steps", 6,
                                                           "--resume_checkpoint", "auto"), name="resume")
    for launch in more:
        assert launch.wait(180) == 0, launch.text()[-3000:]
    assert sum(f"resuming from {run_dir} step 4" in la.text() for la in more) == 1
    assert _dump(run_dir, 0)["start"] == 4 and checkpoint.latest(str(run_dir)).step == 6


@pytest.mark.slow
def test_torchrun_host_names_that_do_not_reach_the_other_host(hosts, digits, tmp_path):
    """Debian-style names: one line at once without --iface, one group with it (and a name endpoint);
    a name that does not resolve: one line."""
    port, data = helpers.free_port(), digits(16)
    started = time.monotonic()
    bad = _torchrun(hosts, tmp_path, f"{hosts.a.addr}:{port}", _selfcheck(data, tmp_path / "bad"),
                    style="debian", name="debian")
    for launch, h in zip(bad, (hosts.a, hosts.b)):
        assert launch.wait(60) == 2
        assert _error_lines(launch.text()) == [
            f"run.sh: error: this host's name '{h.name}' resolves to 127.0.1.1, a loopback address the other nodes "
            "cannot reach (Debian and Ubuntu map it so): pass --iface IFACE (this node's interface on the cluster "
            "network) or --local_addr ADDR, or map the name to its cluster address"]
    assert time.monotonic() - started < 10
    gone = _torchrun(hosts, tmp_path, f"{hosts.a.addr}:{port}", _selfcheck(digits(16), tmp_path / "gone"),
                     style="unresolvable", name="unresolvable")
    for launch, h in zip(gone, (hosts.a, hosts.b)):
        assert launch.wait(60) == 2
        assert f"this host's name '{h.name}' does not resolve" in "".join(_error_lines(launch.text()))
    nowhere = Launch(hosts, "a", _run_sh("--nnodes", 2, "--rdzv_endpoint", f"nodez:{port}", "torchrun", 1,
                                         *_selfcheck(digits(16), tmp_path / "z")), tmp_path / "nodez.out")
    assert nowhere.wait(60) == 2
    assert _error_lines(nowhere.text()) == [
        f"run.sh: error: --rdzv_endpoint nodez:{port}: 'nodez' does not resolve on this host (nodea); give its "
        "address or add it to /etc/hosts"]
    run_dir = tmp_path / "run"
    fixed = _torchrun(hosts, tmp_path, f"{hosts.a.name}:{port}", _selfcheck(digits(16), run_dir),
                      options=("--iface", "veth0"), style="debian", name="fixed")
    for launch in fixed:
        assert launch.wait(180) == 0, launch.text()[-3000:]
    _one_group_rank0_once(run_dir, [la.text() for la in fixed])


@pytest.mark.slow
def test_mpiexec_hostfile_with_an_ssh_login_environment(hosts, digits, tmp_path):
    """The other host's rank starts with nothing but an ssh login's environment; threads per rank
    come from each host's cores and ranks (1 rank per 2-core host: 2 threads, not 2 / 2 ranks)."""
    run_dir = tmp_path / "run"
    env = _mpiexec_env(hosts)
    env.pop("OMP_NUM_THREADS")  # nobody chose: run.sh and trainkit.dist decide
    launch = Launch(hosts, "a", _run_sh("mpiexec", 2, *_selfcheck(digits(16), run_dir)), tmp_path / "mpi.out", env=env)
    assert launch.wait(180) == 0, launch.text()[-3000:]
    _one_group_rank0_once(run_dir, [launch.text()])
    command = next(line for line in launch.text().splitlines() if line.startswith("+ "))
    assert "-x PYTHONPATH" in command and "-x TRAINKIT_DIST_TIMEOUT" in command  # what ssh does not give
    cores = len(os.sched_getaffinity(0))
    assert [_dump(run_dir, r)["threads"] for r in (0, 1)] == [cores, cores]
    # a hostfile with too few slots shows instead of being oversubscribed
    short = Launch(hosts, "a", _run_sh("mpiexec", 3, *_selfcheck(digits(16), tmp_path / "short")),
                   tmp_path / "short.out", env=env)
    assert short.wait(120) != 0
    assert "not enough slots" in short.text(), short.text()[-3000:]
    assert not (tmp_path / "short").exists()


@pytest.mark.slow
def test_mpiexec_debian_host_names(hosts, digits, tmp_path):
    env = _mpiexec_env(hosts, style="debian")
    digits(16)  # made before the clock starts
    started = time.monotonic()
    bad = Launch(hosts, "a", _run_sh("mpiexec", 2, *_selfcheck(digits(16), tmp_path / "bad")), tmp_path / "bad.out",
                 style="debian", env=env)
    assert bad.wait(120) != 0
    assert time.monotonic() - started < 60
    assert [line for line in _error_lines(bad.text())] == [
        "trainkit.selfcheck: error: rank 0's host name 'nodea' resolves to 127.0.1.1, a loopback address, so the "
        "ranks on other hosts cannot reach it: give run.sh --iface IFACE (sets GLOO_SOCKET_IFNAME for every rank) "
        "or map each host's name to its cluster address in /etc/hosts"]
    run_dir = tmp_path / "run"
    fixed = Launch(hosts, "a", _run_sh("--iface", "veth0", "mpiexec", 2, *_selfcheck(digits(16), run_dir)),
                   tmp_path / "fixed.out", style="debian", env=env)
    assert fixed.wait(180) == 0, fixed.text()[-3000:]
    _one_group_rank0_once(run_dir, [fixed.text()])


@pytest.mark.slow
def test_ddgan_num_proc_node_2_on_two_hosts(hosts, digits, tmp_path):
    """DDGAN's own multi-node command line, on each host: the nodes meet and train one model."""
    from _support import faultlib

    f = faultlib.FAMILIES["ddgan"]
    run_dir = tmp_path / "run"
    port = helpers.free_port()
    launches = [Launch(hosts, key, [sys.executable, "-m", "ddgan.train", *f.flag_argv(), *f.tiny,
                                    "--data_dir", digits(16), "--logdir", run_dir, "--max_steps", 2,
                                    "--save_interval", 2, "--num_proc_node", 2,
                                    "--node_rank", r, "--master_address", hosts.a.addr, "--master_port", port],
                       tmp_path / f"ddgan-{key}.out")
                for r, key in enumerate("ab")]
    for launch in launches:
        assert launch.wait(240) == 0, launch.text()[-3000:]
    assert json.loads((run_dir / "options.json").read_text())["_run"]["world_size"] == 2
    assert checkpoint.latest(str(run_dir)).step == 2


FAILURES = [("mpiexec", "kill"), ("mpiexec", "cut"), ("mpiexec", "raise"),
            ("torchrun", "kill"), ("torchrun", "cut"), ("torchrun", "raise")]


@pytest.mark.slow
@pytest.mark.parametrize("launcher,failure", FAILURES)
def test_a_lost_host_a_cut_link_or_a_raising_rank_ends_the_job(launcher, failure, hosts, digits, tmp_path):
    """Training on both hosts, then host B's processes all die, or its link goes down, or its rank
    raises: the launch on host A ends within a minute, non-zero, and says what happened in one
    line. A cut link is noticed at the collective timeout (15 s here); the other failures must not
    wait for it (300 s here)."""
    timeout = 15 if failure == "cut" else 300
    run_dir = tmp_path / "run"
    args = ["trainkit.selfcheck", "--data_dir", digits(16), "--logdir", run_dir, "--max_steps", 10**6,
            "--log_interval", 2, "--save_interval", 10**6, "--batch_size", 4]
    if failure == "raise":
        args += ["--selfkill_rank", 1, "--selfraise_step", 6]
    try:
        if launcher == "mpiexec":
            env = _mpiexec_env(hosts, ssh_env=False, TRAINKIT_DIST_TIMEOUT=timeout)
            launches = [Launch(hosts, "a", _run_sh("--iface", "veth0", "mpiexec", 2, *args), tmp_path / "a.out",
                               env=env)]
        else:
            launches = _torchrun(hosts, tmp_path, f"{hosts.a.addr}:{helpers.free_port()}", args,
                                 env=_env(TRAINKIT_DIST_TIMEOUT=timeout))
        a = launches[0]
        a.wait_for(r"^\| step +\| 4 ")
        failed = time.monotonic()
        if failure == "kill":
            assert hosts.kill_all("b") > 0
        elif failure == "cut":
            hosts.link("b", up=False)
        code = a.wait(FAILURE_BOUND + 30)
        took = time.monotonic() - failed
        text = a.text()
    finally:
        hosts.link("b", up=True)
        hosts.kill_all("b")
        for launch in launches:
            if launch.proc.poll() is None:
                launch.proc.kill()
            launch.proc.wait()
    assert code != 0, text[-3000:]
    assert took < FAILURE_BOUND, f"{took:.0f} s\n{text[-3000:]}"
    if failure == "raise":
        # the raising rank's own traceback says why, once; its peer's line only that it lost it
        raised = "RuntimeError: selfcheck: rank 1 raised after step 6"
        texts = text + (launches[1].text() if len(launches) > 1 else "")
        assert texts.count(raised) == 1, texts[-3000:]
    else:
        errors = _error_lines(text)
        assert len(errors) == 1 and ("lost contact with another rank" in errors[0] or "run.sh: error: " in errors[0]), \
            text[-3000:]
