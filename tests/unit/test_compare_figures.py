"""The report's guidance and post-hoc EMA figures (issue 41, item 6) from fabricated results, and
the config's POSTHOC_EMA / guidance rows as compare reads them; one slow test runs a real sweep."""

import json

import numpy as np
import pytest
from PIL import Image

import helpers
from evaluations import compare, report

META = {"machine": "x", "cpu_cores": 2, "device": "CPU only", "torch": "t", "python": "p", "launcher": "local x 1",
        "feature_network": "f", "num_samples": 40, "minutes": 1, "config": "c", "wall_seconds": 60}


def _row(sampler, fd, p, r, acc=None, **extra):
    row = {"sampler": sampler, "fd_digits": fd, "fd_std": 1.0, "precision": p, "precision_std": 0.01, "recall": r,
           "recall_std": 0.01, "num_samples": 40, "nfe": 10, "sample_s_per_image": 0.01, **extra}
    if acc is not None:
        row["class_accuracy"] = acc
    return row


def _results(tmp_path):
    """A guided run (w = 1, 2, 4 of one sampler, w = 4 of another) with a post-hoc sweep, and an
    unguided run with a sweep."""
    curve = "--sampler dpmpp_2m --steps 10"
    guided = [_row("w1", 20.0, 0.70, 0.90, 0.80, guidance_scale=1.0, guidance_curve=curve),
              _row("w2", 15.0, 0.85, 0.80, 0.95, guidance_scale=2.0, guidance_curve=curve),
              _row("w4", 18.0, 0.95, 0.60, 0.99, guidance_scale=4.0, guidance_curve=curve),
              _row("sde-w4", 16.0, 0.93, 0.65, 0.99, guidance_scale=4.0, guidance_curve="--sampler sde"),
              _row("phema0.1-w2", 14.0, 0.86, 0.81, 0.96, guidance_scale=2.0, sigma_rel=0.1,
                   guidance_curve="σ_rel 0.1 " + curve)]
    sweep = {"sampler": "w2", "samples": 30, "best": 0.1,
             "rows": [{"sigma_rel": s, "fd_digits": fd, "fd_std": 2.0, "precision": p, "recall": r,
                       "class_accuracy": 0.9, "num_samples": 30}
                      for s, fd, p, r in ((0.05, 30.0, 0.8, 0.7), (0.1, 25.0, 0.82, 0.72), (0.2, 40.0, 0.7, 0.75))]}
    plain_sweep = {"sampler": "default", "samples": 30, "best": 0.05,
                   "rows": [{"sigma_rel": s, "fd_digits": fd, "fd_std": 2.0, "precision": 0.6, "recall": 0.6,
                             "num_samples": 30} for s, fd in ((0.05, 40.0), (0.15, 44.0))]}
    out = []
    for name, rows, sweep in (("cond", guided, sweep),
                              ("plain", [_row("default", 45.0, 0.6, 0.6), _row("phema0.05", 41.0, 0.62, 0.6,
                                                                                sigma_rel=0.05)], plain_sweep)):
        d = tmp_path / name
        d.mkdir()
        out.append({"name": name, "package": "x", "dir": str(d), "rows": rows, "failed": [], "posthoc": sweep})
    return out


def test_guidance_curves_are_the_rows_that_differ_in_the_scale_only(tmp_path):
    curves = report.guidance_curves(_results(tmp_path))
    # one curve: w1, w2, w4 of one sampler; sde-w4 and the post-hoc row have no second scale
    assert [(label, [x for x, _ in points]) for label, points in curves] == [("cond (w1, w2, w4)", [1.0, 2.0, 4.0])]


