"""The main job end to end on a tiny budget: every family trains, samples and is judged, and the
report has a row per family with finite numbers and every image it shows."""

import math

import pytest

import helpers
from evaluations import report

pytestmark = pytest.mark.slow

FAMILIES = {"dcgan", "cdcgan", "ddgan", "improved_diffusion"}


def _config(tmp_path, data_root, nproc=1):
    path = tmp_path / "tiny.sh"
    path.write_text(
        f'DATA_DIR="{data_root}"\nDATA_PREP=""\nNPROC={nproc}\nMINUTES=1\nTRAIN_FRACTION=0.5\n'
        "NUM_SAMPLES=40\nSAMPLE_BATCH=20\n"
        'RUNS="\n'
        "dcgan | flags/gans/dcgan_digits.sh | gans | 1 | --max_steps 100000 |\n"
        "cdcgan | flags/gans/cdcgan_digits.sh | gans | 1 | --max_steps 100000 |\n"
        "ddgan | flags/ddgan/digits16.sh | ddgan | 1 | --num_epoch 100000 |\n"
        "improved_diffusion | flags/improved_diffusion/digits_tiny.sh | improved_diffusion | 1 | --max_steps 100000 | "
        "ddim5: --timestep_respacing ddim5 --use_ddim True\n"
        '"\n'
    )
    return path


def _number(text):
    return float(text.replace(",", ""))


def test_compare_trains_samples_judges_and_reports(tmp_path, digits):
    data_root = digits(16).parent
    out = tmp_path / "cmp"
    # one intra-op thread a stage, as helpers pins every rank: on a shared 2-core machine two
    # OpenMP threads made the tiny U-Net's forward ~40x slower than one (1.4 s against 33 ms)
    proc = helpers.py("evaluations.compare", "--config", _config(tmp_path, data_root), "--logdir", out, "--strict",
                      timeout=1500)
    assert proc.returncode == 0, helpers.describe(proc)
    assert f"report: {out / 'report.html'}" in proc.stdout

    md = (out / "report.md").read_text()
    rows = report.read_table(md)
    assert {r["run"] for r in rows} == FAMILIES
    assert report.check(str(out), FAMILIES) == []  # finite numbers in every row, every image present
    for r in rows:
        assert _number(r["samples"]) == 40 and _number(r["steps"]) >= 1
    by_name = {r["run"]: r for r in rows}
    assert _number(by_name["ddgan"]["NFE/img"]) == 4 and _number(by_name["improved_diffusion"]["NFE/img"]) == 5
    assert _number(by_name["dcgan"]["NFE/img"]) == 1
    assert 0 <= _number(by_name["cdcgan"]["class acc."]) <= 1  # conditional samples carry labels
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3 and "FAILED" not in html
    assert "Hardware:" in md and "feature" in md
    assert md.index("## Verdict") < md.index("## Results") and "**Collapse**" in md
    # controllability: an interpolation per family and improved diffusion's partial denoising
    control = md[md.index("## Controllability"):]
    for name in FAMILIES:
        assert f"**{name}: interpolation**" in control
    assert "**improved_diffusion: partial denoising**" in control
    assert (out / "improved_diffusion" / "edit" / "edit.npz").is_file()

    # --reuse: nothing runs again
    logs = {p: p.stat().st_mtime_ns for p in out.rglob("launch.log")}
    again = helpers.py("evaluations.compare", "--config", _config(tmp_path, data_root), "--logdir", out, "--reuse",
                       "--strict", timeout=600)
    assert again.returncode == 0, helpers.describe(again)
    assert logs == {p: p.stat().st_mtime_ns for p in out.rglob("launch.log")}


def test_failed_run_shows_in_report_and_the_rest_go_on(tmp_path, digits):
    data_root = digits(16).parent
    config = tmp_path / "broken.sh"
    config.write_text(
        f'DATA_DIR="{data_root}"\nNPROC=1\nMINUTES=0.1\nNUM_SAMPLES=20\nSAMPLE_BATCH=20\n'
        'RUNS="\n'
        "broken | flags/gans/cdcgan_digits.sh | gans | 1 | --model dcgan --image_size 17 |\n"
        "dcgan | flags/gans/dcgan_digits.sh | gans | 1 | --max_steps 100000 |\n"
        '"\n'
    )
    out = tmp_path / "cmp"
    # the untrained baselines and controllability stages are the main test's; here they only cost time
    cheap = ["--no_baseline", "--no_control"]
    proc = helpers.py("evaluations.compare", "--config", config, "--logdir", out, *cheap, timeout=900)
    assert proc.returncode == 0, helpers.describe(proc)
    rows = {r["run"]: r for r in report.read_table((out / "report.md").read_text())}
    assert any("broken" in p for p in report.check(str(out)))
    assert rows["broken"]["sampler"] == "–" and "FAILED" in md_cells(rows["broken"])
    assert math.isfinite(_number(rows["dcgan"]["FD-digits"]))
    strict = helpers.py("evaluations.compare", "--config", config, "--logdir", out, "--reuse", "--strict", *cheap,
                        timeout=900)
    assert strict.returncode == 1


def md_cells(row):
    return " ".join(row.values())


def test_compare_bad_input():
    proc = helpers.py("evaluations.compare", "--config", "flags/compare/nope.sh")
    assert proc.returncode == 2 and helpers.error_lines(proc) == [
        "evaluations.compare: error: flags/compare/nope.sh: no such comparison config"]
    proc = helpers.py("evaluations.compare", "--only", "nobody")
    assert proc.returncode == 2 and "--only: no run named nobody" in proc.stderr
