"""The written verdict at the top of a comparison report, derived from the numbers alone.

`verdict(results)` takes evaluations.compare's results (one dict per run, each with its sampler
rows) and returns markdown sentences:

- fidelity (precision), diversity (recall) and both at once (FD-digits): the best row, and
  every other row whose ±1 std error bar overlaps it, so a tie is called a tie;
- sampling speed: the fastest row and its quality, against the best row's cost, with the same
  tie rule;
- stability: each run's quality over training, read from its quality probe (evaluations.probe:
  the FD of a small fixed sample set at evenly spaced points of its training, with bootstrap
  error bars; one measure for every family, where their losses are different quantities): still
  improving, level, or worse at the end, each beyond or within the ±1 std error bars of its
  last two points; and, for each GAN, its discriminator's accuracy over the second half of the
  log (`d_acc`, logged by every GAN family from D's logits on the step's real images and fresh
  fakes before D updates on them), at chance when within CHANCE_ACCURACY_TOLERANCE of 1/2. The
  D loss is not used: noisy logits without skill give a logistic loss above 2 ln 2, and a D
  right 72% of the time can have a loss of exactly 2 ln 2;
- collapse: every row whose recall is below COLLAPSE_RECALL is named as collapsed, and every
  class of a class-conditional row whose within-class recall is below it;
- training: how far each run moved from its untrained baseline in FD-digits, both sampled with
  the baseline's sampler;
- rows judged on different sample counts are not ranked (FD's bias shrinks as 1/n).

Nothing here is written by hand for a particular result: tests feed it fabricated numbers with
the ranking swapped and check that the verdict swaps with them.
"""

import math
import os

import numpy as np

from trainkit import logger, optim

COLLAPSE_RECALL = 0.3
# D's mean accuracy this close to 1/2 is "at chance": a D that tells real from generated in 55%
# of the cases or fewer. The log's means are over thousands of images, so the binomial error of
# the accuracy itself (0.5 / sqrt(images)) is far below this.
CHANCE_ACCURACY_TOLERANCE = 0.05



def _label(r, row):
    return r["name"] if row["sampler"] == "default" else f"{r['name']} ({row['sampler']})"


def _judged(results):
    return [(_label(r, row), r, row) for r in results for row in r["rows"]
            if row.get("fd_digits") is not None and math.isfinite(row["fd_digits"])]


def _pm(v, s, digits=3):
    # whole numbers from 10^digits up (1524, not 1.52e+03)
    text = f"{v:.0f}" if abs(v) >= 10 ** digits else f"{v:.{digits}g}"
    return f"{text} ± {s:.2g}" if s is not None else text


def _ranked(judged, key, std_key, higher_better):
    """(best, ties, rest): ties are rows whose ±1 std interval overlaps the best one's."""
    rows = [j for j in judged if j[2].get(key) is not None]
    if not rows:
        return None, [], []
    rows.sort(key=lambda j: j[2][key], reverse=higher_better)
    best = rows[0]
    b, bs = best[2][key], best[2].get(std_key) or 0.0
    ties = [j for j in rows[1:] if abs(j[2][key] - b) <= bs + (j[2].get(std_key) or 0.0)]
    rest = [j for j in rows[1:] if j not in ties]
    return best, ties, rest


def _ranking_sentence(title, what, judged, key, std_key, higher_better):
    best, ties, rest = _ranked(judged, key, std_key, higher_better)
    if best is None:
        return None
    fmt = lambda j: f"{j[0]} ({_pm(j[2][key], j[2].get(std_key))})"  # noqa: E731
    text = f"**{title}** ({what}): best is {fmt(best)}"
    if ties:
        text += "; its error bar overlaps " + ", ".join(fmt(j) for j in ties) + ", so these are not told apart"
    elif rest:
        text += f", ahead of the next, {fmt(rest[0])}, beyond the error bars"
    return text + "."


