"""The main job end to end on a tiny budget: every family trains, samples and is judged, and the
report has a row per family with finite numbers and every image it shows; a run that fails shows
as FAILED and the others go on."""


import json
import re

import numpy as np
import pytest

import helpers
from evaluations import report

FAMILIES = {"dcgan", "cdcgan", "ddgan", "improved_diffusion"}


def _config(tmp_path, data_root, nproc=1):
    path = tmp_path / "tiny.sh"
    path.write_text(
        f'DATA_DIR="{data_root}"\nDATA_PREP=""\nNPROC={nproc}\nMINUTES=1\nTRAIN_FRACTION=0.5\n'
        "NUM_SAMPLES=40\nSAMPLE_BATCH=20\nPROBE_POINTS=2\nPROBE_SAMPLES=50\n"
        'EDIT_FLAGS="--images {data}"\n'  # the edits start from the training images
        'RUNS="\n'
        "dcgan | flags/gans/dcgan_digits.sh | gans | 1 | --max_steps 100000 |\n"
        "cdcgan | flags/gans/cdcgan_digits.sh | gans | 1 | --max_steps 100000 |\n"
        "ddgan | flags/ddgan/digits16.sh | ddgan | 1 | --num_epoch 100000 |\n"
        "improved_diffusion | flags/improved_diffusion/digits_tiny.sh | improved_diffusion | 1 | --max_steps 100000 | "
        "ddim5: --timestep_respacing ddim5 --use_ddim True\n"
        # a run that cannot start (cdcgan's flags, a size DCGAN cannot make): FAILED, the rest go on
        "broken | flags/gans/cdcgan_digits.sh | gans | 1 | --model dcgan --image_size 17 |\n"
        '"\n'
    )
    return path


def _number(text):
    return float(text.replace(",", ""))


@pytest.mark.slow
def test_compare_trains_samples_judges_and_reports(tmp_path, digits):
    data_root = digits(16).parent
    out = tmp_path / "cmp"
    # one intra-op thread a stage, as helpers pins every rank: on a shared 2-core machine two
    # OpenMP threads made the tiny U-Net's forward ~40x slower than one (1.4 s against 33 ms)
    proc = helpers.py("evaluations.compare", "--config", _config(tmp_path, data_root), "--logdir", out)
    assert proc.returncode == 0, helpers.describe(proc)  # a failed stage fails the job only with --strict
    assert f"report: {out / 'report.html'}" in proc.stdout

    md = (out / "report.md").read_text()
    rows = [r for r in report.read_table(md) if r["run"] not in ("broken", report.REAL_NAME)]
    assert {r["run"] for r in rows} == FAMILIES
    # the real-data row: the digits' test split judged like a run, on as many images as the rows
    (real,) = [r for r in report.read_table(md) if r["run"] == report.REAL_NAME]
    assert _number(real["samples"]) == 40 and 0 < _number(real["precision"]) <= 1
    assert "Held-out real data: the digits' test split (359 images" in md
    assert (out / "heldout" / "metrics.json").is_file() and "**Held-out real data**" in md
    assert "## Copies of the training set" in md and (out / "figures" / "closest_training_images.png").is_file()
    assert "### Recall per class" in md and "| class | held-out real data | cdcgan |" in md
    assert "### Training stability" in md
    # finite numbers in every row but the failed run's, every image present
    problems = report.check(str(out), FAMILIES)
    assert problems and all("run broken" in p for p in problems), problems
    broken = next(r for r in report.read_table(md) if r["run"] == "broken")
    assert broken["sampler"] == "–" and "FAILED" in " ".join(broken.values())
    for r in rows:
        assert _number(r["samples"]) == 40 and _number(r["steps"]) >= 1
    by_name = {r["run"]: r for r in rows}
    # the closing summary, before the report's paths: each run's best row as the table has it,
    # after a progress display that counted every stage (stderr is no terminal here: plain lines)
    start = proc.stdout.index("best row per run (FD-digits")
    summary = proc.stdout[start:proc.stdout.index("\nreport: ", start)].splitlines()
    assert len(summary) == 1 + 1 + len(FAMILIES) + 1  # the heading, held-out real data, the runs, broken
    assert summary[1].split(":", 1)[0].strip() == report.REAL_NAME
    assert summary[1].split(":", 1)[1].split() == (f"FD-digits {real['FD-digits']} ± {real['FD std']}, precision "
                                                   f"{real['precision']}, recall {real['recall']}").split()
    for name, r in by_name.items():
        label = name if r["sampler"] == "default" else f"{name} ({r['sampler']})"
        (line,) = [s for s in summary if s.strip().startswith(label + ":")]
        assert line.split(":", 1)[1].split() == (f"FD-digits {r['FD-digits']} ± {r['FD std']}, precision "
                                                 f"{r['precision']}, recall {r['recall']}").split()
    assert [s for s in summary if s.strip().startswith("broken:")][0].split()[1] == "FAILED"
    done = re.findall(r"^progress: (\d+)/(\d+) stages, .* \| report: written$", proc.stdout, re.M)
    assert len(done) == 1 and done[0][0] == done[0][1], proc.stdout
    assert _number(by_name["ddgan"]["NFE/img"]) == 4 and _number(by_name["improved_diffusion"]["NFE/img"]) == 5
    assert _number(by_name["dcgan"]["NFE/img"]) == 1
    assert 0 <= _number(by_name["cdcgan"]["class acc."]) <= 1  # conditional samples carry labels
    # The judge reads the samples: the GANs train tens of steps even in this budget and must beat
    # their one-step baselines, sampled with the same sampler (a judge that returns a constant,
    # or scores the untrained samples twice, fails here).
    for name in ("dcgan", "cdcgan"):
        trained, untrained = _number(by_name[name]["FD-digits"]), _number(by_name[name]["FD untrained"])
        assert _number(by_name[name]["steps"]) > 1 and trained < 0.95 * untrained, (name, trained, untrained)
    # (3 significant digits: two families' FD alone can print alike, as dcgan's and cdcgan's 156 did)
    assert len({tuple(by_name[name][c] for c in ("FD-digits", "FD std", "precision", "recall"))
                for name in FAMILIES}) == len(FAMILIES)
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3 and "FAILED" in html
    assert "Hardware:" in md and "feature" in md
    assert md.index("## Verdict") < md.index("## Results") and "**Collapse**" in md
    # controllability: an interpolation per family and improved diffusion's partial denoising
    control = md[md.index("## Controllability"):]
    for name in FAMILIES:
        assert f"**{name}: interpolation**" in control
    assert "**improved_diffusion: partial denoising**" in control
    # quality over training: each family's training probed its FD at the end of its share (and
    # at its middle when it got that far), the report plots it and the verdict reads it
    for name in FAMILIES:
        quality = (out / name / "train" / "quality.csv").read_text().splitlines()
        assert quality[0] == "step,samples,train_seconds,probe_seconds,fd,fd_std,num_samples" and len(quality) >= 2
        assert all(line.endswith(",50") for line in quality[1:])
        assert not (out / name / "untrained" / "quality.csv").exists()  # the one-step baseline is not probed
    assert (out / "figures" / "fd_over_training.png").is_file() and "## FD-digits over training" in md
    assert "fixed samples at evenly spaced points" in md[md.index("## Verdict"):md.index("## Results")]
    assert (out / "improved_diffusion" / "edit" / "edit.npz").is_file()

    # --reuse: no finished stage runs again (the failed one does, and fails again); --strict
    # makes the exit status say that a stage failed
    finished = {p: p.stat().st_mtime_ns for p in out.rglob("launch.log") if "broken" not in p.parts}
    again = helpers.py("evaluations.compare", "--config", _config(tmp_path, data_root), "--logdir", out, "--reuse",
                       "--strict", timeout=600)
    assert again.returncode == 1, helpers.describe(again)
    assert finished == {p: p.stat().st_mtime_ns for p in out.rglob("launch.log") if "broken" not in p.parts}


