"""The verdict against held-out real data (issue 41): a real-data row judged like a run at the
rows' n, collapse relative to real data's recall (per class too), copies of the training set,
the resolving power of the benchmark, and a report a person reads as text. Real digits and
fabricated numbers; no training."""

import re

import numpy as np
import pytest
from PIL import Image

from evaluations import compare, digits_features, report, verdict
from trainkit import npz


def _row(**m):
    row = {"sampler": "default", "fd_digits": 50.0, "fd_std": 2.0, "precision": 0.9, "precision_std": 0.01,
           "recall": 0.8, "recall_std": 0.01, "kid": 0.01, "kid_std": 0.002, "is": 8.0, "num_samples": 359,
           "sample_s_per_image": 0.001, "nfe": 1, "fd_untrained": 1500.0}
    row.update(m)
    return row


def _run(tmp_path, name, *rows, **extra):
    d = tmp_path / name
    d.mkdir(exist_ok=True)
    return dict({"name": name, "package": "gans", "dir": str(d), "rows": list(rows), "failed": [],
                 "train_seconds": 100.0, "steps": 10, "train_img_per_s": 5.0, "parameters": 1000}, **extra)


def _real(tmp_path, **m):
    d = tmp_path / "heldout"
    d.mkdir(exist_ok=True)
    row = _row(sampler="–", fd_digits=8.4, fd_std=4.6, precision=0.914, precision_std=0.015, recall=0.926,
               recall_std=0.014, dir=str(d))
    for k in ("sample_s_per_image", "nfe", "fd_untrained"):
        del row[k]
    row.update(m)
    return {"name": compare.REAL_NAME, "description": "the digits' test split (359 images)", "dir": str(d),
            "num_heldout": 359, "rows": [row], "fd_at": {"200": [12.0, 5.0]}}


def _find(findings, title):
    return next(f for f in findings if f.startswith(f"**{title}**"))


@pytest.fixture(scope="module")
def digits_split():
    """(train images, train labels, test images, test labels) of the digits at 16 px."""
    return digits_features.digits_images("train", 16) + digits_features.digits_images("test", 16)


# --- 1. the real-data row -------------------------------------------------------------------

def test_the_real_row_is_the_held_out_split_judged_like_a_run_at_the_rows_n(tmp_path, digits_split):
    """The digits' test split (never trained on) against the train split: every figure a run gets,
    on as many images as the rows are judged on; a run's 500 samples are judged on their first 359
    (the held-out count), all 500 kept under all_samples; the probe's n gets its own FD."""
    train, train_labels, test, test_labels = digits_split
    judging = compare.Judging(class_accuracy=True)
    real = compare.judge_real(judging, 16, 200, str(tmp_path / "heldout"), probe_samples=100)
    row = real["rows"][0]
    assert real["num_heldout"] == len(test) == 359 and row["num_samples"] == 200
    assert "test split" in real["description"] and "never trained on" in real["description"]
    for key in ("fd_digits", "fd_std", "precision", "precision_std", "recall", "recall_std", "kid", "kid_std", "is",
                "class_accuracy", "class_recall_mean", "copies"):
        assert np.isfinite(row[key]), key
    assert row["precision"] > 0.8 and row["recall"] > 0.8 and row["class_accuracy"] > 0.9
    assert set(row["class_recall"]) == {str(c) for c in range(10)}
    fd, std = real["fd_at"]["100"]  # the quality probe's n: the band of the "over training" figure
    assert np.isfinite(fd) and std > 0
    # a run's samples: judged on the held-out count, not on all it drew
    rng = np.random.default_rng(0)
    path = npz.write_samples(str(tmp_path), train[rng.permutation(len(train))[:500]])
    out = compare.judge(path, judging=compare.Judging(class_accuracy=False))
    assert out["num_samples"] == 359 and out["num_drawn"] == 500 and out["all_samples"]["num_samples"] == 500


