"""The report's verdict comes from the numbers: swap them and it swaps; collapse and a
discriminator at chance are named. Fabricated results, no training."""

import math

import numpy as np
import pytest
from PIL import Image

from evaluations import report, verdict
from trainkit import npz


def _progress(path, rows):
    keys = sorted({k for r in rows for k in r})
    path.write_text(",".join(keys) + "\n" + "".join(",".join(str(r.get(k, "")) for k in keys) + "\n" for r in rows))
    return str(path)


def _results(tmp_path, a, b):
    """Two runs, 'alpha' with the numbers a and 'beta' with b. An adversarial run logs its D loss
    under m["d_key"] (gans' loss_d, DDGAN's errD), with m["loss"] (bce or hinge), and D's
    accuracy under d_acc: m["d_accs"] per log row, else m["d_acc"] in every row; m["d_losses"]
    gives the D loss of each log row, else every row has m["d_loss"] (plus a little noise)."""
    rng = np.random.default_rng(0)
    out = []
    for name, m in (("alpha", a), ("beta", b)):
        d = tmp_path / name
        d.mkdir(exist_ok=True)
        if m.get("d_loss") is not None:  # adversarial: D and G losses
            d_key, g_key = {"errD": ("errD", "errG")}.get(m.get("d_key"), ("loss_d", "loss_g"))
            d_losses = m.get("d_losses") or [m["d_loss"] + rng.normal(0, 0.001) for _ in range(40)]
            d_accs = m.get("d_accs") or [m["d_acc"]] * len(d_losses)
            rows = [{"step": i, d_key: d_loss, g_key: 1 + rng.normal(0, m["spread"]), "d_acc": acc}
                    for i, (d_loss, acc) in enumerate(zip(d_losses, d_accs))]
        else:
            rows = [{"step": i, "loss": 1 + rng.normal(0, m["spread"])} for i in range(40)]
        row = {"sampler": "default", "fd_digits": m["fd"], "fd_std": 2.0, "precision": m["p"], "precision_std": 0.01,
               "recall": m["r"], "recall_std": 0.01, "sample_s_per_image": m["s"], "nfe": m["nfe"],
               "fd_untrained": m.get("untrained", 1500.0), "num_samples": 300}
        quality = [{"step": 10 * (i + 1), "samples": 320 * (i + 1), "train_seconds": 25.0 * (i + 1),
                    "probe_seconds": 0.1, "fd": fd, "fd_std": std, "num_samples": 200}
                   for i, (fd, std) in enumerate(m.get("quality", ()))]
        out.append({"name": name, "package": "gans", "dir": str(d), "rows": [row], "failed": [],
                    "progress": _progress(d / "progress.csv", rows), "train_seconds": 100.0,
                    "loss": m.get("loss", "bce"), "quality": quality})
    return out


GOOD = {"fd": 50.0, "p": 0.9, "r": 0.8, "s": 0.001, "nfe": 1, "spread": 0.01, "d_loss": 1.0, "d_acc": 0.8,
        "quality": [(200, 5), (90, 4), (51, 2), (50, 2)]}  # level at the end
BAD = {"fd": 400.0, "p": 0.5, "r": 0.2, "s": 0.1, "nfe": 100, "spread": 0.2, "d_loss": 2 * math.log(2), "d_acc": 0.5,
       "quality": [(300, 5), (150, 5), (200, 5), (400, 5)]}  # worse at the end, past its best


def _find(findings, title):
    return next(f for f in findings if f.startswith(f"**{title}**"))


