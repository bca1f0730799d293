"""The written verdict at the top of a comparison report, derived from the numbers alone.

`verdict(results)` takes evaluations.compare's results (one dict per run, each with its sampler
rows) and returns markdown sentences:

- fidelity (precision), diversity (recall) and both at once (FD-digits): the best row, and
  every other row whose ±1 std error bar overlaps it, so a tie is called a tie;
- sampling speed: the fastest row and its quality, against the best row's cost, with the same
  tie rule;
- stability (evaluations.stability): each run's quality over training, read from its quality
  probe (evaluations.probe: the FD of a small fixed sample set at evenly spaced points of its
  training, with bootstrap error bars; one measure for every family, where their losses are
  different quantities): still improving, level, or worse at the end, each beyond or within the ±1 std error bars of its
  last two points; and, for each GAN, its discriminator's accuracy over the second half of the
  log (`d_acc`, logged by every GAN family from D's logits on the step's real images and fresh
  fakes before D updates on them), at chance when within CHANCE_ACCURACY_TOLERANCE of 1/2. The
  D loss is not used: noisy logits without skill give a logistic loss above 2 ln 2, and a D
  right 72% of the time can have a loss of exactly 2 ln 2;
- held-out real data (`real`, evaluations.compare.judge_real: real images never trained on,
  judged like a run at the rows' n): its figures, and on each measure the rows whose error bar
  overlaps its own, "indistinguishable from held-out real data on that measure, at this n";
- resolving power: rows whose FD error bar overlaps the real row's are not ranked on FD (the
  smallest FD difference this n separates is about twice the real row's std, resolving_power);
  the measure that still separates them is named;
- collapse: relative to real data: a row whose recall (with its error bar) is below
  COLLAPSE_FRACTION of the real row's (with its error bar) is named, and so is every class of a
  class-conditional row whose within-class recall is below that fraction of the real row's recall
  of that class; without a real row, the absolute line COLLAPSE_RECALL;
- copies of the training set (evaluations.copies): a row whose share of samples closer to a
  training image than held-out real images usually are exceeds the real row's share by more
  than COPY_Z combined binomial std;
- training: how far each run moved from its untrained baseline in FD-digits, both sampled with
  the baseline's sampler;
- rows judged on different sample counts are not ranked (FD's bias shrinks as 1/n).

Nothing here is written by hand for a particular result: tests feed it fabricated numbers with
the ranking swapped and check that the verdict swaps with them.
"""

import math

from .stability import CHANCE_ACCURACY_TOLERANCE as CHANCE_ACCURACY_TOLERANCE  # re-exported: tests, docs
from .stability import d_accuracy as d_accuracy
from .stability import pm as _pm
from .stability import stability_sentence
from .stability import stability_table as stability_table
from .stability import trend as trend

# Without held-out real data: recall below this line is collapse (an absolute line, blind to
# what real data of this size scores).
COLLAPSE_RECALL = 0.3
# With held-out real data: a recall below this fraction of real data's at the same n, error bars
# taken into account, is collapse: a generator that covers its modes perfectly but has dropped
# half of them scores half of real data's recall, so below it more than half of what real images
# of the class cover is lost (docs/evaluations.md, "The rules").
COLLAPSE_FRACTION = 0.5
# A row copies more than real data when its share of too-close samples exceeds the real row's by
# more than this many std of the difference (binomial over both sets): one-sided, about 2% of
# rows that do not copy would be named by chance at 2.
COPY_Z = 2.0


def _label(r, row):
    # "–": the real-data row, which has no sampler
    return r["name"] if row["sampler"] in ("default", "–") else f"{r['name']} ({row['sampler']})"


def _judged(results):
    return [(_label(r, row), r, row) for r in results for row in r["rows"]
            if row.get("fd_digits") is not None and math.isfinite(row["fd_digits"])]


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
    def fmt(j):
        return f"{j[0]} ({_pm(j[2][key], j[2].get(std_key))})"
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


def _absolute_collapse_sentence(with_recall, data_name):
    """Without held-out real data: the absolute line COLLAPSE_RECALL."""
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
    return text + " (No held-out real data to judge recall against: an absolute line.)"