def test_the_verdict_says_which_rows_are_indistinguishable_from_held_out_real_data(tmp_path):
    near = _row(fd_digits=11.0, fd_std=3.0, precision=0.7, precision_std=0.02, recall=0.93, recall_std=0.01)
    far = _row(fd_digits=60.0, fd_std=3.0, precision=0.92, precision_std=0.01, recall=0.5, recall_std=0.02)
    results = [_run(tmp_path, "near", near), _run(tmp_path, "far", far)]
    text = _find(verdict.verdict(results, real=_real(tmp_path)), "Held-out real data")
    assert "FD-digits 8.4 ± 4.6, precision 0.914 ± 0.015, recall 0.926 ± 0.014" in text
    assert ("Indistinguishable from held-out real data at n = 359 (error bars overlapping its own): "
            "on FD-digits near; on precision far; on recall near; on KID near, far.") in text
    # another n is not compared with it
    results[1]["rows"][0]["num_samples"] = 500
    text = _find(verdict.verdict(results, real=_real(tmp_path)), "Held-out real data")
    assert "on precision none" in text and "Not compared with it (judged on another n): far." in text


def test_the_fd_over_training_figure_draws_the_real_row_as_a_band(tmp_path, monkeypatch):
    import matplotlib.axes

    spans = []
    draw = matplotlib.axes.Axes.axhspan
    monkeypatch.setattr(matplotlib.axes.Axes, "axhspan", lambda ax, lo, hi, **kw: spans.append((lo, hi)) or draw(
        ax, lo, hi, **kw))
    quality = [{"step": 10, "samples": 100, "train_seconds": 10.0, "probe_seconds": 0.1, "fd": 90.0, "fd_std": 5.0,
                "num_samples": 200}, {"step": 20, "samples": 200, "train_seconds": 20.0, "probe_seconds": 0.1,
                                      "fd": 40.0, "fd_std": 4.0, "num_samples": 200}]
    results = [_run(tmp_path, "alpha", _row(), quality=quality)]
    assert report.quality_figure(results, str(tmp_path / "q.png"), real=_real(tmp_path))
    assert spans == [(7.0, 17.0), (7.0, 17.0)]  # the real row's FD at the probe's n, 12 ± 5, on both axes
    spans.clear()
    report.quality_figure(results, str(tmp_path / "q2.png"), real=dict(_real(tmp_path), fd_at={"500": [1.0, 1.0]}))
    assert spans == []  # no band from another n


# --- 2. collapse relative to real data --------------------------------------------------------

@pytest.mark.parametrize("recall,std,named", [(0.40, 0.01, True), (0.44, 0.01, False), (0.43, 0.0, True)])
def test_collapse_is_recall_below_a_fraction_of_real_datas_beyond_the_error_bars(tmp_path, recall, std, named):
    """Real recall 0.9 ± 0.01: the line is 0.5 x (0.9 - 0.01) = 0.445; a row is collapsed when
    recall + its std stays below it."""
    assert verdict.COLLAPSE_FRACTION == 0.5
    results = [_run(tmp_path, "alpha", _row()), _run(tmp_path, "beta", _row(recall=recall, recall_std=std))]
    text = _find(verdict.verdict(results, real=_real(tmp_path, recall=0.9, recall_std=0.01)), "Collapse")
    assert ("beta (recall" in text) == named and "alpha (recall" not in text
    assert "recall below 0.5 of held-out real data's at the same n, beyond the error bars" in text


def test_samples_repeating_one_image_per_class_are_named_with_their_classes(tmp_path, digits_split):
    """Class-conditional samples judged against the digits: 'one' draws a single image per class,
    'two' is real (training) digits except for classes 3 and 5, one image each, and 'fresh' is real
    digits throughout. The verdict names 'one' as a whole and in every class, 'two' in classes 3
    and 5 only, and not 'fresh'; the per-class table marks the same."""
    train, labels, _, _ = digits_split
    judging = compare.Judging(class_accuracy=False)
    order = np.random.default_rng(1).permutation(len(train))[:359]
    images, lab = train[order], labels[order]

    def judged(name, imgs):
        path = npz.write_samples(str(tmp_path / name), imgs, lab)
        return _run(tmp_path, name, dict(compare.judge(path, judging=judging), sampler="default", npz=path, nfe=1))

    one = images.copy()
    for c in range(10):
        one[lab == c] = train[np.flatnonzero(labels == c)[0]]
    two = images.copy()
    for c in (3, 5):
        two[lab == c] = train[np.flatnonzero(labels == c)[0]]
    results = [judged("one", one), judged("two", two), judged("fresh", images)]
    real = compare.judge_real(judging, 16, 359, str(tmp_path / "heldout"))
    text = _find(verdict.verdict(results, real=real), "Collapse")
    assert re.search(r"one \(recall [0-9.]+ ± [0-9.]+\) is collapsed", text), text
    assert "Within classes, one is collapsed in 10 of 10 classes" in text
    (two_part,) = re.findall(r"two is collapsed in 2 of 10 classes: (class 3 \(.*?\), class 5 \(.*?\));", text)
    assert "against" in two_part
    assert "fresh is collapsed" not in text and "fresh (recall" not in text
    header, rows = report.class_table(results, real)
    assert header == ["class", "held-out real data", "one", "two", "fresh"]
    two_col = {row[0]: row[3] for row in rows}
    assert {c for c, cell in two_col.items() if "collapsed" in cell} == {"3", "5"}
    assert all("collapsed" in row[2] for row in rows) and not any("collapsed" in row[4] for row in rows)