def test_verdict_follows_the_numbers_and_swaps_with_them(tmp_path):
    first = verdict.verdict(_results(tmp_path, GOOD, BAD))
    assert "best is alpha" in _find(first, "Fidelity") and "beyond the error bars" in _find(first, "Fidelity")
    assert "best is alpha" in _find(first, "Diversity")
    assert "best is alpha" in _find(first, "Both at once")
    assert "fastest is alpha" in _find(first, "Sampling speed") and "also the best" in _find(first, "Sampling speed")
    stability = _find(first, "Training stability")
    # the points go to the stability table, the sentence groups the runs by how they end
    table = _stability(_results(tmp_path, GOOD, BAD))
    assert table["alpha"][:5] == ["200 ± 5 at 25 s", "90 ± 4 at 50 s", "51 ± 2 at 75 s", "50 ± 2 at 100 s", "level"]
    assert table["beta"][:5] == ["300 ± 5 at 25 s", "150 ± 5 at 50 s", "200 ± 5 at 75 s", "400 ± 5 at 100 s",
                                 "rising, past its best"]
    assert table["alpha"][5] == "0.800" and table["beta"][5] == "0.500"
    assert "level at the end: alpha; rising at the end: beta; past its best point: beta" in stability
    assert "steadiest" not in stability
    assert _at_chance(first) == {"beta"}  # D's accuracy 0.5
    assert "beta (recall 0.200)" in _find(first, "Collapse") and "alpha" not in _find(first, "Collapse")
    assert "alpha 30.0x" in _find(first, "Training") and "beta moved less than 5x" in _find(first, "Training")

    swapped = verdict.verdict(_results(tmp_path, BAD, GOOD))
    for title in ("Fidelity", "Diversity", "Both at once"):
        assert "best is beta" in _find(swapped, title)
    assert "fastest is beta" in _find(swapped, "Sampling speed")
    assert _stability(_results(tmp_path, BAD, GOOD))["beta"][:5] == ["200 ± 5 at 25 s", "90 ± 4 at 50 s",
                                                                     "51 ± 2 at 75 s", "50 ± 2 at 100 s", "level"]
    swapped_stability = _find(swapped, "Training stability")
    assert "level at the end: beta" in swapped_stability and "rising at the end: alpha" in swapped_stability
    assert "alpha (recall 0.200)" in _find(swapped, "Collapse")
    assert _at_chance(swapped) == {"alpha"}
    assert "beta 30.0x" in _find(swapped, "Training") and "alpha moved less than 5x" in _find(swapped, "Training")
    assert "also the best" in _find(swapped, "Sampling speed")


def _stability(results):
    """{run: its cells of the stability table after the name}, checking the header."""
    header, rows = verdict.stability_table(results)
    assert header == ["run", "point 1", "point 2", "point 3", "point 4", "at the end", "D accuracy"]
    return {row[0]: row[1:] for row in rows}


def _at_chance(findings):
    """The run names the stability sentence says are at chance."""
    text = _find(findings, "Training stability")
    if " at chance (within" not in text:
        return set()
    names = text.split(" at chance (within")[0].rsplit(". ", 1)[1]
    return {n for n in ("alpha", "beta") if n in names}


def test_ddgans_d_accuracy_is_judged_like_the_gans(tmp_path):
    """DDGAN logs errD / errG where gans log loss_d / loss_g; both log D's accuracy as d_acc."""
    ddgan_bad = dict(BAD, d_key="errD")
    assert _at_chance(verdict.verdict(_results(tmp_path, GOOD, ddgan_bad))) == {"beta"}
    assert _at_chance(verdict.verdict(_results(tmp_path, ddgan_bad, GOOD))) == {"alpha"}


def test_at_chance_is_read_from_ds_accuracy_not_its_loss(tmp_path):
    """A skilled D (72% right) whose logistic loss is exactly 2 ln 2 is not at chance; a D with
    noisy logits and no skill, whose loss is above 2 ln 2, is; the same for a hinge D at 2."""
    skilled_at_2ln2 = dict(BAD, d_acc=0.72)
    noisy_no_skill = dict(BAD, d_loss=2.1, d_acc=0.5)
    hinge_at_2 = dict(BAD, loss="hinge", d_loss=2.0, d_acc=0.7)
    findings = verdict.verdict(_results(tmp_path, skilled_at_2ln2, noisy_no_skill))
    assert _at_chance(findings) == {"beta"}
    assert "alpha 0.720, beta 0.500" in _find(findings, "Training stability")
    assert "chance 0.5" in _find(findings, "Training stability")
    assert _at_chance(verdict.verdict(_results(tmp_path, GOOD, hinge_at_2))) == set()