def collapsed(recall, std, real_recall, real_std) -> bool:
    """Recall below COLLAPSE_FRACTION of real data's beyond the error bars: the row's bar lies
    wholly below the fraction of the real row's bar."""
    return recall + (std or 0.0) < COLLAPSE_FRACTION * (real_recall - (real_std or 0.0))


def collapsed_classes(row, real_row) -> list:
    """[(class, recall, real data's recall of that class)] of the classes collapsed within `row`.
    A class whose samples are too few for an error bar (no class_recall_std: a half of them has
    k or fewer) is not judged (`unjudged_classes`)."""
    mine, theirs = row.get("class_recall") or {}, real_row.get("class_recall") or {}
    mine_std, their_std = row.get("class_recall_std") or {}, real_row.get("class_recall_std") or {}
    return [(int(c), r, theirs[c]) for c, r in sorted(mine.items(), key=lambda kv: int(kv[0]))
            if c in theirs and (c not in mine_std or mine_std[c] is not None)
            and collapsed(r, mine_std.get(c), theirs[c], their_std.get(c))]


def unjudged_classes(row) -> list:
    """The classes of `row` without an error bar on their recall (too few samples): not judged."""
    stds = row.get("class_recall_std") or {}
    return sorted(int(c) for c in row.get("class_recall") or {} if c in stds and stds[c] is None)


def _collapse_sentence(judged, data_name, real_row=None):
    with_recall = [j for j in judged if j[2].get("recall") is not None]
    if not with_recall:
        return None
    if real_row is None or real_row.get("recall") is None:
        return _absolute_collapse_sentence(with_recall, data_name)
    same_n = [j for j in with_recall if _same_n(j[2], real_row)]
    rr, rs = real_row["recall"], real_row.get("recall_std")
    text = (f"**Collapse** (recall below {COLLAPSE_FRACTION:g} of held-out real data's at the same n, beyond the error "
            f"bars; real data's recall {_pm(rr, rs)}, per class its recall of that class): ")
    whole = [j for j in same_n if collapsed(j[2]["recall"], j[2].get("recall_std"), rr, rs)]
    within = [(j, collapsed_classes(j[2], real_row)) for j in same_n if j[2].get("class_recall")]
    within_bad = [(j, bad) for j, bad in within if bad]
    if whole:
        text += (", ".join(f"{j[0]} (recall {_pm(j[2]['recall'], j[2].get('recall_std'))})" for j in whole)
                 + f" {'is' if len(whole) == 1 else 'are'} collapsed: {'its' if len(whole) == 1 else 'their'} samples "
                 f"cover less than {COLLAPSE_FRACTION:g} of what held-out real images cover.")
    elif within_bad:
        text += "no run as a whole."
    else:
        text += "none."
    for j, bad in within_bad:
        text += (f" Within classes, {j[0]} is collapsed in {len(bad)} of {len(j[2]['class_recall'])} classes: "
                 + ", ".join(f"class {c} (recall {r:.3f} against {rc:.3f})" for c, r, rc in bad)
                 + f"; its samples of {'that class' if len(bad) == 1 else 'those classes'} cover less than "
                 f"{COLLAPSE_FRACTION:g} of what held-out real images of the class cover.")
    ok = [(j, judged_min) for j, bad in within if not bad
          and (judged_min := min(((r, int(c)) for c, r in j[2]["class_recall"].items()
                                  if int(c) not in unjudged_classes(j[2])), default=None))]
    if ok:
        text += " Per class, " + ", ".join(
            f"{j[0]}'s lowest judged recall is {r:.3f} (class {c})" for j, (r, c) in ok) + (
            ", not collapsed against real data's recall of that class.")
    unjudged = [(j[0], u) for j, _ in within if (u := unjudged_classes(j[2]))]
    if unjudged:
        text += (" Too few samples for an error bar, not judged: " + "; ".join(
            f"{name}'s class{'es' if len(u) > 1 else ''} {', '.join(map(str, u))}" for name, u in unjudged) + ".")
    other_n = [j[0] for j in with_recall if j not in same_n]
    if other_n:
        text += f" Not judged against real data (another n): {', '.join(other_n)}."
    return text


