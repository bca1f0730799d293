"""What the fault tests share: each family's tiny training command, a client of the fork server
(zygote.py), and checks on run directories."""

import json
import os
import re
import select
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

import helpers

HERE = Path(__file__).resolve().parent


def flag_file_argv(flag_file, role="TRAIN"):
    """The flags launch/run.sh would pass for `flag_file`: $MODEL_FLAGS $DIFFUSION_FLAGS $<ROLE>_FLAGS."""
    script = f'source "$1"; echo "$MODEL_FLAGS $DIFFUSION_FLAGS ${role}_FLAGS"'
    out = subprocess.run(["bash", "-c", script, "bash", str(flag_file)], capture_output=True, text=True, check=True)
    return shlex.split(out.stdout)


@dataclass
class Family:
    name: str
    module: str
    flag_file: str
    tiny: list  # overrides that make a step take tens of milliseconds
    resume_flag: str
    step_files: tuple  # prefixes written at every checkpoint
    extra_files: tuple = field(default=())  # other per-step files, e.g. gans' grid%06d.png

    def argv(self, data, logdir, max_steps, *extra):
        """The run's command line: the family's flag file, made tiny, checkpointing every step,
        and resuming automatically, so that the same command serves every restart."""
        return [*flag_file_argv(helpers.ROOT / self.flag_file), *self.tiny, "--data_dir", str(data),
                "--logdir", str(logdir), "--max_steps", str(max_steps), "--save_interval", "1",
                self.resume_flag, "auto", *extra]

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

# what every family's log says when it continues from a checkpoint
RESUMED = re.compile(r"resum\w* from (?P<dir>\S+?),? (?:at )?step (?P<step>\d+)")
FRESH = "starting at step 0"


class Zygote:
    """Client of zygote.py: start training runs as forked children, wait with a deadline, kill."""

    def __init__(self, modules, env=None):
        env = env or helpers.test_env()
        self.proc = subprocess.Popen([sys.executable, str(HERE / "zygote.py"), *modules], cwd=str(helpers.ROOT),
                                     env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._buffer = b""
        line = self._line(timeout=300)
        assert line == "ready", f"fork server did not start: {line!r}"

    def _line(self, timeout):
        """The server's next line, or None when `timeout` seconds pass first."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    raise RuntimeError(f"fork server exited with {self.proc.wait()}")
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def start(self, module, argv, log) -> int:
        request = {"module": module, "argv": [str(a) for a in argv], "log": str(log)}
        self.proc.stdin.write((json.dumps(request) + "\n").encode())
        self.proc.stdin.flush()
        line = self._line(timeout=60)
        assert line and line.startswith("pid "), line
        return int(line.split()[1])

    def wait(self, timeout):
        """The child's exit code (negative: killed by that signal), or None if still running."""
        line = self._line(timeout)
        if line is None:
            return None
        assert line.startswith("exit "), line
        return int(line.split()[1])

    def run(self, module, argv, log, timeout=600) -> int:
        self.start(module, argv, log)
        code = self.wait(timeout)
        assert code is not None, f"{module} did not finish within {timeout} s; log: {log}"
        return code

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def assert_same(a, b, where=""):
    """Bitwise equality of checkpoint contents (tensors, dicts, lists, numbers, strings)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), f"{where}: values differ"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: keys differ"
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def assert_same_step(family, dir_a, dir_b, step):
    """Every file of `step` is identical in the two run directories (weights, EMA, optimiser,
    data position, RNG of every rank, loss scale; gans' grid image byte for byte)."""
    for a, b in zip(family.files_of_step(dir_a, step), family.files_of_step(dir_b, step)):
        if a.suffix == ".pt":
            assert_same(torch.load(a, weights_only=True), torch.load(b, weights_only=True), a.name)
        else:
            assert a.read_bytes() == b.read_bytes(), f"{a.name} differs"
