"""Bad input from the command line: one line naming the input, non-zero exit, nothing half-written.
Also launch/run.sh's handling of flag files and roles, and the README/CI contract."""

import os
import re

import pytest
from PIL import Image

import helpers


def _one_line_error(proc, *needles):
    lines = helpers.error_lines(proc)
    assert proc.returncode == 2, helpers.describe(proc)
    assert len(lines) == 1, helpers.describe(proc)
    for n in needles:
        assert str(n) in lines[0], lines[0]
    return lines[0]


def _no_partial_files(run_dir):
    if run_dir.exists():
        names = os.listdir(run_dir)
        assert not [n for n in names if n.startswith(".tmp") or n.endswith(".pt")], names


def _folder(tmp_path, n, size=16, name="imgs"):
    d = tmp_path / name
    d.mkdir()
    for i in range(n):
        Image.new("L", (size, size), i * 10).save(d / f"{i % 3}_{i:05d}.png")
    return d


def test_missing_data_dir(tmp_path):
    run_dir = tmp_path / "run"
    proc = helpers.py("trainkit.selfcheck", "--data_dir", tmp_path / "nowhere", "--logdir", run_dir)
    _one_line_error(proc, "trainkit.selfcheck: error:", tmp_path / "nowhere", "no such data directory")
    _no_partial_files(run_dir)