def test_a_class_with_too_few_samples_for_an_error_bar_is_not_judged(tmp_path):
    """Seven samples of a class: a half of them has no k = 3 neighbours, so no std; its recall
    alone (0.1 against 0.9) does not name it, and the sentence says it was not judged."""
    per_class = {str(c): 0.8 for c in range(3)}
    row = _row(class_recall=dict(per_class, **{"2": 0.1}), class_recall_std={"0": 0.02, "1": 0.02, "2": None},
               class_recall_mean=0.57, class_recall_min=0.1, class_recall_min_class=2)
    real = _real(tmp_path, class_recall={str(c): 0.9 for c in range(3)},
                 class_recall_std={str(c): 0.02 for c in range(3)})
    text = _find(verdict.verdict([_run(tmp_path, "beta", row)], real=real), "Collapse")
    assert "beta is collapsed" not in text and "Too few samples for an error bar, not judged: beta's class 2." in text
    assert "beta's lowest judged recall is 0.800 (class 0)" in text  # not the unjudged class's 0.1
    row["class_recall_std"]["2"] = 0.05
    text = _find(verdict.verdict([_run(tmp_path, "beta", row)], real=real), "Collapse")
    assert "beta is collapsed in 1 of 3 classes: class 2 (recall 0.100 against 0.900)" in text


# --- 3. copies of the training set ------------------------------------------------------------

def _folder(path, images, labels):
    path.mkdir(parents=True)
    for i, (im, c) in enumerate(zip(images, labels)):
        Image.fromarray(im[..., 0]).save(path / f"{c}_{i:05d}.png")
    return str(path)


def test_exact_training_images_are_named_as_copies_and_fresh_draws_are_not(tmp_path, digits_split):
    """A folder data set: 'train' (the training images, the reference), 'test' beside it (held-out
    real images) and fresh digits of the same law that neither holds. Samples that are training
    images are all closer to the training set than held-out images usually are and are named; the
    fresh draws are no closer than held-out data and are not."""
    train, labels, _, _ = digits_split
    order = np.random.default_rng(2).permutation(len(train))
    a, b, c = order[:700], order[700:1000], order[1000:1300]
    data_train = _folder(tmp_path / "data" / "train", train[a], labels[a])
    _folder(tmp_path / "data" / "test", train[b], labels[b])
    judging = compare.Judging("digits", "train", data_train, class_accuracy=False, cache_dir=str(tmp_path))
    assert judging.heldout_dir == str(tmp_path / "data" / "test")
    copier = npz.write_samples(str(tmp_path / "copier"), train[a[:300]], labels[a[:300]])
    fresh = npz.write_samples(str(tmp_path / "fresh"), train[c], labels[c])
    results = [_run(tmp_path, name, dict(compare.judge(p, judging=judging), sampler="default", npz=p, nfe=1))
               for name, p in (("copier", copier), ("fresh", fresh))]
    real = compare.judge_real(judging, 16, 300, str(tmp_path / "heldout"))
    assert results[0]["rows"][0]["copies"] == 1.0 and results[0]["rows"][0]["nearest_train_pixels_min"] < 1e-6
    assert results[1]["rows"][0]["copies"] < 0.15 and real["rows"][0]["copies"] < 0.15
    with np.load(results[0]["rows"][0]["closest_pairs"]) as z:  # each sample's nearest training image
        assert z["nearest_pixels_distance"].max() < 1e-6 and z["nearest_features_distance"].max() < 1e-3  # held-out: ~5
        assert (judging.training_images()[z["nearest_pixels_index"]] == train[a[:300]]).all()
    text = _find(verdict.verdict(results, real=real), "Copies of the training set")
    named = text.split(" more than real data does")[0].split("): ", 1)[1]
    assert named.startswith("copier 100.0%") and "fresh" not in named, text
    assert "The others are no closer than real data: fresh" in text
    # the figure of the closest pairs: held-out real data's, then each row's
    paths = report.write(str(tmp_path), results, _meta(real=real))
    md = open(paths["md"]).read()
    assert "![closest training images](figures/closest_training_images.png)" in md
    with Image.open(tmp_path / "figures" / "closest_training_images.png") as im:
        assert im.height > 3 * 2 * 16 * 3  # three rows of pairs, each two 16 px strips at 3x
    copies = {r["run"]: r["copies"] for r in report.read_table(md)}
    assert copies == {compare.REAL_NAME: report._fmt(real["rows"][0]["copies"]), "copier": "1",
                      "fresh": copies["fresh"]}


