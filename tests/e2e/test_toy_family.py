"""Issue 38, item 1's acceptance: a fourth family, added here and nowhere in evaluations/, goes
through the main job and its report. tests/_toyfamily/toyfam is the least a family declares (a
Task with its loss keys, build_task, one draw, train and sample entry points writing through
trainkit; the sampler records its network evaluations in the samples' info json) and
toyfam_digits.sh its flag file; the package is found through PYTHONPATH only."""

import json
import os

import pytest

import helpers
from evaluations import report

TOY = helpers.ROOT / "tests" / "_toyfamily"


def _number(cell):
    return float(cell.replace(",", ""))


@pytest.mark.slow
def test_a_new_family_goes_through_the_main_job_and_the_report(tmp_path, digits):
    config = tmp_path / "toy.sh"
    config.write_text(
        f'DATA_DIR="{digits(16).parent}"\nNPROC=1\nMINUTES=1\nTRAIN_FRACTION=0.15\nNUM_SAMPLES=60\n'
        f'SAMPLE_BATCH=30\nPROBE_POINTS=0\n'
        f'RUNS="\ntoy | {TOY / "toyfam_digits.sh"} | toyfam | 1 | --max_steps 100000 |\n"\n')
    out = tmp_path / "cmp"
    env = {"PYTHONPATH": os.pathsep.join([str(TOY), str(helpers.ROOT)])}  # toyfam: importable, nothing more
    proc = helpers.py("evaluations.compare", "--config", config, "--logdir", out, "--strict",
                      env=helpers.test_env(**env))
    assert proc.returncode == 0, helpers.describe(proc)
    md = (out / "report.md").read_text()
    (row,) = [r for r in report.read_table(md) if r["run"] == "toy"]
    assert row["sampler"] == "default" and _number(row["samples"]) == 60 and _number(row["steps"]) > 1
    assert _number(row["NFE/img"]) == 1  # the sampler's own record (samples_*.json), not a table in evaluations/
    info = json.loads(next((out / "toy" / "samples-default").glob("samples_*.json")).read_text())
    assert info["sampler"] == "linear generator" and info["num_samples"] == 60
    # judged like every family: the trained rows and the one-step baseline (a linear generator
    # learns little more than the mean digit: no claim on which is better)
    assert _number(row["FD-digits"]) > 0 and _number(row["FD untrained"]) > 0
    assert row["FD-digits"] != row["FD untrained"]
    options = json.loads((out / "toy" / "train" / "options.json").read_text())
    assert options["loss_keys"] == ["loss"]  # what the Task declared, for the report's loss curves
    assert report.check(str(out), ["toy"]) == []