def test_the_report_draws_quality_against_the_guidance_scale_and_sigma_rel(tmp_path):
    results = _results(tmp_path)
    paths = report.write(str(tmp_path), results, META)
    md = open(paths["md"]).read()
    html = open(paths["html"]).read()
    guidance = md[md.index("## Classifier-free guidance"):]
    assert "![guidance](figures/guidance.png)" in guidance
    assert Image.open(tmp_path / "figures" / "guidance.png").width > 900  # four panels: FD, P, R, class accuracy
    posthoc = md[md.index("## Post-hoc EMA"):]
    assert "![post-hoc EMA](figures/posthoc_ema.png)" in posthoc
    assert Image.open(tmp_path / "figures" / "posthoc_ema.png").width > 900
    # the sentence names the chosen σ_rel, every σ_rel tried with its FD, and the fixed-rate row it beat
    assert ("cond: the post-hoc EMA sweep (30 samples each, sampler w2; σ_rel (FD-digits) 0.05 (30), 0.1 (25), "
            "0.2 (40)) chose σ_rel 0.1, used for the full sampling: row phema0.1-w2 scores FD-digits 14 ± 1 against "
            "15 ± 1 for the training's own sampling weights (row w2).") in posthoc
    assert "plain: the post-hoc EMA sweep" in posthoc and "chose σ_rel 0.05" in posthoc
    assert "<h2>Classifier-free guidance</h2>" in html and "<h2>Post-hoc EMA</h2>" in html
    # every image the report names exists (the fabricated rows lack other columns)
    assert [p for p in report.check(str(tmp_path)) if p.startswith("image")] == []


def test_without_guided_rows_or_sweeps_there_are_no_such_figures(tmp_path):
    results = _results(tmp_path)
    for r in results:
        r.pop("posthoc")
        for row in r["rows"]:
            row.pop("guidance_scale", None)
    md = open(report.write(str(tmp_path / "none"), results, META)["md"]).read()
    assert "## Classifier-free guidance" not in md and "## Post-hoc EMA" not in md
    # a sweep that could not run says why
    results[0]["posthoc"] = {"sampler": "w2", "samples": 30, "rows": [], "note": "no post-hoc EMA sweep: no snapshot"}
    md = open(report.write(str(tmp_path / "note"), results, META)["md"]).read()
    assert "- cond: no post-hoc EMA sweep: no snapshot." in md


def _config(tmp_path, posthoc):
    path = tmp_path / "c.sh"
    path.write_text('DATA_DIR=data/digits16\nRUNS="\na | flags/gans/dcgan_digits.sh | gans | 1 | | '
                    's1: --x 1 --guidance_scale 2 ; s2: --guidance_scale=3 --x 1\n'
                    'b | flags/gans/dcgan_digits.sh | gans | 1 | |\n"\n'
                    f'PROBE_SAMPLES=150\nPOSTHOC_EMA="\n{posthoc}\n"\n')
    return str(path)


def test_the_config_gives_a_run_its_sweep_and_bad_lines_are_one_line(tmp_path):
    config = compare.read_config(_config(tmp_path, "a | 0.05,0.1 | s2\nb | 0.2"))
    runs = {r["name"]: r for r in config["runs"]}
    assert runs["a"]["posthoc"] == {"sigma_rels": [0.05, 0.1], "sampler": "s2", "samples": 150}
    assert runs["b"]["posthoc"]["sampler"] == "default"
    # + the reconstruction, one sampling per σ_rel, the chosen one's full sampling
    assert compare.planned_stages(runs["a"], baseline=False, control=False) == 1 + 2 + (1 + 2 + 1)
    assert [compare.guidance_scale(s["flags"], config["guidance_flag"]) for s in runs["a"]["samplers"]] == [2.0, 3.0]
    assert compare.drop_flag(["--x", "1", "--guidance_scale", "2"], "--guidance_scale") == ["--x", "1"]
    for bad, says in (("c | 0.1", "names run 'c'"), ("a | 0.3", "(0, 0.2887)"), ("a | x", "not a comma list"),
                      ("a | 0.1 | s9", "has no sampler 's9'")):
        with pytest.raises(compare.UserError, match=".*c.sh: POSTHOC_EMA.*") as e:
            compare.read_config(_config(tmp_path, bad))
        assert says in str(e.value)