# --- 4. resolving power -----------------------------------------------------------------------

def test_rows_within_real_datas_error_bar_are_not_ranked_and_the_separating_measure_is_named(tmp_path):
    """Real FD 8.4 ± 4.6: rows at 9.0 ± 3.8 and 11 ± 4 overlap it and are not ranked on FD; the
    resolving power (twice real data's std, 9.2) is stated; precision still separates them."""
    a = _row(fd_digits=9.0, fd_std=3.8, precision=0.70, precision_std=0.02, recall=0.92, recall_std=0.01)
    b = _row(fd_digits=11.0, fd_std=4.0, precision=0.60, precision_std=0.02, recall=0.93, recall_std=0.01)
    c = _row(fd_digits=40.0, fd_std=5.0)
    results = [_run(tmp_path, "a", a), _run(tmp_path, "b", b), _run(tmp_path, "c", c)]
    assert verdict.resolving_power(_real(tmp_path)["rows"][0]) == pytest.approx(9.2)
    text = _find(verdict.verdict(results, real=_real(tmp_path)), "Both at once")
    assert "best is" not in text and "The next row, c (40 ± 5), is beyond real data's error bar." in text
    assert ("a (9 ± 3.8), b (11 ± 4) are within the resolving power of held-out real data (8.4 ± 4.6): at n = 359 "
            "FD-digits differences below about 9.2 (twice real data's std) are not told apart") in text
    assert ("Precision still separates them: held-out real data 0.914 ± 0.015, a 0.7 ± 0.02, b 0.6 ± 0.02 "
            "(a, b differ from real data beyond the error bars; a is ahead of b beyond the error bars)") in text
    # a best row beyond real data's error bar is ranked as before, and real data's figure is given
    far = [_run(tmp_path, "a", dict(a, fd_digits=30.0)), _run(tmp_path, "c", c)]
    text = _find(verdict.verdict(far, real=_real(tmp_path)), "Both at once")
    assert "best is a (30 ± 3.8)" in text and "held-out real data (8.4 ± 4.6) is beyond every row's error bar" in text
    md = open(report.write(str(tmp_path), results, _meta(real=_real(tmp_path)))["md"]).read()
    assert "FD-digits differences below about 9.2 (twice it) are not separated at this n" in md


# --- 5. a report a person reads as text -------------------------------------------------------

def _meta(**extra):
    return dict({"machine": "x", "cpu_cores": 2, "device": "CPU only", "torch": "t", "python": "p",
                 "launcher": "local x 1", "feature_network": "f", "num_samples": 500, "minutes": 1, "config": "c",
                 "wall_seconds": 60}, **extra)


