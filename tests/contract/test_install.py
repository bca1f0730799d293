"""A non-editable install works without a checkout: the wheel ships flags/, launch/ and
datasets/ (under genbench_data/), trainkit.resources finds them, and the console scripts run
from any folder with the installed modules.

The wheel is built from a copy of the tree's files (what git tracks or would track), installed
with `pip --python` into a fresh virtualenv whose only other path is this interpreter's
site-packages, for torch and the other dependencies (a .pth line adds the folder without running
its .pth files, so this checkout's editable install stays out). Commands then run from a
temporary folder with no PYTHONPATH: what runs is the installed copy, and the tests check that.
"""

import os
import re
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import forkserver
import helpers
from trainkit import resources
from trainkit.errors import UserError

SHIPPED = ("flags", "launch", "datasets")


def _tree_files() -> list:
    """The checkout's files as a clean clone would have them: tracked or not ignored, present."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=helpers.ROOT,
                         capture_output=True, text=True, check=True).stdout
    return [f for f in out.split("\0") if f and (helpers.ROOT / f).is_file()]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    if shutil.which("git") is None or not (helpers.ROOT / ".git").exists():
        pytest.skip("needs a git checkout to know the tree's files")
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    for name in _tree_files():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(helpers.ROOT / name, src / name)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                           "-w", str(work / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, helpers.describe(proc)
    (built,) = (work / "dist").glob("genbench-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> dict:
    """A fresh virtualenv with the wheel installed; the dependencies come from this interpreter's."""
    home = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(home)], check=True, timeout=120)
    python = home / "bin" / "python"
    purelib = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    (purelib / "genbench_test_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                           "--no-index", str(wheel)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, helpers.describe(proc)
    return {"python": python, "bin": home / "bin", "site": purelib}


def installed_env(venv, **extra) -> dict:
    """The environment of a user of the installed package: its bin first on PATH, no PYTHONPATH,
    no $PYTHON (so the main job's children get the installed interpreter), one thread, no CUDA."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHON", "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT",
                        "OPENAI_LOGDIR", forkserver.SOCKET_ENV)}
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1", TRAINKIT_DIST_TIMEOUT="60",
               PATH=str(venv["bin"]) + os.pathsep + env.get("PATH", ""))
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_installed(venv, argv, cwd, timeout=300, **env):
    return subprocess.run([str(a) for a in argv], cwd=cwd, env=installed_env(venv, **env), capture_output=True,
                          text=True, timeout=timeout)


def _is_under(path, folder) -> bool:
    return os.path.commonpath([os.path.realpath(path), os.path.realpath(folder)]) == os.path.realpath(folder)


# --- the resolver, in process ---------------------------------------------------------------------

def test_a_path_that_exists_as_given_wins_over_the_shipped_copy(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shipped = resources.find("flags/compare/digits.sh", "comparison config")
    assert shipped == str(helpers.ROOT / "flags" / "compare" / "digits.sh")  # a checkout ships itself
    own = tmp_path / "flags" / "compare" / "digits.sh"
    own.parent.mkdir(parents=True)
    own.write_text("DATA_DIR=mine\n")
    assert resources.find("flags/compare/digits.sh") == str(own)
    # the launcher is always the installation's own, whatever the working folder holds
    (tmp_path / "launch").mkdir()
    (tmp_path / "launch" / "run.sh").write_text("exit 1\n")
    assert resources.run_sh() == str(helpers.ROOT / "launch" / "run.sh")
    with pytest.raises(UserError) as e:
        resources.find("flags/compare/nope.sh", "comparison config")
    assert str(e.value) == "flags/compare/nope.sh: no such comparison config"
    with pytest.raises(UserError, match=r"^/no/such\.sh: no such flag file$"):
        resources.find("/no/such.sh", "flag file")


def test_resources_lists_and_resolves_shipped_files(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert resources.main([]) == 0
    listed = capsys.readouterr().out.split()
    assert {"flags/compare/digits.sh", "launch/run.sh", "launch/quickstart.sh", "datasets/digits.py"} <= set(listed)
    assert all(name.split("/")[0] in SHIPPED and "__pycache__" not in name for name in listed)
    assert resources.main(["launch/run.sh", "flags/gans/dcgan_digits.sh"]) == 0
    assert capsys.readouterr().out.split() == [str(helpers.ROOT / "launch/run.sh"),
                                               str(helpers.ROOT / "flags/gans/dcgan_digits.sh")]
    assert resources.main(["launch/run.sh", "flags/nope.sh"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.strip().splitlines() == ["trainkit.resources: error: flags/nope.sh: no such file"]


# --- the wheel --------------------------------------------------------------------------------

def test_the_wheel_ships_flags_launch_and_datasets_byte_for_byte(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        expected = [f for f in _tree_files() if f.split("/")[0] in SHIPPED]
        assert any(f.startswith("flags/compare/") for f in expected) and "launch/run.sh" in expected
        for name in expected:
            assert f"genbench_data/{name}" in names, f"{name} is not in the wheel"
            assert z.read(f"genbench_data/{name}") == (helpers.ROOT / name).read_bytes(), name
        # the tests and the checkout's own tooling are not installed
        assert not any(n.startswith(("tests/", "benchmarks/", "scripts/", ".ci/")) for n in names)


@pytest.mark.slow
def test_the_installed_main_job_runs_from_any_folder(venv, tmp_path):
    """The wheel's launch/quickstart.sh in smoke mode (shortened further by flags it passes on to
    genbench-compare), from a folder that is not the checkout: exit 0, the report written in the
    calling folder, the digits exported there, every stage through the shipped run.sh and flag
    file with the installed interpreter, nothing written into site-packages."""
    proc = run_installed(venv, [venv["python"], "-c", "import evaluations, trainkit.resources as r; "
                                "print(evaluations.__file__); print(r.ROOT); print(r.CHECKOUT)"], tmp_path)
    assert proc.returncode == 0, helpers.describe(proc)
    module_file, root, checkout = proc.stdout.split()
    assert _is_under(module_file, venv["site"]) and not _is_under(module_file, helpers.ROOT)
    assert Path(root) == venv["site"] / "genbench_data" and checkout == "None"

    proc = run_installed(venv, ["genbench-compare", "--config", "flags/compare/nope.sh"], tmp_path)
    assert proc.returncode == 2 and helpers.error_lines(proc) == [
        "evaluations.compare: error: flags/compare/nope.sh: no such comparison config"], helpers.describe(proc)

    quickstart = subprocess.run([str(venv["python"]), "-m", "trainkit.resources", "launch/quickstart.sh"],
                                cwd=tmp_path, env=installed_env(venv), capture_output=True, text=True).stdout.strip()
    shipped = venv["site"] / "genbench_data"
    assert Path(quickstart) == shipped / "launch" / "quickstart.sh"
    proc = run_installed(venv, ["bash", quickstart, "--smoke", "qs", "--strict", "--only", "dcgan", "--nproc", "1",
                                "--minutes", "0.1", "--num_samples", "50", "--no_baseline", "--no_control"], tmp_path)
    assert proc.returncode == 0, helpers.describe(proc)
    out = tmp_path / "qs"
    assert "dcgan" in (out / "report.md").read_text() and (out / "report.html").is_file()
    assert f"report: {out / 'report.md'}" in proc.stdout
    # DATA_DIR (data/digits16) is relative to the working folder, never the installed package
    assert len(list((tmp_path / "data" / "digits16" / "train").glob("*.png"))) == 1438
    assert sorted(p.name for p in shipped.iterdir()) == ["datasets", "flags", "launch"]
    log = (out / "dcgan" / "train" / "launch.log").read_text()
    assert log.startswith(f"$ bash {shipped / 'launch' / 'run.sh'} local 1 {shipped / 'flags/gans/dcgan_digits.sh'} "
                          "gans.train"), log[:400]
    assert re.search(rf"\+ {re.escape(str(venv['bin']))}/python3? -m gans.train", log), log[:800]


@pytest.mark.slow
def test_installed_genbench_fid_matches_the_source_trees(venv, tmp_path):
    from evaluations import fid, inception

    weights = inception.make_random_weights(str(tmp_path / inception.WEIGHTS_NAME), seed=0, calibration_batches=1,
                                            batch_size=2)
    rng = np.random.default_rng(0)
    for name, lo in (("a", 0), ("b", 90)):
        np.savez(tmp_path / f"{name}.npz", rng.integers(lo, 256, (12, 16, 16, 3)).astype(np.uint8))
    flags = ["--dims", "64", "--device", "cpu", "--num-workers", "0", "--batch-size", "6",
             "--inception_weights", weights]
    proc = run_installed(venv, ["genbench-fid", *flags, "a.npz", "b.npz"], tmp_path)
    assert proc.returncode == 0, helpers.describe(proc)
    value = float(re.search(r"FID:\s+(\S+)", proc.stdout).group(1))
    ours = fid.fid_of_paths(str(tmp_path / "a.npz"), str(tmp_path / "b.npz"), dims=64, batch_size=6, device="cpu",
                            num_workers=0, weights=weights)
    assert value > 0 and value == pytest.approx(ours, rel=1e-6)
    umbrella = run_installed(venv, ["genbench", "fid", *flags, "a.npz", "b.npz"], tmp_path)  # the same command
    assert umbrella.returncode == 0 and re.search(r"FID:\s+(\S+)", umbrella.stdout).group(1) == str(value), \
        helpers.describe(umbrella)


def test_the_launcher_takes_a_flag_file_as_given_else_the_copy_beside_it(tmp_path):
    """From a folder without flags/, `run.sh ... flags/gans/dcgan_digits.sh` sources the copy
    next to run.sh's own folder (the checkout's here, genbench_data's in a wheel); a file of that
    name in the working folder wins; a name found nowhere is one line naming it."""
    run_sh = str(helpers.ROOT / "launch" / "run.sh")

    def launch(*flag_files):
        return subprocess.run(["bash", run_sh, "local", "1", *flag_files, "gans.train", "--help"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=helpers.MAX_TIMEOUT)

    shipped = launch("flags/gans/dcgan_digits.sh")
    assert shipped.returncode == 0, shipped.stderr
    assert "--model dcgan" in shipped.stderr.splitlines()[-1]  # the traced command line: the shipped flags
    (tmp_path / "flags" / "gans").mkdir(parents=True)
    (tmp_path / "flags" / "gans" / "dcgan_digits.sh").write_text('MODEL_FLAGS="--model cgan"\n')
    own = launch("flags/gans/dcgan_digits.sh")
    assert own.returncode == 0 and "--model cgan" in own.stderr.splitlines()[-1], own.stderr
    missing = launch("flags/gans/nope.sh")
    assert missing.returncode != 0 and "flag file 'flags/gans/nope.sh' does not exist" in missing.stderr