def test_the_training_stages_probe_flags_name_the_judgings_reference(tmp_path, digits):
    """Digits judging: the probe reads the digits' train split itself; a folder's reference: its
    features are computed and cached before training, and the probe reads that file."""
    from evaluations import compare

    assert compare.Judging().probe_flags(4, 200) == ["--probe_points", 4, "--probe_samples", 200, "--probe_features",
                                                     "digits", "--probe_reference", "digits"]
    assert compare.Judging().probe_flags(0, 200) == []
    folder = compare.Judging("digits", "train", str(digits(16)), reference_size=300, cache_dir=str(tmp_path))
    flags = folder.probe_flags(2, 50)
    path = flags[flags.index("--probe_reference") + 1]
    # the one reference-feature cache (metrics.reference_features) beside a folder of the chosen images
    assert path == str(tmp_path / "reference" / "train-300-of-1438.digits-features.npz")
    with np.load(path) as z:
        assert z["features"].shape == (300, 64)


def test_compare_bad_input():
    proc = helpers.py("evaluations.compare", "--config", "flags/compare/nope.sh")
    assert proc.returncode == 2 and helpers.error_lines(proc) == [
        "evaluations.compare: error: flags/compare/nope.sh: no such comparison config"]
    proc = helpers.py("evaluations.compare", "--only", "nobody")
    assert proc.returncode == 2 and "--only: no run named nobody" in proc.stderr


def test_a_multi_process_stage_uses_mpiexec_when_it_is_installed(monkeypatch):
    """The main job's launcher: one process runs alone; more go to mpiexec when mpi4py and
    mpiexec are installed (the README's [mpi] extra), else to torchrun."""
    import importlib.util
    import shutil

    from evaluations import compare

    assert compare.pick_launcher(1) == "local"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(shutil, "which", lambda name: "/bin/" + name)
    assert compare.pick_launcher(2) == "mpiexec"
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert compare.pick_launcher(2) == "torchrun"


