"""launch/slurm.sbatch under a real Slurm: munged, slurmctld and two slurmd on this host
(tests/slurm_cluster.py), jobs submitted with sbatch from a folder outside the checkout, as a
user does. What a stand-in srun hides is what is tested: srun's own signal handling, Slurm's
time-limit warning, requeue and preemption with a grace time, srun's task count and CPU binding.

Runs are caught mid-training with selfcheck's --hold_step: each rank writes a marker after the
step and waits for a stop request, so a test acts on the marker, never on a timer.
"""

import json
import shutil
import time

import pytest
import torch

import helpers
import slurm_cluster

SBATCH = helpers.ROOT / "launch" / "slurm.sbatch"
STEPS = ["--max_steps", "6", "--save_interval", "100", "--log_interval", "1", "--batch_size", "4",
         "--dump", "--resume_checkpoint", "auto"]
HOLD = 3
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = slurm_cluster.missing_reason()
    if reason:
        pytest.skip(reason)
    c = slurm_cluster.Cluster(tmp_path_factory.mktemp("slurm"), nodes=2, cpus=2, grace=60, kill_wait=10)
    try:
        c.start()
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def straight(cluster, digits, tmp_path_factory):
    """straight(nodes) -> the finished Job of an uninterrupted run on that many nodes, the
    reference of the interrupted ones. One node: submitted with --chdir to another folder; two
    nodes: with --ntasks-per-node=2, as on a GPU cluster (the tests below check both)."""
    made = {}

    def get(nodes):
        if nodes not in made:
            folder = tmp_path_factory.mktemp(f"straight{nodes}")
            if nodes == 1:
                job = Job(cluster, folder, digits(16), workdir=folder / "work")
                job.submit("--nodes=1", f"--chdir={job.workdir}")
            else:
                job = Job(cluster, folder, digits(16))
                job.submit("--nodes=2", "--ntasks-per-node=2")
            assert job.ended() == "COMPLETED", job.describe()
            made[nodes] = job
        return made[nodes]

    return get


class Job:
    """One sbatch of launch/slurm.sbatch from `folder/submit` (not the checkout), running
    selfcheck into `folder/submit/run`."""

    def __init__(self, cluster, folder, data, workdir=None, **env):
        self.cluster = cluster
        self.submit_dir = folder / "submit"
        self.submit_dir.mkdir()
        self.workdir = workdir or self.submit_dir  # sbatch --chdir, where relative paths start
        self.workdir.mkdir(exist_ok=True)
        self.run_dir = self.workdir / "run"
        # real interpreters, not the suite's fork server: Slurm must see, signal and bind the
        # processes it started
        self.env = cluster.env(helpers._base_env(), **env)
        self.data = data
        self.id = None

    def submit(self, *sbatch_args, script=SBATCH, extra=()):
        self.id = self.cluster.sbatch(*sbatch_args, script, "trainkit.selfcheck", "--data_dir", self.data,
                                      "--logdir", "run", *STEPS, *extra, cwd=self.submit_dir, env=self.env)
        return self.id

    def info(self):
        return self.cluster.job(self.id)

    def state(self):
        return self.info().get("JobState")

    def ended(self, timeout=120):
        return self.cluster.wait_state(self.id, ENDED, timeout)["JobState"]

    def wait_held(self, ranks=1, timeout=120):
        """Wait until every rank wrote its --hold_step marker; the markers."""
        paths = [self.run_dir / f"hold_rank{r}.json" for r in range(ranks)]
        self.cluster.wait(lambda: all(p.exists() for p in paths) or self.state() in ENDED, timeout,
                          f"job {self.id} at step {HOLD}")
        assert all(p.exists() for p in paths), self.describe()
        return [json.loads(p.read_text()) for p in paths]

    def wait_requeued(self, timeout=120, *updates):
        """Wait until the job is pending again after a requeue, apply `updates` (scontrol update
        fields) while it cannot start, then start it at once (a requeued job otherwise waits two
        minutes)."""
        self.cluster.wait(lambda: self.state() == "PENDING" or self.state() in ENDED, timeout,
                          f"job {self.id} requeued")
        assert self.state() == "PENDING", self.describe()
        # slurmd refuses a credential made in the same second as the requeue revoked the old one
        # ("Killing non-startable batch job: Job credential revoked"; Slurm's own requeue delay
        # exists for this): start it from the next wall-clock second on.
        requeued = int(time.time())
        self.cluster.wait(lambda: int(time.time()) > requeued, 5, "the second after the requeue")
        if updates:
            self.cluster.run("scontrol", "update", f"JobId={self.id}", *updates)
        self.cluster.run("scontrol", "update", f"JobId={self.id}", "StartTime=now")

    def log(self):
        path = self.workdir / f"slurm-{self.id}.out"
        return path.read_text() if path.exists() else ""

    def params(self, rank):
        return torch.load(self.run_dir / f"params_rank{rank}.pt", weights_only=True)

    def describe(self):
        info = self.info()
        state = " ".join(f"{k}={info.get(k)}" for k in ("JobState", "Reason", "ExitCode", "Restarts", "PreemptTime"))
        return f"job {self.id}: {state}\n--- slurm-{self.id}.out ---\n{self.log()[-6000:]}"


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.slow
def test_one_node_from_another_folder_honours_chdir(straight):
    """Submitted from outside the checkout with --chdir: the job finds run.sh and takes relative
    paths from the working folder (defect 8), and ends COMPLETED with exit 0."""
    job = straight(1)
    assert job.info()["ExitCode"] == "0:0"
    assert "done at step 6" in job.log()
    assert (job.run_dir / "model000006.pt").exists() and not (job.submit_dir / "run").exists()