def test_the_results_table_has_one_link_a_row_and_cost_goes_to_a_second_table(tmp_path):
    per_class = {str(c): 0.8 for c in range(10)}
    cond = _row(class_recall=dict(per_class, **{"4": 0.1}), class_recall_std={str(c): 0.02 for c in range(10)},
                class_recall_mean=0.73, class_recall_min=0.1, class_recall_min_class=4, class_accuracy=0.97,
                num_drawn=500)
    quality = [{"step": 10 * i, "samples": 100 * i, "train_seconds": 10.0 * i, "probe_seconds": 0.1, "fd": fd,
                "fd_std": 2.0, "num_samples": 200} for i, fd in enumerate((300.0, 100.0, 60.0), 1)]
    results = [_run(tmp_path, "alpha", _row(num_drawn=500), quality=quality),
               _run(tmp_path, "beta", cond, quality=quality[:2])]
    real = _real(tmp_path, class_recall={str(c): 0.9 for c in range(10)},
                 class_recall_std={str(c): 0.03 for c in range(10)})
    paths = report.write(str(tmp_path), results, _meta(real=real))
    md = open(paths["md"]).read()
    table = md[md.index("## Results"):md.index("### Cost and hardware")]
    lines = [line for line in table.splitlines() if line.startswith("| ")][1:]
    assert [line.split("|")[1].strip() for line in lines] == [
        f"[{compare.REAL_NAME}](heldout)", "[alpha](alpha)", "[beta](beta)"]
    assert all(line.count("](") == 1 for line in lines)  # one link a row: the run
    header = [c.strip() for c in table.splitlines()[2].strip("|").split("|")]
    assert header == ["run", "sampler", "samples", "FD-digits", "FD std", "precision", "recall", "KID", "IS",
                      "class acc.", "copies", "FD untrained"]
    cost = md[md.index("### Cost and hardware"):]
    assert cost.splitlines()[2] == ("| run | sampler | steps | train s | train img/s | parameters | samples drawn | "
                                    "NFE/img | sampling s/img |") and "Hardware: x, 2 cores" in cost
    html = open(paths["html"]).read()
    assert html.count("<a href=") > md.count("](")  # the HTML keeps a link on every number
    # the stability table and the per-class table
    stability = md[md.index("### Training stability"):]
    assert "| alpha | 300 ± 2 at 10 s | 100 ± 2 at 20 s | 60 ± 2 at 30 s | still falling | – |" in stability
    assert "| beta | 300 ± 2 at 10 s | 100 ± 2 at 20 s | – | still falling | – |" in stability
    per_class_table = md[md.index("### Recall per class"):]
    assert "| class | held-out real data | beta |" in per_class_table
    assert "| 4 | 0.900 ± 0.03 | 0.100 ± 0.02 (collapsed) |" in per_class_table
    assert "| 0 | 0.900 ± 0.03 | 0.800 ± 0.02 |" in per_class_table
    # check() and read_table read the two tables as one row per (run, sampler)
    rows = {r["run"]: r for r in report.read_table(md)}
    alpha = rows["alpha"]
    assert alpha["steps"] == "10" and alpha["samples"] == "359" and alpha["samples drawn"] == "500"
    assert "steps" not in rows[compare.REAL_NAME]
    assert report.check(str(tmp_path), ["alpha", "beta"]) == []
    # the job's closing summary starts with held-out real data, as the table writes it
    assert report.summary_lines(results, real=real)[1].split() == [
        "held-out", "real", "data:", "FD-digits", "8.4", "±", "4.6,", "precision", "0.914,", "recall", "0.926"]
    # the verdict's stability sentence is short: the points are in the table
    assert len(_find(verdict.verdict(results, real=real), "Training stability")) < 400


def test_without_a_test_split_a_held_out_part_of_the_training_folder_is_never_trained_on(tmp_path, digits_split):
    """A folder data set with train/ only: a fixed 10% is linked into <out>/data/heldout and the
    runs train on the other 90% (<out>/data/train); the two are disjoint and make up the folder,
    the same files again on a second call (--reuse), and the report's description says so."""
    train, labels, _, _ = digits_split
    source = _folder(tmp_path / "data" / "train", train[:60], labels[:60])
    out = tmp_path / "cmp"
    data_train, heldout, note = compare.hold_out(source, str(out))
    assert (data_train, heldout) == (str(out / "data" / "train"), str(out / "data" / "heldout"))
    kept = sorted(p.name for p in (out / "data" / "train").iterdir())
    held = sorted(p.name for p in (out / "data" / "heldout").iterdir())
    assert len(held) == 6 and len(kept) == 54 and not set(kept) & set(held)
    assert sorted(kept + held) == sorted(p.name for p in (tmp_path / "data" / "train").iterdir())
    assert compare.hold_out(source, str(out))[:2] == (data_train, heldout)
    assert sorted(p.name for p in (out / "data" / "heldout").iterdir()) == held
    assert "a fixed random 6 of the 60 images" in note and "every run trained on the other 54" in note
    judging = compare.Judging("digits", "train", data_train, heldout_dir=heldout, heldout_note=note)
    images, held_labels, description = judging.heldout(16)
    assert len(images) == 6 and description == note and len(judging.training_images()) == 54
    assert judging.judged_count(500, 16) == 6