@pytest.mark.slow
def test_a_sweep_reconstructs_samples_judges_and_the_best_sigma_rel_gets_a_full_row(tmp_path, digits):
    """A DCGAN trained with --ema_std: the sweep's σ_rel each sampled and judged, the lowest FD's
    average sampled in full as row phema<σ>, from the reconstructed folder."""
    data_root = digits(16).parent
    config = tmp_path / "c.sh"
    config.write_text(
        f'DATA_DIR="{data_root}"\nDATA_PREP=""\nNPROC=1\nMINUTES=5\nTRAIN_FRACTION=0.5\nNUM_SAMPLES=40\n'
        "SAMPLE_BATCH=40\nPROBE_POINTS=0\nPOSTHOC_SAMPLES=30\n"
        'RUNS="\ndcgan | flags/gans/dcgan_digits.sh | gans | 1 | --max_steps 30 --ema_kimg 0.1 --ema_std 0.05,0.1 '
        '--ema_snapshot_interval 10 |\n"\nPOSTHOC_EMA="\ndcgan | 0.03,0.15\n"\n')
    out = tmp_path / "cmp"
    proc = helpers.py("evaluations.compare", "--config", config, "--logdir", out, "--no_baseline", "--no_control",
                      "--strict", timeout=600)
    assert proc.returncode == 0, helpers.describe(proc)
    md = (out / "report.md").read_text()
    rows = {r["sampler"]: r for r in report.read_table(md) if r["run"] == "dcgan"}
    (label,) = [s for s in rows if s.startswith("phema")]
    fds = {}
    for sigma in ("0.03", "0.15"):
        m = json.loads(next((out / "dcgan" / "posthoc_ema" / f"samples-{sigma}").glob("*.metrics.json")).read_text())
        assert m["num_samples"] == 30
        fds[sigma] = m["fd_digits"]
    best = min(fds, key=fds.get)
    assert label == f"phema{best}" and float(rows[label]["samples"]) == 40
    log = (out / "dcgan" / f"samples-{label}" / "launch.log").read_text()
    assert f"posthoc_ema/averages/sigma_rel_{best}" in log.splitlines()[0]
    # the two σ_rel give other generators: their samples differ
    a, b = (np.load(next((out / "dcgan" / "posthoc_ema" / f"samples-{s}").glob("samples_*.npz")))["arr_0"]
            for s in ("0.03", "0.15"))
    assert not np.array_equal(a, b)
    assert f"chose σ_rel {best}, used for the full sampling" in md
    assert (out / "figures" / "posthoc_ema.png").is_file()


def test_the_main_job_sweeps_every_run_that_tracks_profiles_and_guides_a_conditional_diffusion_run():
    """flags/compare/digits.sh (issue 40, item 5): a run trained with --ema_std snapshots its
    profiles and has a post-hoc sweep (else its profiles are never used); the cDDPM run is
    trained with a null class and sampled at two guidance scales (the guidance figure's curve)."""
    config = compare.read_config("flags/compare/digits.sh")
    tracking = [r for r in config["runs"] if "--ema_std" in r["train_flags"]]
    assert {r["name"] for r in tracking} >= {"dcgan", "cdcgan", "ddgan", "improved_diffusion"}
    for r in tracking:
        flags = r["train_flags"]
        assert int(flags[flags.index("--ema_snapshot_interval") + 1]) > 0 and r.get("posthoc"), r["name"]
    (cddpm,) = [r for r in config["runs"] if r["name"] == "cddpm"]
    scales = {compare.guidance_scale(s["flags"], config["guidance_flag"]) for s in cddpm["samplers"]}
    assert len(scales) == 2 and max(scales) > 1
    assert "--class_dropout_prob 0.1" in open(cddpm["flag_file"]).read()
