"""What the fault tests share: each family's tiny training command (and the runtime self-check's,
trainkit.selfcheck, on which the kill and signal tests run), a client of the fork server
(tests/forkserver.py), and checks on run directories. flag_file_argv and assert_same are
_support.flags' and _support.checks', named here too for the fault tests."""

import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import torch

import forkserver
import helpers
from _support.checks import assert_same
from _support.flags import flag_file_argv


@dataclass
class Family:
    name: str
    module: str
    flag_file: str  # None: no flag file (the self-check)
    tiny: list  # overrides that make a step take tens of milliseconds
    resume_flag: str
    step_files: tuple  # prefixes written at every checkpoint
    extra_files: tuple = field(default=())  # other per-step files, e.g. gans' grid%06d.png

    def argv(self, data, logdir, max_steps, *extra):
        """The run's command line: the family's flag file, made tiny, checkpointing every step,
        and resuming automatically, so that the same command serves every restart."""
        return [*self.flag_argv(), *self.tiny, "--data_dir", str(data),
                "--logdir", str(logdir), "--max_steps", str(max_steps), "--save_interval", "1",
                self.resume_flag, "auto", *extra]

    def flag_argv(self, role="TRAIN"):
        return flag_file_argv(helpers.ROOT / self.flag_file, role) if self.flag_file else []

    def flag_files(self):
        return [helpers.ROOT / self.flag_file] if self.flag_file else []

    def files_of_step(self, run_dir, step):
        names = [f"{p}{step:06d}.pt" for p in self.step_files] + [f"{p}{step:06d}.png" for p in self.extra_files]
        return [Path(run_dir) / n for n in names]


FAMILIES = {
    "improved_diffusion": Family(
        "improved_diffusion", "improved_diffusion.train", "flags/improved_diffusion/digits_tiny.sh",
        ["--diffusion_steps", "50", "--batch_size", "4", "--log_interval", "1"],
        "--resume_checkpoint", ("model", "ema_0.99_", "ema_0.999_", "opt", "state")),
    "ddgan": Family(
        "ddgan", "ddgan.train", "flags/ddgan/digits16.sh",
        ["--num_channels_dae", "8", "--ngf", "4", "--nz", "8", "--z_emb_dim", "16", "--t_emb_dim", "16",
         "--n_mlp", "1", "--lazy_reg", "2", "--batch_size", "8", "--d_steps", "1", "--log_interval", "1"],
        "--resume", ("model", "disc", "ema_0.99_", "opt", "disc_opt", "state")),
    "gans": Family(
        "gans", "gans.train", "flags/gans/dcgan_digits.sh",
        ["--nz", "8", "--ngf", "8", "--ndf", "8", "--batch_size", "8", "--log_interval", "1"],
        "--resume_checkpoint", ("model", "disc", "opt", "disc_opt", "state"), ("grid",)),
}

# The runtime's own smallest loop (trainkit.selfcheck): what the kill -9, SIGTERM and dead-rank
# tests run. Those paths (atomic checkpoints, the stop vote, resume) are trainkit's, shared by
# every family; each family's own part of a resume is tests/contract/test_task_contract.py's.
SELFCHECK = Family("selfcheck", "trainkit.selfcheck", None, ["--batch_size", "4", "--log_interval", "1"],
                   "--resume_checkpoint", ("model", "ema_0.99_", "ema_0.9_", "opt", "state"))

# what every family's log says when it continues from a checkpoint
RESUMED = re.compile(r"resum\w* from (?P<dir>\S+?),? (?:at )?step (?P<step>\d+)")
FRESH = "starting at step 0"


class Zygote:
    """Start training runs as children of the session's fork server (tests/forkserver.py, which
    has the code imported: 20 restarts cost what 20 forks do), wait with a deadline, kill."""

    def __init__(self, env=None):
        self.env = env or helpers.test_env()
        self.child = None

    def start(self, module, argv, log) -> int:
        with open(log, "ab") as f, open(os.devnull, "rb") as stdin:
            if forkserver.forkable("module", module, self.env):
                self.child = forkserver.Forked("module", module, argv, self.env, helpers.ROOT, stdin.fileno(),
                                               f.fileno(), f.fileno())
            else:  # GENBENCH_TEST_FORK=0: a real interpreter
                self.child = _Popen([helpers.sys.executable, "-m", module, *map(str, argv)], cwd=helpers.ROOT,
                                    env=self.env, stdin=stdin, stdout=f, stderr=f)
        return self.child.pid

    def wait(self, timeout):
        """The child's exit code (negative: killed by that signal), or None if still running."""
        return self.child.wait(timeout)

    def run(self, module, argv, log, timeout=600) -> int:
        self.start(module, argv, log)
        code = self.wait(timeout)
        assert code is not None, f"{module} did not finish within {timeout} s; log: {log}"
        return code


class _Popen(subprocess.Popen):
    def wait(self, timeout=None):  # None on a timeout, as forkserver.Forked.wait
        try:
            return super().wait(timeout)
        except subprocess.TimeoutExpired:
            return None


def assert_same_step(family, dir_a, dir_b, step):
    """Every file of `step` is identical in the two run directories (weights, EMA, optimiser,
    data position, RNG of every rank, loss scale; gans' grid image byte for byte)."""
    for a, b in zip(family.files_of_step(dir_a, step), family.files_of_step(dir_b, step)):
        if a.suffix == ".pt":
            assert_same(torch.load(a, weights_only=True), torch.load(b, weights_only=True), a.name)
        else:
            assert a.read_bytes() == b.read_bytes(), f"{a.name} differs"