@pytest.mark.parametrize("accuracy,at_chance", [(0.549, True), (0.451, True), (0.551, False), (0.449, False)])
def test_at_chance_means_an_accuracy_within_the_tolerance_of_one_half(tmp_path, accuracy, at_chance):
    assert verdict.CHANCE_ACCURACY_TOLERANCE == 0.05
    near = dict(BAD, d_acc=accuracy)
    assert _at_chance(verdict.verdict(_results(tmp_path, GOOD, near))) == ({"beta"} if at_chance else set())


def test_at_chance_is_judged_on_the_second_half_of_the_rows(tmp_path):
    """40 rows: the first half is not judged."""
    late = [0.9] * 20 + [0.5] * 20
    early = [0.5] * 20 + [0.9] * 20
    assert _at_chance(verdict.verdict(_results(tmp_path, GOOD, dict(BAD, d_accs=late)))) == {"beta"}
    assert _at_chance(verdict.verdict(_results(tmp_path, GOOD, dict(BAD, d_accs=early)))) == set()


@pytest.mark.parametrize("recall,collapsed", [(0.299, True), (0.3, False), (0.301, False)])
def test_collapse_is_recall_below_the_line(tmp_path, recall, collapsed):
    assert verdict.COLLAPSE_RECALL == 0.3
    text = _find(verdict.verdict(_results(tmp_path, GOOD, dict(GOOD, r=recall))), "Collapse")
    assert ("beta (recall" in text) == collapsed and "alpha (recall" not in text


@pytest.mark.parametrize("untrained,weak", [(4.9 * 50.0, True), (5.1 * 50.0, False)])
def test_a_run_that_moved_less_than_five_times_is_named(tmp_path, untrained, weak):
    text = _find(verdict.verdict(_results(tmp_path, GOOD, dict(GOOD, untrained=untrained))), "Training")
    assert ("beta moved less than 5x" in text) == weak and "alpha moved" not in text
    assert f"beta {untrained / 50.0:.1f}x" in text


def test_overlapping_error_bars_are_called_a_tie(tmp_path):
    close = dict(GOOD, fd=52.0, p=0.905, r=0.79)
    findings = verdict.verdict(_results(tmp_path, GOOD, close))
    assert "overlaps beta" in _find(findings, "Both at once")  # |50 - 52| <= 2 + 2
    assert "overlaps" in _find(findings, "Fidelity") and "overlaps" in _find(findings, "Diversity")
    assert "none; every run's recall" in _find(findings, "Collapse")
    assert "No discriminator is at chance" in _find(findings, "Training stability")


def test_the_fastest_row_within_the_best_rows_error_bar_is_called_a_tie(tmp_path):
    """The speed sentence uses the FD sentence's tie rule: a fast row whose FD error bar
    overlaps the best one's is not 'slower and worse'."""
    fast_close = dict(GOOD, fd=52.0, s=0.0001)  # |50 - 52| <= 2 + 2, ten times faster
    text = _find(verdict.verdict(_results(tmp_path, GOOD, fast_close)), "Sampling speed")
    assert "fastest is beta" in text and "its error bar overlaps the best on FD-digits, alpha" in text
    assert "at 1 network evaluation," in text  # singular for a one-step generator
    text = _find(verdict.verdict(_results(tmp_path, GOOD, dict(BAD, s=0.0001))), "Sampling speed")
    assert "at 100 network evaluations," in text
    fast_far = dict(GOOD, fd=60.0, s=0.0001)
    text = _find(verdict.verdict(_results(tmp_path, GOOD, fast_far)), "Sampling speed")
    assert "the best on FD-digits, alpha (50 ± 2), takes" in text and "overlaps" not in text


def test_training_divides_the_untrained_fd_by_the_same_samplers_trained_fd(tmp_path):
    """The baseline is sampled with the run's cheapest sampler; the ratio uses that sampler's
    trained row, not the best row of another sampler."""
    results = _results(tmp_path, GOOD, GOOD)
    best = results[0]["rows"][0]
    best.update(sampler="full", untrained_sampler="fast", fd_untrained=1000.0, fd_digits=50.0)
    results[0]["rows"].append(dict(best, sampler="fast", fd_digits=100.0))
    text = _find(verdict.verdict(results), "Training")
    assert "alpha (fast) 10.0x" in text and "20.0x" not in text