def test_corrupt_png(tmp_path):
    d = _folder(tmp_path, 20)
    (d / "1_99999.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    run_dir = tmp_path / "run"
    proc = helpers.py("trainkit.selfcheck", "--data_dir", d, "--logdir", run_dir)
    _one_line_error(proc, "1_99999.png", "cannot read image")
    _no_partial_files(run_dir)


def test_too_few_images_for_one_global_batch(tmp_path):
    d = _folder(tmp_path, 5)
    run_dir = tmp_path / "run"
    proc = helpers.py("trainkit.selfcheck", "--data_dir", d, "--logdir", run_dir, "--batch_size", "8")
    _one_line_error(proc, str(d), "5 images, fewer than one global batch of 8")
    _no_partial_files(run_dir)


def test_resume_from_a_file_that_is_not_a_checkpoint(tmp_path):
    d = _folder(tmp_path, 20)
    junk = tmp_path / "model000100.pt"
    junk.write_text("definitely not torch")
    run_dir = tmp_path / "run"
    proc = helpers.py("trainkit.selfcheck", "--data_dir", d, "--logdir", run_dir, "--resume_checkpoint", junk)
    _one_line_error(proc, str(junk), "not a readable checkpoint")
    _no_partial_files(run_dir)


def test_bad_flag_value(tmp_path):
    proc = helpers.py("trainkit.selfcheck", "--data_dir", tmp_path, "--batch_size", "many")
    _one_line_error(proc, "--batch_size", "many")


def test_unwritable_logdir(tmp_path):
    d = _folder(tmp_path, 20)
    blocker = tmp_path / "file"
    blocker.write_text("a file where a directory should go")
    proc = helpers.py("trainkit.selfcheck", "--data_dir", d, "--logdir", blocker / "run")
    _one_line_error(proc, str(blocker / "run"), "cannot create the run directory")


@pytest.mark.parametrize("args,needle", [
    (["slurm", "2", "trainkit.selfcheck"], "unknown launcher 'slurm'"),
    (["local", "2", "trainkit.selfcheck"], "the local launcher runs one process"),
    (["torchrun", "zero", "trainkit.selfcheck"], "NPROC 'zero'"),
    (["local", "1", "flags/does/not_exist.sh", "trainkit.selfcheck"],
     "flag file 'flags/does/not_exist.sh' does not exist"),
    (["--nnodes", "2", "mpiexec", "1", "trainkit.selfcheck"], "--nnodes 2 needs the torchrun launcher"),
    (["--nnodes", "2", "torchrun", "1", "trainkit.selfcheck"], "needs --rdzv_endpoint"),
])
def test_run_sh_refuses_bad_launch(args, needle):
    proc = helpers.launch(*args) if args[0] != "--nnodes" else helpers.launch(*args[2:], launch_options=args[:2])
    line = _one_line_error(proc, needle)
    assert line.startswith("run.sh: error:")


def test_run_sh_passes_model_diffusion_and_role_flags_last_wins(tmp_path, digits):
    flags = tmp_path / "tiny.sh"
    flags.write_text(
        'MODEL_FLAGS="--image_size 16"\n'
        'DIFFUSION_FLAGS="--ema_rate 0.5"\n'
        'SELFCHECK_FLAGS="--max_steps 4 --batch_size 2"\n'
        'TRAIN_FLAGS="--not_a_selfcheck_flag 1"\n'
    )
    run_dir = tmp_path / "run"
    proc = helpers.launch("local", 1, flags, "trainkit.selfcheck", "--data_dir", digits(16), "--logdir", run_dir,
                          "--max_steps", "3")
    assert proc.returncode == 0, helpers.describe(proc)
    cmd = [line for line in proc.stderr.splitlines() if line.startswith("+ ")][0]
    assert "--image_size 16 --ema_rate 0.5 --max_steps 4 --batch_size 2" in cmd
    assert "--not_a_selfcheck_flag" not in cmd
    assert "done at step 3" in proc.stdout  # the extra flag came last and won


def test_flag_files_are_plain_shell():
    """Every flag file can be sourced by hand (seed 003's `source flags.sh`)."""
    for root, _, files in os.walk(helpers.ROOT / "flags"):
        for f in files:
            if f.endswith(".sh"):
                proc = helpers._run(["bash", "-euc", f'source "{os.path.join(root, f)}"'], 60, None, None)
                assert proc.returncode == 0, (f, proc.stderr)


def test_readme_test_command_is_what_ci_runs():
    readme = (helpers.ROOT / "README.md").read_text()
    block = re.search(r"```(?:bash|sh)?\n(.*?)```", readme, re.S)[1]
    commands = [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert len(commands) == 2, commands
    ci = (helpers.ROOT / ".ci" / "run").read_text()
    assert commands[1].strip() in ci
    assert "pytest" in commands[1] and "launch/quickstart.sh" in commands[0]


def test_every_module_imports_without_mpi():
    """mpi4py is imported only under an MPI launch: a machine without MPI imports everything."""
    code = (
        "import sys, pkgutil, importlib\n"
        "sys.modules['mpi4py'] = None  # any import of mpi4py now fails\n"
        "import trainkit, evaluations, improved_diffusion, ddgan, gans\n"
        "for pkg in (trainkit, evaluations, improved_diffusion, ddgan, gans):\n"
        "    for m in pkgutil.iter_modules(pkg.__path__):\n"
        "        importlib.import_module(f'{pkg.__name__}.{m.name}')\n"
        "from trainkit import dist\n"
        "dist.init(); assert dist.world_size() == 1 and dist.launcher() == 'local'\n"
        "print('ok')\n"
    )
    proc = helpers._run([__import__("sys").executable, "-c", code], 300, None, None)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), helpers.describe(proc)


def test_digits_export_layout_split_and_reuse(tmp_path):
    out = tmp_path / "digits"
    proc = helpers.script("datasets/digits.py", "--out", out, "--size", "12")
    assert proc.returncode == 0, helpers.describe(proc)
    train, test = sorted(os.listdir(out / "train")), sorted(os.listdir(out / "test"))
    assert len(train) == 1438 and len(test) == 359 and not set(train) & set(test)
    assert all(re.fullmatch(r"\d_\d{5}\.png", n) for n in train + test)
    indices = sorted(int(n[2:7]) for n in train + test)
    assert indices == list(range(1797))
    with Image.open(out / "train" / train[0]) as im:
        assert im.size == (12, 12) and im.mode == "L"
    stamp = (out / "train" / train[0]).stat().st_mtime_ns
    again = helpers.script("datasets/digits.py", "--out", out, "--size", "12")
    assert again.returncode == 0 and (out / "train" / train[0]).stat().st_mtime_ns == stamp
    bad = helpers.script("datasets/digits.py", "--out", out, "--size", "4")
    assert bad.returncode == 2 and "--size" in bad.stderr
