"""Training stability, for the comparison's verdict and report: how each run's probe FD ends
(level, still falling, rising; past its best) and each GAN's discriminator accuracy over the
second half of its log, as the verdict's sentence and the report's "Training stability" table.
"""

import os

import numpy as np

from trainkit import logger, optim

# D's mean accuracy this close to 1/2 is "at chance": a D that tells real from generated in 55%
# of the cases or fewer. The log's means are over thousands of images, so the binomial error of
# the accuracy itself (0.5 / sqrt(images)) is far below this.
CHANCE_ACCURACY_TOLERANCE = 0.05


def pm(v, s, digits=3):
    """v ± s as the verdict and its tables write it."""
    # whole numbers from 10^digits up (1524, not 1.52e+03)
    text = f"{v:.0f}" if abs(v) >= 10 ** digits else f"{v:.{digits}g}"
    if s is not None and abs(s) < 1e-9:  # a spread of rounding noise (every half alike) is 0
        s = 0.0
    return f"{text} ± {s:.2g}" if s is not None else text


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
        text += f", past its best ({pm(best['fd'], best.get('fd_std'))} at {best['train_seconds']:.0f} s)"
    return text


END_WORDS = {"level": "level", "still improving": "still falling", "worse at the end": "rising"}


def _end_word(quality) -> str:
    text = trend(quality)
    word = next((w for k, w in END_WORDS.items() if text.startswith(k)), text)
    return word + (", past its best" if "past its best" in text else "")


def stability_table(results):
    """(header, rows) of the training-stability table: each run's probe FD at its points (±1 std,
    at training second s), how it ends (level, still falling, rising; past its best) and its
    discriminator's accuracy over the second half of its log (GANs). None without either."""
    runs = [r for r in results if r.get("quality") or d_accuracy(r) is not None]
    if not runs:
        return None
    points = max((len(r.get("quality") or []) for r in runs), default=0)
    header = ["run"] + [f"point {i + 1}" for i in range(points)] + ["at the end", "D accuracy"]
    rows = []
    for r in runs:
        q = r.get("quality") or []
        cells = [f"{pm(p['fd'], p.get('fd_std'))} at {p['train_seconds']:.0f} s" for p in q]
        cells += ["–"] * (points - len(q))
        acc = d_accuracy(r)
        rows.append([r["name"]] + cells + [_end_word(q) if q else "–", f"{acc:.3f}" if acc is not None else "–"])
    return header, rows


def stability_sentence(results, fd_name):
    probed = [r for r in results if r.get("quality")]
    adversarial = [(r["name"], a) for r in results if (a := d_accuracy(r)) is not None]
    if not probed and not adversarial:
        return None
    text = "**Training stability**"
    if probed:
        n = int(probed[0]["quality"][0].get("num_samples", 0))
        groups = {}
        for r in probed:
            groups.setdefault(_end_word(r["quality"]).split(",")[0], []).append(r["name"])
        past = [r["name"] for r in probed if "past its best" in trend(r["quality"])]
        text += (f" ({fd_name} of {n} fixed samples at evenly spaced points of each run's training, ±1 std; one "
                 "measure for every family; the table below and the figure): "
                 + "; ".join(f"{word} at the end: {', '.join(names)}" for word, names in groups.items())
                 + (f"; past its best point: {', '.join(past)}" if past else "") + ".")
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