def test_rows_judged_on_different_sample_counts_are_not_ranked(tmp_path):
    results = _results(tmp_path, GOOD, BAD)
    results[1]["rows"][0]["num_samples"] = 250
    findings = verdict.verdict(results)
    assert "different sample counts (250, 300)" in _find(findings, "Not ranked")
    assert not [f for f in findings if f.startswith(("**Fidelity", "**Diversity", "**Both", "**Sampling"))]
    assert _find(findings, "Collapse")  # each row's own judgement stays


@pytest.mark.parametrize("last,says", [
    ((48.0, 1.0), "level at the end"),       # |48 - 50| <= 1 + 1
    ((47.9, 1.0), "still improving"),       # 2.1 beyond 1 + 1
    ((52.1, 1.0), "worse at the end"),
])
def test_the_trend_is_the_last_two_points_against_their_error_bars(last, says):
    quality = [{"fd": 90.0, "fd_std": 1.0, "train_seconds": 10.0}, {"fd": 50.0, "fd_std": 1.0, "train_seconds": 20.0},
               {"fd": last[0], "fd_std": last[1], "train_seconds": 30.0}]
    text = verdict.trend(quality)
    assert text.startswith(says) and "past its best" not in text


def test_a_run_that_got_worse_than_its_best_point_says_so():
    quality = [{"fd": 40.0, "fd_std": 1.0, "train_seconds": 10.0}, {"fd": 60.0, "fd_std": 1.0, "train_seconds": 20.0},
               {"fd": 61.0, "fd_std": 1.0, "train_seconds": 30.0}]
    assert verdict.trend(quality) == ("level at the end (its last two points within their error bars), "
                                      "past its best (40 ± 1 at 10 s)")
    assert verdict.trend(quality[:1]) == "one point only"


def test_without_a_quality_probe_the_stability_sentence_says_so(tmp_path):
    text = _find(verdict.verdict(_results(tmp_path, dict(GOOD, quality=()), dict(BAD, quality=()))),
                 "Training stability")
    assert "no run measured its quality during training" in text and "beta is at chance" in text


def test_a_discriminator_at_chance_is_not_said_to_give_no_signal(tmp_path):
    """At D = 1/2 the non-saturating G loss still has a gradient: the sentence says what the
    numbers show, the chance value, and nothing about the generator's signal."""
    text = _find(verdict.verdict(_results(tmp_path, GOOD, BAD)), "Training stability")
    assert "cannot tell real from generated" in text and "no signal" not in text


def test_a_collapsed_run_is_named_from_real_metrics(tmp_path):
    """All samples one image: recall (and the verdict) say so."""
    from evaluations import digits_features, metrics

    real, _ = digits_features.digits_images("train", 16)
    feats = digits_features.features(real)
    same = digits_features.features(np.repeat(real[:1], 300, axis=0))
    precision, recall = metrics.precision_recall(feats, same)
    assert recall < 0.01
    results = _results(tmp_path, GOOD, dict(GOOD, r=recall))
    assert "beta (recall" in _find(verdict.verdict(results), "Collapse")


def test_a_class_conditional_run_collapsed_within_a_class_is_named(tmp_path):
    """A class-conditional run whose overall recall passes the line is named when the samples
    of one class cover little of that class's real images; the others get their minimum."""
    results = _results(tmp_path, GOOD, GOOD)
    per_class = {str(c): 0.6 for c in range(10)}
    results[0]["rows"][0].update(class_recall=dict(per_class, **{"3": 0.12}), class_recall_mean=0.55,
                                 class_recall_min=0.12, class_recall_min_class=3)
    results[1]["rows"][0].update(class_recall=per_class, class_recall_mean=0.6, class_recall_min=0.6,
                                 class_recall_min_class=0)
    text = _find(verdict.verdict(results), "Collapse")
    # overall nobody is collapsed, but the sentence must not say "none" before naming a class
    assert "no run as a whole; every run's recall is at least 0.3" in text and "none" not in text
    assert "alpha is collapsed in class 3 (recall 0.120)" in text
    assert "beta's lowest recall is 0.600 (class 0)" in text and "beta is collapsed" not in text


