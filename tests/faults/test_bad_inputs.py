"""The bad-input table: every case exits non-zero with ONE line on stderr that names the bad
input and says what is wrong, prints no traceback, leaves no partial output, and leaves the
checkpoints of earlier runs byte for byte as they were.

Python entry points run in this process (as `python -m` would run them, through runpy) so the
table stays fast; shell scripts and the full-disk case run as real processes.
"""

import hashlib
import os
import resource
import runpy
import shutil
import signal
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

import helpers
from _support import faultlib

pytestmark = pytest.mark.filterwarnings("ignore:.*found in sys.modules:RuntimeWarning")


class Payload:
    """Unpickling this creates a file: what a malicious "checkpoint" would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def family_argv(name, data, logdir, *extra):
    family = faultlib.FAMILIES[name]
    return [*faultlib.flag_file_argv(helpers.ROOT / family.flag_file), *family.tiny, "--data_dir", str(data),
            "--logdir", str(logdir), *extra]


def run_module(module, argv, capsys):
    """`python -m module argv...` in this process: (exit code, stderr)."""
    saved_argv = sys.argv
    saved_signals = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)}
    sys.argv = [module, *[str(a) for a in argv]]
    capsys.readouterr()
    code = 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = saved_argv
        for s, h in saved_signals.items():
            signal.signal(s, h)
    return code, capsys.readouterr().err


def digest(directory):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def inputs(digits, trained_run, tmp_path_factory):
    """Bad files and folders, and a copy of the session's finished 2-step run of each family (the
    earlier checkpoints)."""
    root = tmp_path_factory.mktemp("bad")
    good = digits(16)
    pngs = sorted(good.iterdir())[:24]
    made = {"good": good, "root": root}
    for name in ("corrupt", "truncated", "few", "empty"):
        (root / name).mkdir()
        made[name] = root / name
    for p in pngs:
        shutil.copy(p, root / "corrupt" / p.name)
        shutil.copy(p, root / "truncated" / p.name)
    (root / "corrupt" / "3_99999.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    (root / "truncated" / "3_99998.png").write_bytes(pngs[0].read_bytes()[:60])
    for p in pngs[:3]:
        shutil.copy(p, root / "few" / p.name)
    images = np.zeros((8, 16, 16, 1), np.uint8)
    np.savez(root / "keys.npz", x=images)
    np.savez(root / "dtype.npz", arr_0=images.astype(np.float32))
    np.savez(root / "shape.npz", arr_0=images[..., 0])
    np.savez(root / "good.npz", arr_0=images)
    (root / "text.npz").write_text("not an npz")
    (root / "text.pt").write_text("not a checkpoint")
    (root / "file").write_text("a file where a directory should go")
    np.save(root / "array.npy", np.zeros(3))  # a .npy that is not DDGAN's statistics dict
    (root / "notlmdb").mkdir()
    (root / "notlmdb" / "data.mdb").write_bytes(b"garbage, not an LMDB" * 100)
    (root / "emptylmdb").mkdir()
    (root / "emptylmdb" / "train.lmdb").write_bytes(b"")
    evil = root / "evil"
    evil.mkdir()
    torch.save({"model": Payload(str(root / "PWNED"))}, evil / "model000001.pt")
    torch.save(Payload(str(root / "PWNED")), evil / "netG.pth")
    for name in faultlib.FAMILIES:
        made[f"run_{name}"] = shutil.copytree(trained_run(name), root / f"run_{name}")
    made["digests"] = {k: digest(v) for k, v in made.items() if k.startswith("run_")}
    return made


def T(*args):
    """A family's training command line on the given data (see CASES)."""
    return ("train", *args)