def test_reuse_skips_a_finished_stage_only_when_its_command_line_is_the_same(tmp_path):
    """--reuse: a stage that finished with these flags is not run again; one whose command line
    changed (another --num_samples, say) is, since its old output answers another question."""
    import sys

    from evaluations import compare

    count = tmp_path / "runs.txt"
    def argv(n):
        return [sys.executable, "-c", f"open({str(count)!r}, 'a').write('{n}\\n')"]
    stage = tmp_path / "stage"
    assert compare.Stage(str(stage), argv(500)).run(reuse=True)["ok"]
    assert compare.Stage(str(stage), argv(500)).run(reuse=True)["reused"]
    again = compare.Stage(str(stage), argv(250)).run(reuse=True)
    assert again["ok"] and "reused" not in again
    assert count.read_text().split() == ["500", "250"]


def test_reuse_judges_a_flag_file_by_its_content_not_its_path(tmp_path):
    """A shell file the stage names (run.sh, the flag file) counts by name and content: the same
    file elsewhere (a moved checkout, the installed copy) is reused, an edited one runs again."""
    import shutil
    import sys

    from evaluations import compare

    count = tmp_path / "runs.txt"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    flags = tmp_path / "a" / "dcgan.sh"
    flags.write_text("TRAIN_FLAGS='--lr 2e-4'\n")
    shutil.copy(flags, tmp_path / "b" / "dcgan.sh")
    def argv(f):
        return [sys.executable, "-c", f"open({str(count)!r}, 'a').write('x')", str(f)]
    stage = tmp_path / "stage"
    first = compare.Stage(str(stage), argv(flags)).run(reuse=True)
    assert first["identity"][-1].startswith("dcgan.sh@sha256:") and first["argv"][-1] == str(flags)
    assert compare.Stage(str(stage), argv(tmp_path / "b" / "dcgan.sh")).run(reuse=True)["reused"]
    flags.write_text("TRAIN_FLAGS='--lr 1e-4'\n")
    assert "reused" not in compare.Stage(str(stage), argv(flags)).run(reuse=True)
    assert count.read_text() == "xx"
    record = json.loads((stage / "stage.json").read_text())  # an old record (no identity): its argv decides
    del record["identity"]
    (stage / "stage.json").write_text(json.dumps(record))
    assert compare.Stage(str(stage), argv(flags)).run(reuse=True)["reused"]


def test_the_main_jobs_ddim_row_is_the_samplers_ddim_from_the_last_timestep():
    """The report's ddim row is DDIM over the model's own 100 timesteps from t = T-1 (its label
    names the sampler and its steps), not openai's ddimN respacing, which starts at t = 90."""
    import shlex

    from evaluations import compare

    entry = next(r for r in compare.read_config("flags/compare/digits.sh")["runs"]
                 if r["package"] == "improved_diffusion")
    rows = {s["label"]: s["flags"] for s in entry["samplers"]}
    ddim = {label: flags for label, flags in rows.items() if "ddim" in shlex.join(flags)}
    assert list(ddim) == ["ddim-10"]
    flags = ddim["ddim-10"]
    assert flags[flags.index("--sampler") + 1] == "ddim" and flags[flags.index("--steps") + 1] == "10"
    assert flags[flags.index("--timestep_respacing") + 1] == ""


@pytest.mark.parametrize("fd_name,header,cell", [("FID", "KID ×10³", 12.3), ("FD-digits", "KID", 0.0123)])
def test_the_reports_kid_column_is_times_a_thousand_for_inception(tmp_path, fd_name, header, cell):
    """An FID comparison (Inception features) shows KID ×10³, the field's convention; the digits
    space's KID is shown as it is. The row keeps the MMD² itself and check() reads either column."""
    row = {"sampler": "default", "fd_digits": 50.0, "fd_std": 2.0, "precision": 0.9, "precision_std": 0.01,
           "recall": 0.8, "recall_std": 0.01, "kid": 0.0123, "kid_std": 0.001, "is": 5.0, "nfe": 1,
           "sample_s_per_image": 0.001, "fd_untrained": 300.0, "num_samples": 40}
    results = [{"name": "alpha", "package": "gans", "dir": str(tmp_path / "alpha"), "rows": [row], "failed": [],
                "train_seconds": 10.0, "steps": 5, "train_img_per_s": 1.0, "parameters": 10}]
    meta = {"machine": "x", "cpu_cores": 2, "device": "CPU only", "torch": "t", "python": "p", "launcher": "local x 1",
            "feature_network": "f", "num_samples": 40, "minutes": 1, "config": "c", "wall_seconds": 60,
            "fd_name": fd_name}
    md = open(report.write(str(tmp_path), results, meta)["md"]).read()
    (table_row,) = report.read_table(md)
    other = {"KID ×10³": "KID", "KID": "KID ×10³"}[header]
    assert other not in table_row and _number(table_row[header]) == pytest.approx(cell)
    assert f"{header}: unbiased MMD²" in md and row["kid"] == 0.0123
    assert report.check(str(tmp_path), ["alpha"]) == []
    # the method note speaks to a reader of the report: the digits scale is given as a number,
    # not as the name of a constant in our code
    assert "digits_features" not in md
    assert ("RMS coordinate over the real digits (a constant, 8.309," in md) == (fd_name == "FD-digits")