def test_per_class_recall_sees_one_image_per_class(tmp_path):
    """Real digits as 'samples', except that every sample of class 3 is one image: the judge's
    per-class recall is near 0 for class 3 and high for the others, while the overall recall
    stays above the collapse line; the report's column shows the minimum and its class."""
    from evaluations import compare, digits_features

    images, labels = digits_features.digits_images("train", 16)
    images = images.copy()
    threes = np.flatnonzero(labels == 3)
    images[threes] = images[threes[0]]
    path = npz.write_samples(str(tmp_path), images, labels)
    out = compare.judge(path, judging=compare.Judging(class_accuracy=False))
    assert out["recall"] > verdict.COLLAPSE_RECALL
    assert out["class_recall"]["3"] < 0.05 and out["class_recall_min_class"] == 3
    # judged at the held-out split's n (359: about 36 samples a class), whose k-NN balls are wide
    assert min(r for c, r in out["class_recall"].items() if c != "3") > 0.5
    assert out["num_samples"] == 359 and out["num_drawn"] == len(images)
    row = dict(out, sampler="default")
    assert report._class_recall_cell(row).endswith("(class 3)")


def test_report_writes_the_verdict_and_class_rows(tmp_path):
    images = np.random.default_rng(0).integers(0, 255, (40, 16, 16, 1), dtype=np.uint8)
    labels = np.arange(40) % 10
    path = npz.write_samples(str(tmp_path), images, labels)
    results = _results(tmp_path, GOOD, BAD)
    results[0]["rows"][0]["npz"] = str(path)
    meta = {"machine": "x", "cpu_cores": 2, "device": "CPU only", "torch": "t", "python": "p", "launcher": "local x 1",
            "feature_network": "f", "num_samples": 40, "minutes": 1, "config": "c", "wall_seconds": 60}
    paths = report.write(str(tmp_path), results, meta)
    md = open(paths["md"]).read()
    assert md.index("## Verdict") < md.index("## Results") and "best is alpha" in md
    assert "<b>Fidelity</b>" in open(paths["html"]).read()
    grid = Image.open(tmp_path / "figures" / "grid-alpha-default.png")
    assert grid.height == 10 * (16 + 2) * 3 + 2 * 3  # one row per class
    # quality over training: the figure, and a note that names the probe's count against the table's
    over = md[md.index("## FD-digits over training"):]
    assert "![quality over training](figures/fd_over_training.png)" in over
    assert "200 samples give a smaller FD-digits than the table's 40" in over
    assert "The probes cost alpha 0.4 s, beta 0.4 s of training time." in over
    assert Image.open(tmp_path / "figures" / "fd_over_training.png").width > 0
    no_probe = [dict(r, quality=[]) for r in results]
    md = open(report.write(str(tmp_path / "none"), no_probe, meta)["md"]).read()
    assert "over training" not in md


def test_a_folder_references_labels_come_from_openais_file_names(tmp_path):
    """CLASS_rest.png, numbered in sorted order of the class names, in the order of the
    reference's chosen images; a folder without class prefixes has no labels."""
    from evaluations import compare

    for i, name in enumerate(["cat_0.png", "ant_1.png", "cat_2.png", "bee_3.png"]):
        Image.new("L", (8, 8), color=i * 40).save(tmp_path / name)
    judging = compare.Judging(reference="train", data_train=str(tmp_path), reference_size=10)
    files = [f.split("/")[-1] for f in judging._files()]
    expected = [{"ant": 0, "bee": 1, "cat": 2}[f.split("_")[0]] for f in files]
    assert list(judging.reference_labels(8)) == expected
    plain = tmp_path / "plain"
    plain.mkdir()
    Image.new("L", (8, 8)).save(plain / "a.png")
    assert compare.Judging(reference="train", data_train=str(plain)).reference_labels(8) is None