# id, module, argv (strings with {placeholders} filled from `inputs`, {out} being this case's
# own output folder), the fragments the error line must hold
CASES = [
    # data
    ("id-missing-data-dir", "improved_diffusion.train", T("improved_diffusion", "{root}/nowhere"), ["{root}/nowhere", "no such data directory"]),
    ("id-corrupt-png", "improved_diffusion.train", T("improved_diffusion", "{corrupt}"), ["3_99999.png", "cannot read image"]),
    ("ddgan-truncated-png", "ddgan.train", T("ddgan", "{truncated}"), ["3_99998.png", "cannot read image"]),
    ("gans-empty-folder", "gans.train", T("gans", "{empty}"), ["{empty}", "no images"]),
    ("gans-too-few-for-a-batch", "gans.train", T("gans", "{few}"), ["{few}", "fewer than one global batch"]),
    ("id-npz-wrong-keys", "improved_diffusion.train", T("improved_diffusion", "{root}/keys.npz"), ["keys.npz", "no arr_0"]),
    ("gans-npz-wrong-dtype", "gans.train", T("gans", "{root}/dtype.npz"), ["dtype.npz", "uint8"]),
    ("ddgan-npz-wrong-shape", "ddgan.train", T("ddgan", "{root}/shape.npz"), ["shape.npz", "N,H,W,C"]),
    ("ddgan-npz-not-an-npz", "ddgan.train", T("ddgan", "{root}/text.npz"), ["text.npz", "not a readable npz"]),
    ("ddgan-lmdb-not-an-lmdb", "ddgan.train", T("ddgan", "{root}/notlmdb"), ["{root}/notlmdb", "not an LMDB database"]),
    ("id-train-lmdb-empty-file", "improved_diffusion.train", T("improved_diffusion", "{root}/emptylmdb"), ["train.lmdb", "not an LMDB database"]),
    # flags
    ("id-flag-wrong-type", "improved_diffusion.train", T("improved_diffusion", "{good}", "--batch_size", "many"), ["--batch_size", "many"]),
    ("id-flag-out-of-range", "improved_diffusion.train", T("improved_diffusion", "{good}", "--batch_size", "0"), ["--batch_size", "0"]),
    ("id-bad-ema-rate", "improved_diffusion.train", T("improved_diffusion", "{good}", "--ema_rate", "1.5"), ["--ema_rate", "1.5"]),
    ("id-bad-schedule-sampler", "improved_diffusion.train", T("improved_diffusion", "{good}", "--schedule_sampler", "magic"), ["--schedule_sampler", "magic"]),
    ("ddgan-unknown-flag", "ddgan.train", T("ddgan", "{good}", "--no_such_flag", "1"), ["unrecognized arguments: --no_such_flag"]),
    ("ddgan-bad-precision", "ddgan.train", T("ddgan", "{good}", "--precision", "fp8"), ["--precision", "fp8"]),
    ("gans-beta1-out-of-range", "gans.train", T("gans", "{good}", "--beta1", "1.5"), ["--beta1", "1.5"]),
    ("gans-bad-loss", "gans.train", T("gans", "{good}", "--loss", "wasserstein"), ["--loss", "wasserstein"]),
    ("id-sample-unknown-flag", "improved_diffusion.sample", ["--model_path", "{run_improved_diffusion}", "--bogus", "1"], ["unrecognized arguments: --bogus"]),
    # checkpoints
    ("id-resume-another-config", "improved_diffusion.train", T("improved_diffusion", "{good}", "--resume_checkpoint", "{run_improved_diffusion}", "--num_channels", "64"), ["model000002.pt", "model weights do not fit", "check the model flags"]),
    ("ddgan-resume-another-ch-mult", "ddgan.train", T("ddgan", "{good}", "--resume", "{run_ddgan}", "--ch_mult", "1", "1"), ["model000002.pt", "do not fit"]),
    ("gans-resume-another-kind", "gans.train", T("gans", "{good}", "--resume_checkpoint", "{run_gans}", "--model", "cdcgan"), ["model000002.pt", "holds a dcgan generator"]),
    ("id-resume-pickle-payload", "improved_diffusion.train", T("improved_diffusion", "{good}", "--resume_checkpoint", "{root}/evil/model000001.pt"), ["model000001.pt", "refused", "would run code"]),
    ("gans-sample-pickle-payload", "gans.sample", ["--model_path", "{root}/evil/model000001.pt", "--logdir", "{out}"], ["model000001.pt", "refused"]),
    ("ddgan-sample-pickle-payload", "ddgan.sample", [*faultlib.flag_file_argv(helpers.ROOT / "flags/ddgan/digits16.sh", "SAMPLE"),
                                                     "--model_path", "{root}/evil/netG.pth", "--logdir", "{out}"], ["netG.pth", "refused"]),
    ("id-resume-not-a-checkpoint", "improved_diffusion.train", T("improved_diffusion", "{good}", "--resume_checkpoint", "{root}/text.pt"), ["text.pt", "not a readable checkpoint"]),
    ("gans-resume-missing", "gans.train", T("gans", "{good}", "--resume_checkpoint", "{root}/nothing"), ["{root}/nothing", "no such checkpoint"]),
    ("gans-new-run-over-checkpoints", "gans.train", T("gans", "{good}", "--logdir", "{run_gans}"), ["{run_gans}", "already holds checkpoints"]),
    ("id-new-run-over-checkpoints", "improved_diffusion.train", T("improved_diffusion", "{good}", "--logdir", "{run_improved_diffusion}"), ["already holds checkpoints"]),
    ("ddgan-sample-no-such-exp", "ddgan.sample", ["--exp", "no_such_experiment", "--epoch_id", "5", "--logdir", "{out}"], ["no_such_experiment", "no such experiment folder"]),
    ("ddgan-sample-npy-not-stats", "ddgan.sample", [*faultlib.flag_file_argv(helpers.ROOT / "flags/ddgan/digits16.sh", "SAMPLE"), "--model_path", "{run_ddgan}",
                                                    "--compute_fid", "--real_img_dir", "{root}/array.npy", "--logdir", "{out}"], ["array.npy", "not DDGAN FID statistics"]),
    # run directories
    ("ddgan-logdir-under-a-file", "ddgan.train", T("ddgan", "{good}", "--logdir", "{root}/file/run"), ["{root}/file/run", "cannot create the run directory"]),
    # evaluations
    ("fid-weights-missing", "evaluations.fid", ["{root}/good.npz", "{root}/good.npz", "--inception_weights", "{root}/none.pth"], ["{root}/none.pth", "no such file"]),
    ("fid-npz-wrong-keys", "evaluations.fid", ["{root}/keys.npz", "{root}/good.npz"], ["keys.npz"]),
    ("fid-bad-batch-size", "evaluations.fid", ["{root}/good.npz", "{root}/good.npz", "--batch-size", "0"], ["--batch-size", "0"]),
    ("npz-to-images-wrong-dtype", "evaluations.npz_to_images", ["{root}/dtype.npz", "{out}"], ["dtype.npz", "uint8"]),
    ("images-to-npz-empty-folder", "evaluations.images_to_npz", ["{empty}", "{out}/x.npz"], ["{empty}"]),
    ("compare-missing-config", "evaluations.compare", ["--config", "{root}/nowhere.sh", "--logdir", "{out}"], ["{root}/nowhere.sh"]),
]