def _speed_sentence(judged, fd_name):
    timed = [j for j in judged if j[2].get("sample_s_per_image") is not None]
    if not timed:
        return None
    fastest = min(timed, key=lambda j: j[2]["sample_s_per_image"])
    best, ties, _ = _ranked(timed, "fd_digits", "fd_std", False)
    f = fastest[2]
    nfe = f.get("nfe", "?")
    text = (f"**Sampling speed**: fastest is {fastest[0]}, {f['sample_s_per_image']:.3g} s/image at "
            f"{nfe} network evaluation{'' if nfe == 1 else 's'}, {fd_name} {_pm(f['fd_digits'], f.get('fd_std'))}")
    if best is fastest:
        return text + f"; it is also the best on {fd_name}."
    b = best[2]
    ratio = b["sample_s_per_image"] / max(f["sample_s_per_image"], 1e-12)
    if fastest in ties:  # the FD sentence's tie rule: overlapping ±1 std error bars
        return text + (f"; its error bar overlaps the best on {fd_name}, {best[0]} "
                       f"({_pm(b['fd_digits'], b.get('fd_std'))}), which takes {ratio:.1f}x longer per image.")
    return text + (f"; the best on {fd_name}, {best[0]} ({_pm(b['fd_digits'], b.get('fd_std'))}), takes "
                   f"{b['sample_s_per_image']:.3g} s/image ({ratio:.1f}x slower).")