def _same_n(row, real_row) -> bool:
    return row.get("num_samples") is not None and row.get("num_samples") == real_row.get("num_samples")


def resolving_power(real_row):
    """The smallest FD difference this n separates: two rows are told apart when they differ by
    more than the sum of their std, and a row as precise as held-out real data has its std, so
    about twice the real row's std. None without it."""
    if real_row is None or real_row.get("fd_std") is None:
        return None
    return 2.0 * real_row["fd_std"]


def _overlaps(row, real_row, key, std_key):
    return abs(row[key] - real_row[key]) <= (row.get(std_key) or 0.0) + (real_row.get(std_key) or 0.0)


def _measures(fd_name):
    kid_name, kid_factor = ("KID ×10³", 1000) if fd_name == "FID" else ("KID", 1)
    return [("fd_digits", "fd_std", fd_name, False, 1), ("precision", "precision_std", "precision", True, 1),
            ("recall", "recall_std", "recall", True, 1), ("kid", "kid_std", kid_name, False, kid_factor)]


def _real_sentence(judged, real, fd_name):
    row = real["rows"][0]
    n = row.get("num_samples")
    same = [j for j in judged if _same_n(j[2], row)]
    figures, alike = [], []
    for key, std_key, name, _, factor in _measures(fd_name):
        if row.get(key) is None:
            continue
        std = row.get(std_key)
        figures.append(f"{name} {_pm(row[key] * factor, None if std is None else std * factor)}")
        close = [j[0] for j in same if j[2].get(key) is not None and _overlaps(j[2], row, key, std_key)]
        alike.append(f"on {name} {', '.join(close) if close else 'none'}")
    text = (f"**Held-out real data** ({real.get('description', 'real images never trained on')}, judged like a run on "
            f"{n} of them): " + ", ".join(figures) + f". Indistinguishable from held-out real data at n = {n} (error "
            "bars overlapping its own): " + "; ".join(alike) + ".")
    other = [j[0] for j in judged if j not in same]
    if other:
        text += f" Not compared with it (judged on another n): {', '.join(other)}."
    return text


def _fd_sentence(judged, real_row, fd_name):
    """The FD sentence: a ranking, or, when the best rows are within held-out real data's error
    bar, the resolving power and the measure that still separates them."""
    ranking = _ranking_sentence("Both at once", f"{fd_name}, lower is better", judged, "fd_digits", "fd_std", False)
    if real_row is None or real_row.get("fd_digits") is None:
        return ranking
    same = [j for j in judged if _same_n(j[2], real_row)]
    group = sorted((j for j in same if _overlaps(j[2], real_row, "fd_digits", "fd_std")),
                   key=lambda j: j[2]["fd_digits"])
    delta = resolving_power(real_row)
    n = real_row.get("num_samples")
    real_fd = _pm(real_row["fd_digits"], real_row.get("fd_std"))
    if not group:
        return ranking[:-1] + (f"; held-out real data ({real_fd}) is beyond every row's error bar (at n = {n} "
                               f"the smallest {fd_name} difference told apart is about {delta:.2g}).")
    def fmt(j):
        return f"{j[0]} ({_pm(j[2]['fd_digits'], j[2].get('fd_std'))})"
    several = len(group) > 1
    text = (f"**Both at once** ({fd_name}, lower is better): " + ", ".join(fmt(j) for j in group)
            + f" {'are' if several else 'is'} within the resolving power of held-out real data ({real_fd}): at n = {n} "
            f"{fd_name} differences below about {delta:.2g} (twice real data's std) are not told apart, so "
            f"{'these rows are' if several else 'this row is'} not ranked on {fd_name}"
            + (" against each other or" if several else "") + " against real data.")
    outside = sorted((j for j in same if j not in group), key=lambda j: j[2]["fd_digits"])
    if outside:
        near = [j[0] for j in group if _overlaps(outside[0][2], j[2], "fd_digits", "fd_std")]
        text += (f" The next row, {fmt(outside[0])}, is beyond real data's error bar"
                 + (f", though within that of {', '.join(near)}." if near else "."))
    for key, std_key, name, higher, factor in _measures(fd_name)[1:]:
        if real_row.get(key) is None or any(j[2].get(key) is None for j in group):
            continue
        apart = [j for j in group if not _overlaps(j[2], real_row, key, std_key)]
        best, ties, rest = _ranked(group, key, std_key, higher)
        if not apart and not rest:
            continue
        def val(row):
            return _pm(row[key] * factor, None if row.get(std_key) is None else row[std_key] * factor)
        text += (f" {name.capitalize() if name[0].islower() else name} still separates them: held-out real data "
                 f"{val(real_row)}, " + ", ".join(f"{j[0]} {val(j[2])}" for j in group))
        parts = []
        if apart:
            parts.append(", ".join(j[0] for j in apart) + f" {'differs' if len(apart) == 1 else 'differ'} from real "
                         "data beyond the error bars")
        if several and rest:
            parts.append(f"{best[0]} is ahead of {rest[0][0]} beyond the error bars")
        return text + " (" + "; ".join(parts) + ")."
    return text + " No other measure separates them at this n."


