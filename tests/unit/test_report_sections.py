"""The report as one list of sections (evaluations.report_render): markdown and HTML say the same
things in the same order; what it reads from runs instead of knowing families (issue 38, C9):
loss keys from the run's options.json, sampler names and NFE from the samples' info json, an
unknown NFE shown as such; and the `--check` tool's command line."""

import json
import os
import re
import subprocess
import sys

import numpy as np

from evaluations import report, report_figures
from trainkit import npz

META = {"machine": "x", "cpu_cores": 2, "device": "CPU only", "torch": "t", "python": "p", "launcher": "local x 1",
        "feature_network": "f", "num_samples": 40, "minutes": 1, "config": "c", "wall_seconds": 60}


def _progress(path, rows):
    keys = sorted({k for r in rows for k in r})
    path.write_text(",".join(keys) + "\n" + "".join(",".join(str(r.get(k, "")) for k in keys) + "\n" for r in rows))
    return str(path)


def _results(tmp_path, info=None, nfe=10):
    """Two runs: 'alpha' with samples (written with `info` when given), a progress log and quality
    probes; 'beta' a row without samples."""
    rng = np.random.default_rng(0)
    out = []
    for name in ("alpha", "beta"):
        d = tmp_path / name / "train"
        d.mkdir(parents=True)
        row = {"sampler": "fast-4", "fd_digits": 50.0 if name == "alpha" else 80.0, "fd_std": 2.0, "precision": 0.9,
               "precision_std": 0.01, "recall": 0.8, "recall_std": 0.01, "sample_s_per_image": 0.01,
               "nfe": nfe, "fd_untrained": 900.0, "num_samples": 40, "kid": 0.1, "is": 2.0, "class_accuracy": 0.5,
               "copies": 0.0}
        if name == "alpha":
            images = rng.integers(0, 255, (40, 8, 8, 1), dtype=np.uint8)
            row["npz"] = npz.write_samples(str(tmp_path / name), images, info=info)
        logged = [{"step": i, "errD": 1.0 + 0.01 * i, "errG": 2.0, "loss_q1": 0.3, "weird": 0.5, "d_acc": 0.7}
                  for i in range(10)]
        quality = [{"step": 10 * (i + 1), "samples": 320 * (i + 1), "train_seconds": 25.0 * (i + 1),
                    "probe_seconds": 0.1, "fd": fd, "fd_std": 1.0, "num_samples": 40}
                   for i, fd in enumerate((200.0, 100.0))]
        out.append({"name": name, "dir": str(tmp_path / name), "rows": [row], "failed": [], "quality": quality,
                    "progress": _progress(d / "progress.csv", logged), "steps": 10, "train_seconds": 5.0,
                    "train_img_per_s": 100.0, "parameters": 1000})
    return out


def test_markdown_and_html_hold_the_same_sections_and_notes_in_the_same_order(tmp_path):
    paths = report.write(str(tmp_path), _results(tmp_path), META)
    md, page = open(paths["md"]).read(), open(paths["html"]).read()
    md_headings = re.findall(r"^#{1,3} (.+)$", md, re.M)
    html_headings = [h.replace("&#x27;", "'") for h in re.findall(r"<h[1-3]>(.*?)</h[1-3]>", page)]
    assert md_headings == html_headings and "Training stability" in md_headings
    # every note paragraph of the markdown is a note paragraph of the page (the tables' intros too)
    notes = [line for line in md.splitlines() if line and not line.startswith(("#", "|", "!", "-", "**"))]
    page_notes = [re.sub("<[^>]+>", "", p) for p in re.findall(r"<p class='note'>(.*?)</p>", page)]
    import html as h
    assert notes and [n.replace("**", "") for n in notes] == [h.unescape(p) for p in page_notes]


def test_the_loss_panel_draws_the_keys_the_task_declared_in_options_json(tmp_path):
    r = _results(tmp_path)[0]
    rows = [{"step": 0, "errD": 1.0, "errG": 2.0, "loss_q1": 0.3, "weird": 0.5, "d_acc": 0.7}]
    # an old run directory (no declaration): the rule from before, names like a loss
    assert report_figures.loss_keys(r, rows) == ["errD", "errG"]
    assert report_figures.loss_keys(dict(r, loss_keys=None), rows) == ["errD", "errG"]  # compare's "not declared"
    options = os.path.join(os.path.dirname(r["progress"]), "options.json")
    with open(options, "w") as f:
        json.dump({"lr": 0.1, "loss_keys": ["weird", "missing", "errD"], "discriminator_keys": ["errD", "d_acc"]}, f)
    assert report_figures.loss_keys(r, rows) == ["weird", "errD"]  # declared order, logged keys only
    # compare's copy of the declaration in the result wins over the file
    assert report_figures.loss_keys(dict(r, loss_keys=["errG"], discriminator_keys=["errD"]), rows) == ["errG"]
    assert report_figures.loss_figure([r], str(tmp_path / "losses.png"))


def test_method_notes_name_the_sampler_its_info_json_records(tmp_path):
    info = {"sampler": "toy-euler", "network_evaluations": 7, "num_samples": 40, "seed": 0}
    md = open(report.write(str(tmp_path), _results(tmp_path, info=info), META)["md"]).read()
    assert "cheapest sampler (alpha: toy-euler, 7 network evaluations per image)" in md
    for family in ("gans", "DDGAN", "improved diffusion"):
        assert family not in md


def test_an_unknown_nfe_is_shown_as_unknown_left_out_of_the_cost_figure_and_passes_the_check(tmp_path):
    paths = report.write(str(tmp_path), _results(tmp_path, nfe=None), META)
    rows = {r["run"]: r for r in report.read_table(open(paths["md"]).read())}
    assert rows["alpha"]["NFE/img"] == rows["beta"]["NFE/img"] == "unknown"
    assert not os.path.exists(tmp_path / "figures" / "fd_vs_cost.png")  # no row has a known cost
    assert report.check(str(tmp_path), ["alpha", "beta"]) == []


def test_the_check_command_exits_1_naming_the_missing_run_and_0_when_complete(tmp_path):
    report.write(str(tmp_path), _results(tmp_path), META)
    cmd = [sys.executable, "-m", "evaluations.report", "--check", str(tmp_path), "--runs"]
    bad = subprocess.run(cmd + ["alpha,zeta"], capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.strip() == "evaluations.report: no row for run zeta"
    good = subprocess.run(cmd + ["alpha,beta"], capture_output=True, text=True)
    assert good.returncode == 0, good.stderr
    assert good.stdout.strip() == f"{tmp_path}/report.md: every row complete, every image present"