def d_accuracy(r):
    """D's mean accuracy over the second half of the run's log rows, or None (not a GAN, no log)."""
    path = r.get("progress")
    if not path or not os.path.exists(path):
        return None
    rows = logger.read_progress(path)
    acc = np.array([row.get(optim.D_ACCURACY, np.nan) for row in rows[len(rows) // 2:]], dtype=float)
    acc = acc[np.isfinite(acc)]
    return float(acc.mean()) if len(acc) else None


def trend(quality) -> str:
    """How a run's probe FD ends: compared with the point before, beyond or within the error bars."""
    if len(quality) < 2:
        return "one point only"
    prev, last = quality[-2], quality[-1]
    bars = (prev.get("fd_std") or 0.0) + (last.get("fd_std") or 0.0)
    change = last["fd"] - prev["fd"]
    if abs(change) <= bars:
        text = "level at the end (its last two points within their error bars)"
    elif change < 0:
        text = "still improving at the end (beyond the error bars)"
    else:
        text = "worse at the end than at the point before (beyond the error bars)"
    best = min(quality, key=lambda q: q["fd"])
    if best is not last and best is not prev and last["fd"] - best["fd"] > (best.get("fd_std") or 0.0) + (
            last.get("fd_std") or 0.0):
        text += f", past its best ({_pm(best['fd'], best.get('fd_std'))} at {best['train_seconds']:.0f} s)"
    return text


def _stability_sentence(results, fd_name):
    probed = [r for r in results if r.get("quality")]
    adversarial = [(r["name"], a) for r in results if (a := d_accuracy(r)) is not None]
    if not probed and not adversarial:
        return None
    text = "**Training stability**"
    if probed:
        n = int(probed[0]["quality"][0].get("num_samples", 0))
        text += (f" ({fd_name} of {n} fixed samples at evenly spaced points of each run's training, ±1 std; one "
                 "measure for every family, see the figure): " + "; ".join(
                     f"{r['name']} " + " → ".join(_pm(q["fd"], q.get("fd_std")) for q in r["quality"])
                     + f", {trend(r['quality'])}" for r in probed) + ".")
    else:
        text += " (no run measured its quality during training):"
    if adversarial:
        at_chance = [n for n, a in adversarial if abs(a - optim.D_ACCURACY_CHANCE) <= CHANCE_ACCURACY_TOLERANCE]
        text += (" Discriminator accuracy on the step's real images and fresh fakes, before it updates on them "
                 f"(second half of the log; chance {optim.D_ACCURACY_CHANCE:g}): "
                 + ", ".join(f"{n} {a:.3f}" for n, a in adversarial) + ". ")
        if at_chance:
            text += (", ".join(at_chance) + (" is" if len(at_chance) == 1 else " are")
                     + f" at chance (within {CHANCE_ACCURACY_TOLERANCE:g}): a discriminator that cannot tell real "
                     "from generated.")
        else:
            text += "No discriminator is at chance."
    return text


def _collapse_sentence(judged, data_name):
    with_recall = [j for j in judged if j[2].get("recall") is not None]
    if not with_recall:
        return None
    collapsed = [j for j in with_recall if j[2]["recall"] < COLLAPSE_RECALL]
    # class-conditional rows: the samples of each class against the real images of that class
    within = [(j, sorted((int(c), r) for c, r in j[2]["class_recall"].items() if r < COLLAPSE_RECALL))
              for j in with_recall if j[2].get("class_recall")]
    within_bad = [(j, bad) for j, bad in within if bad]
    if not collapsed and not within_bad:
        text = f"**Collapse**: none; every run's recall is at least {COLLAPSE_RECALL}."
    elif not collapsed:
        # "none" would contradict the within-class sentence below
        text = f"**Collapse**: no run as a whole; every run's recall is at least {COLLAPSE_RECALL}."
    else:
        text = ("**Collapse**: " + ", ".join(f"{j[0]} (recall {j[2]['recall']:.3f})" for j in collapsed)
                + f" {'is' if len(collapsed) == 1 else 'are'} collapsed: recall below {COLLAPSE_RECALL}, "
                f"the samples cover little of {data_name}.")
    for j, bad in within_bad:
        text += (f" Within classes, {j[0]} is collapsed in " + ", ".join(f"class {c} (recall {r:.3f})" for c, r in bad)
                 + f": its samples of {'that class' if len(bad) == 1 else 'those classes'} cover little of the "
                 "class's real images.")
    ok = [j for j, bad in within if not bad]
    if ok:
        text += " Per class, " + ", ".join(
            f"{j[0]}'s lowest recall is {j[2]['class_recall_min']:.3f} (class {j[2]['class_recall_min_class']})"
            for j in ok) + f", at least {COLLAPSE_RECALL}."
    return text


def _training_sentence(results, fd_name):
    moved = []
    for r in results:
        # untrained over trained from one sampler: the baseline's (its cheapest), since the
        # samplers of one network differ in FD by themselves
        rows = [row for row in r["rows"] if row.get("fd_digits") and row.get("fd_untrained")
                and row.get("untrained_sampler", row["sampler"]) == row["sampler"]]
        if rows:
            row = rows[0]
            moved.append((_label(r, row), row["fd_untrained"] / row["fd_digits"], r.get("train_seconds")))
    if not moved:
        return None
    parts = [f"{n} {x:.1f}x" + (f" in {s:.0f} s" if s else "") for n, x, s in moved]
    weak = [n for n, x, _ in moved if x < 5]
    text = (f"**Training** (untrained {fd_name} over trained, both with the untrained baseline's sampler, in the "
            "training seconds each run had): " + ", ".join(parts))
    return text + (f"; {', '.join(weak)} moved less than 5x from untrained." if weak else ".")


def verdict(results, fd_name="FD-digits", data_name="the real digits") -> list:
    """Markdown sentences, one per finding, from the results' numbers. `fd_name` names the
    Fréchet distance of the comparison's feature space (FD-digits, FID) and `data_name` its
    reference images."""
    judged = _judged(results)
    if not judged:
        return ["No run produced judged samples, so there is no verdict."]
    counts = sorted({j[2].get("num_samples") for j in judged if j[2].get("num_samples")})
    if len(counts) > 1:
        # FD's bias grows as 1/n (and P/R's with it): figures from different n are not ranked
        ranking = [f"**Not ranked**: the rows were judged on different sample counts "
                   f"({', '.join(map(str, counts))}); {fd_name}'s bias shrinks as 1/n, so their figures are not "
                   "comparable. Sample every row with one --num_samples."]
    else:
        ranking = [
            _ranking_sentence("Fidelity", f"precision: share of samples on {data_name}' manifold", judged,
                              "precision", "precision_std", True),
            _ranking_sentence("Diversity", f"recall: share of {data_name}' manifold the samples cover", judged,
                              "recall", "recall_std", True),
            _ranking_sentence("Both at once", f"{fd_name}, lower is better", judged, "fd_digits", "fd_std", False),
            _speed_sentence(judged, fd_name),
        ]
    sentences = ranking + [
        _stability_sentence(results, fd_name),
        _collapse_sentence(judged, data_name),
        _training_sentence(results, fd_name),
    ]
    failed = [r["name"] for r in results if r["failed"] and not r["rows"]]
    if failed:
        sentences.append(f"**Not judged**: {', '.join(failed)} failed before sampling (see the table).")
    return [s for s in sentences if s]