def _copies_sentence(judged, real_row):
    if real_row is None or real_row.get("copies") is None:
        return None
    rows = [j for j in judged if j[2].get("copies") is not None]
    if not rows:
        return None
    limit = (real_row.get("copy_threshold") or {}).get("pixels")
    q = (real_row.get("copy_threshold") or {}).get("quantile", 0.05)
    rc, rcs = real_row["copies"], real_row.get("copies_std") or 0.0
    def pct(v):
        return f"{100 * v:.1f}%"
    more = [j for j in rows if j[2]["copies"] - rc > COPY_Z * math.hypot(j[2].get("copies_std") or 0.0, rcs)]
    text = (f"**Copies of the training set** (share of samples whose nearest training image is closer in pixels than "
            f"{pct(1 - q)} of held-out real images' nearest training image, an RMS pixel distance of "
            f"{limit:.3g}; held-out real data {pct(rc)} of its own {real_row.get('num_samples')}): ")
    if more:
        text += (", ".join(f"{j[0]} {pct(j[2]['copies'])} ({pct(j[2].get('copies_features', float('nan')))} in the "
                           "feature space)" for j in more)
                 + f" {'copies' if len(more) == 1 else 'copy'} more than real data does (beyond {COPY_Z:g} std of the "
                 "difference); see the closest pairs figure.")
        rest = [j for j in rows if j not in more]
        if rest:
            text += " The others are no closer than real data: " + ", ".join(
                f"{j[0]} {pct(j[2]['copies'])}" for j in rest) + "."
    else:
        text += ("no run copies more than real data does (every share within "
                 f"{COPY_Z:g} std of real data's): " + ", ".join(f"{j[0]} {pct(j[2]['copies'])}" for j in rows) + ".")
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


def verdict(results, fd_name="FD-digits", data_name="the real digits", real=None) -> list:
    """Markdown sentences, one per finding, from the results' numbers. `fd_name` names the
    Fréchet distance of the comparison's feature space (FD-digits, FID), `data_name` its
    reference images and `real` the held-out real data's row (evaluations.compare.judge_real)."""
    judged = _judged(results)
    if not judged:
        return ["No run produced judged samples, so there is no verdict."]
    real_row = real["rows"][0] if real and real.get("rows") else None
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
            _fd_sentence(judged, real_row, fd_name),
            _speed_sentence(judged, fd_name),
        ]
    sentences = ([_real_sentence(judged, real, fd_name)] if real_row else []) + ranking + [
        _collapse_sentence(judged, data_name, real_row),
        _copies_sentence(judged, real_row),
        stability_sentence(results, fd_name),
        _training_sentence(results, fd_name),
    ]
    failed = [r["name"] for r in results if r["failed"] and not r["rows"]]
    if failed:
        sentences.append(f"**Not judged**: {', '.join(failed)} failed before sampling (see the table).")
    return [s for s in sentences if s]