def fill(value, inputs, out):
    names = {k: str(v) for k, v in inputs.items() if k != "digests"}
    return str(value).format(out=out, **names)


@pytest.mark.parametrize("case_id,module,argv,fragments", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case_id, module, argv, fragments, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    if argv and argv[0] == "train":
        _, family, data, *extra = argv
        # the case's own --logdir (given last) wins over the default output folder
        argv = family_argv(family, fill(data, inputs, out), out, "--max_steps", 2, *extra)
    argv = [fill(a, inputs, out) for a in argv]
    code, err = run_module(module, argv, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0, f"{case_id}: exit 0\n{err[-2000:]}"
    assert "Traceback" not in err, err[-3000:]
    assert len(lines) == 1 and ": error: " in lines[0], f"{case_id}: stderr is not one error line:\n{err[-2000:]}"
    for fragment in fragments:
        assert fill(fragment, inputs, out) in lines[0], f"{case_id}: {fill(fragment, inputs, out)!r} not in {lines[0]!r}"
    # nothing half-written: no checkpoint, sample file, image or temporary in the output folder
    if out.exists():
        left = [p.name for p in out.rglob("*") if p.suffix in (".pt", ".npz", ".png", ".pth") or p.name.startswith(".tmp")]
        assert not left, f"{case_id}: left {left}"
    for run, before in inputs["digests"].items():
        assert digest(inputs[run]) == before, f"{case_id}: {run} changed"
    assert not (inputs["root"] / "PWNED").exists(), "a pickle payload ran"


def test_full_disk_fails_the_checkpoint_and_keeps_the_last_one(inputs, tmp_path):
    """A file-size limit makes every write past a few KiB fail as a full disk does (EFBIG instead
    of ENOSPC): the run resumes, trains, cannot write its checkpoint, says so in one line and
    leaves the previous checkpoint as it was, with no temporaries."""
    run_dir = tmp_path / "run"
    shutil.copytree(inputs["run_gans"], run_dir)
    before = digest(run_dir)

    # below every checkpoint file, above every log file
    size = min(p.stat().st_size for p in run_dir.glob("*.pt")) - 1
    assert size > 2 * max(p.stat().st_size for p in run_dir.iterdir() if p.suffix != ".pt")

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failing write() instead of a killed process
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    argv = family_argv("gans", inputs["good"], run_dir, "--max_steps", 3, "--resume_checkpoint", "auto")
    proc = subprocess.run([sys.executable, "-m", "gans.train", *[str(a) for a in argv]], cwd=helpers.ROOT,
                          env=helpers.test_env(), capture_output=True, text=True, timeout=300, preexec_fn=limit)
    lines = helpers.error_lines(proc)
    assert proc.returncode == 2, helpers.describe(proc)
    assert len(lines) == 1 and "cannot write" in lines[0] and "000003" in lines[0], lines
    after = digest(run_dir)
    assert {k: v for k, v in after.items() if k in before and k.endswith(".pt")} == \
        {k: v for k, v in before.items() if k.endswith(".pt")}
    assert not [n for n in os.listdir(run_dir) if n.startswith(".tmp") or "000003" in n and n.endswith(".pt")]


@pytest.mark.parametrize("argv,fragment", [
    (["launch/run.sh", "mpiexec", "0", "gans.train"], "NPROC '0'"),
    (["launch/run.sh", "--rdzv_id", "x", "slurm", "2", "gans.train"], "unknown launcher 'slurm'"),
    (["launch/tmux.sh", "bad name!", "{tmp}/r", "true"], "session name 'bad name!'"),
    (["launch/quickstart.sh", "--no-such-option"], "--no-such-option"),
], ids=["run.sh-nproc-zero", "run.sh-unknown-launcher", "tmux.sh-bad-session", "quickstart-unknown-option"])
def test_launch_scripts_refuse_bad_arguments(argv, fragment, tmp_path):
    cmd = ["bash", helpers.ROOT / argv[0], *[a.format(tmp=tmp_path) for a in argv[1:]]]
    proc = subprocess.run([str(c) for c in cmd], cwd=helpers.ROOT, env=helpers.test_env(), capture_output=True,
                          text=True, timeout=120)
    lines = helpers.error_lines(proc)
    assert proc.returncode != 0 and len(lines) == 1 and fragment in lines[0] and "error" in lines[0], helpers.describe(proc)


def test_nan_loss_stops_with_the_last_good_checkpoint(inputs, tmp_path, capsys):
    """lr 1e30: step 1 is finite, step 2 overflows; the run stops with one line and step 1's
    checkpoint stays the newest complete one (fp16 would skip the step instead)."""
    out = tmp_path / "run"
    argv = family_argv("improved_diffusion", inputs["good"], out, "--lr", "1e30", "--max_steps", 5, "--save_interval", 1)
    code, err = run_module("improved_diffusion.train", argv, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "loss is not finite at step 2" in lines[0], err[-2000:]
    assert sorted(p.name for p in out.glob("state*.pt")) == ["state000001.pt"]