@pytest.mark.slow
def test_a_script_without_run_sh_beside_it_fails_with_one_line(cluster, digits, tmp_path):
    job = Job(cluster, tmp_path, digits(16))
    lone = tmp_path / "slurm.sbatch"
    shutil.copy(SBATCH, lone)
    job.submit("--nodes=1", script=lone)
    assert job.ended() == "FAILED", job.describe()
    assert job.info()["ExitCode"] == "2:0"
    lines = [line for line in job.log().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("slurm.sbatch: error: cannot find run.sh beside the submitted "
                                                   f"script ('{lone}')"), job.describe()


@pytest.mark.slow
def test_two_nodes_form_one_group_even_with_two_tasks_per_node(straight):
    """--ntasks-per-node=2 (natural on a GPU cluster) still starts one agent per node: one
    2-rank group, not two trainings into one run directory (defect 7)."""
    job = straight(2)
    out = job.log()
    assert out.count("torch.distributed.run --nnodes 2") == 2 and out.count("(torchrun, 2 rank(s)") == 1, out
    assert_same(job.params(0), job.params(1))
    assert not (job.run_dir / "params_rank2.pt").exists()


@pytest.mark.slow
def test_requeue_resumes_to_the_same_weights_and_keeps_the_log(cluster, digits, tmp_path, straight):
    """`scontrol requeue` mid-run: checkpoint, requeue, resume, the straight run's weights; the
    first attempt's log is still there (defect 5). Every CPU the job holds on the node reaches
    the one task's workers (defect 6), also where srun steps are exact (SLURM_EXACT=1, a site's
    or user's setting: a step then gets only the CPUs srun asks for, one per task by default)."""
    job = Job(cluster, tmp_path, digits(16), SLURM_EXACT=1)
    job.submit("--nodes=1", "--ntasks-per-node=2", extra=["--hold_step", str(HOLD)])
    (held,) = job.wait_held()
    assert held["cpus"] == [0, 1], held
    cluster.run("scontrol", "requeue", job.id)
    job.wait_requeued()
    assert job.ended() == "COMPLETED", job.describe()
    assert job.info()["Restarts"] == "1"
    assert_same(job.params(0), straight(1).params(0))
    out = job.log()
    attempts = ["starting at step 0", f"stopped at step {HOLD} by a signal", f"resuming from run step {HOLD}",
                "done at step 6"]
    assert [line for line in attempts if line in out] == attempts, out  # the first attempt's lines too
    assert sorted(attempts, key=out.index) == attempts, out


@pytest.mark.slow
def test_time_limit_stops_requeues_and_resumes(cluster, digits, tmp_path, straight):
    """The time limit's warning (--signal=B:USR1@120) stops the step gracefully, not by srun's
    SIGKILL (defect 1), and the job requeues itself (defect 2) and ends COMPLETED."""
    job = Job(cluster, tmp_path, digits(16))
    job.submit("--nodes=1", "--cpus-per-task=2", "--time=10", extra=["--hold_step", str(HOLD)])
    job.wait_held()
    cluster.run("scontrol", "update", f"JobId={job.id}", "TimeLimit=2")  # 2 min: inside the 120 s warning
    # The limit goes back up before the requeued job may start: started under the 2 min limit it
    # would be warned at once and stop again.
    job.wait_requeued(90, "TimeLimit=10")
    assert job.ended() == "COMPLETED", job.describe()
    assert job.info()["Restarts"] == "1"
    assert_same(job.params(0), straight(1).params(0))
    out = job.log()
    assert f"stopped at step {HOLD} by a signal" in out and f"requeueing job {job.id} (restart 1 of at most 10)" in out


@pytest.mark.slow
def test_preemption_with_grace_requeues_and_resumes(cluster, digits, tmp_path, straight):
    """A preemption with GraceTime signals every process of the step, torchrun's agents too
    (they exit 1): the job still stops cleanly (defect 3), requeues itself and resumes on two
    nodes to the straight two-node run's weights."""
    job = Job(cluster, tmp_path, digits(16))
    job.submit("--nodes=2", "--cpus-per-task=2", extra=["--hold_step", str(HOLD)])
    job.wait_held(ranks=2)
    high = cluster.sbatch("--partition=high", "--nodes=1", "--cpus-per-task=2", "--wrap=true",
                          cwd=job.submit_dir, env=job.env)
    job.wait_requeued()
    assert cluster.wait_state(high, ENDED)["JobState"] == "COMPLETED"
    assert job.ended() == "COMPLETED", job.describe()
    assert job.info()["Restarts"] == "1"
    assert_same(job.params(0), straight(2).params(0))
    out = job.log()
    assert out.count("all 1 workers on this node stopped and exited 0") == 2, out


@pytest.mark.slow
def test_a_job_out_of_restarts_stops_with_one_line(cluster, digits, tmp_path):
    """The warning signal exactly as Slurm sends it (to the batch shell) with MAX_RESTARTS=0:
    the run checkpoints and the job is not requeued again; it says so in one line."""
    job = Job(cluster, tmp_path, digits(16), MAX_RESTARTS=0)
    job.submit("--nodes=1", extra=["--hold_step", str(HOLD)])
    job.wait_held()
    cluster.run("scancel", "--batch", "--signal=USR1", job.id)
    assert job.ended() == "FAILED", job.describe()
    assert job.info()["Restarts"] == "0" and job.info()["ExitCode"] == "3:0"
    assert (job.run_dir / f"model{HOLD:06d}.pt").exists()
    assert ("slurm.sbatch: error: stopped with a checkpoint but not requeued: the job has been requeued 0 times "
            "(MAX_RESTARTS=0)") in job.log()

