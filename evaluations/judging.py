"""Judging samples for the main job: the comparison's feature space and reference (`Judging`),
a samples npz's figures (`judge`: FD with its std, KID, precision/recall, per-class recall,
class accuracy, copies of the training set), the held-out real images judged the same way
(`judge_real`), and the held-out split of a data set that has none (`hold_out`)."""

import json
import os

from trainkit import fileio, npz
from trainkit.errors import UserError

from . import report

# folders beside DATA_DIR/train that hold held-out real images, in order of preference
HELDOUT_SPLITS = ("test", "valid")
K_NEIGHBOURS = 3  # precision/recall's k


class Judging:
    """The comparison's feature space and reference images, set by the config.

    features: digits (the embedded digits CNN) or inception (pytorch-fid's Inception-v3: FID).
    reference: digits (the sklearn digits' train split at the samples' size) or train (a fixed
    random subset of `reference_size` images of the config's training folder). A folder
    reference's features are computed once and kept by metrics.reference_features beside a
    folder of links to the chosen images under `cache_dir`."""

    def __init__(self, features="digits", reference="digits", data_train="", reference_size=10000,
                 class_accuracy=True, inception_weights=None, cache_dir=None, heldout_dir=None, heldout_note=None):
        from . import metrics

        self.features, self.reference, self.data_train = features, reference, data_train
        self.reference_size, self.class_accuracy, self.cache_dir = reference_size, class_accuracy, cache_dir
        self.extractor = metrics.Extractor(features, inception_weights)
        # the held-out real images of a folder reference: DATA_DIR/test (else valid) beside train/
        if heldout_dir is None and data_train:
            parent = os.path.dirname(os.path.normpath(data_train))
            heldout_dir = next((os.path.join(parent, s) for s in HELDOUT_SPLITS
                                if os.path.isdir(os.path.join(parent, s))), None)
        self.heldout_dir, self.heldout_note = heldout_dir, heldout_note
        self._ref = {}

    @property
    def fd_name(self):
        return "FID" if self.features == "inception" else "FD-digits"

    def describe_reference(self):
        if self.reference == "digits":
            return "the real digits (train split)"
        n = min(self.reference_size, len(self._files())) if os.path.isdir(self.data_train) else self.reference_size
        return f"a fixed random {n:,} of the training images ({self.data_train})"

    def _files(self):
        from . import fid

        return fid.list_images(self.data_train)

    def reference_labels(self, size):
        """Class labels of the reference images, in reference_features' order, or None. A
        folder's come from openai's file names, CLASS_rest.png, numbered in sorted order of
        the class names as the training data loader numbers them."""
        key = ("labels", size if self.reference == "digits" else "train")
        if key not in self._ref:
            self._ref[key] = self._reference_labels(size)
        return self._ref[key]

    def _reference_labels(self, size):
        if self.reference == "digits":
            from . import digits_features

            return digits_features.digits_images("train", size)[1]
        import numpy as np

        names = [os.path.basename(f) for f in self._files()]
        index = self._class_index()
        if index is None:
            return None
        return np.array([index[names[i].split("_")[0]] for i in self._chosen(len(names))])

    def _class_index(self):
        """{class name: number} of the training folder's openai names (CLASS_rest.png), numbered
        in sorted order of the names as the training data loader numbers them; None without."""
        names = [os.path.basename(f) for f in self._files()]
        if not names or not all("_" in n for n in names):
            return None
        return {c: i for i, c in enumerate(sorted({n.split("_")[0] for n in names}))}

    # --- held-out real images: the reference row (verdict: "indistinguishable from held-out real data")

    def heldout(self, size):
        """(uint8 images, labels or None, description) of the held-out real images at `size`, or
        None when there are none: the digits' test split (datasets/digits.py's, never trained on)
        for the digits reference; else the data set's test (or valid) folder beside train/."""
        key = ("heldout", size)
        if key not in self._ref:
            self._ref[key] = self._heldout(size)
        return self._ref[key]

    def _heldout(self, size):
        if self.reference == "digits":
            from . import digits_features

            images, labels = digits_features.digits_images("test", size)
            return images, labels, (f"the digits' test split ({len(images):,} images, split off by datasets/digits.py "
                                    "and never trained on)")
        if not self.heldout_dir:
            return None
        import numpy as np

        from . import fid
        from .images_to_npz import read_image

        files = fid.list_images(self.heldout_dir)
        if len(files) <= K_NEIGHBOURS:  # precision/recall need more than k images
            return None
        train_shape = self.training_images().shape[1:]
        images = np.stack([read_image(f, train_shape[-1]) for f in files])
        if images.shape[1:] != train_shape or images.shape[1] != size:
            return None  # another size than the samples: not judged like them
        index = self._class_index()
        names = [os.path.basename(f).split("_")[0] for f in files]
        labels = np.array([index[c] for c in names]) if index and all(c in index for c in names) else None
        return images, labels, (self.heldout_note or f"{self.heldout_dir} ({len(images):,} images, a split the runs "
                                "never trained on)")

    def missing_heldout(self):
        """Why there is no real-data row, in words."""
        where = self.heldout_dir or os.path.dirname(os.path.normpath(self.data_train)) or "the data set"
        return (f"no held-out real images: {where} has no {' or '.join(HELDOUT_SPLITS)} split of the training "
                "images' size with more than 3 images, so no run is compared with real data")

    def judged_count(self, count, size):
        """How many of a row's `count` samples are judged: as many as there are held-out real
        images when fewer (FD's bias, and precision/recall's, move with n: every row and the real
        one are judged at one n), else all of them."""
        held = self.heldout(size)
        return min(count, len(held[0])) if held is not None else count

    def training_images(self, size=None):
        """The training images copies are looked for among, in reference_features' order: the
        digits' train split at `size`, or the training folder's chosen reference images."""
        if self.reference == "digits":
            from . import digits_features

            return digits_features.digits_images("train", size)[0]
        if "train_images" not in self._ref:
            import numpy as np
            from PIL import Image

            from .images_to_npz import read_image

            files = self._files()
            with Image.open(files[0]) as im:
                channels = 1 if im.mode in ("L", "1", "I;16", "I", "F") else 3
            self._ref["train_images"] = np.stack([read_image(files[i], channels) for i in self._chosen(len(files))])
        return self._ref["train_images"]

    def copy_limits(self, size):
        """copies.thresholds of the held-out images against the training images, or None."""
        key = ("copy_limits", size)
        if key not in self._ref:
            held = self.heldout(size)
            if held is None:
                self._ref[key] = None
            else:
                from . import copies

                self._ref[key] = copies.thresholds(held[0], self.extractor(held[0])[0], self.training_images(size),
                                                   self.reference_features(size))
        return self._ref[key]

    def _chosen(self, count):
        import numpy as np

        return sorted(np.random.default_rng(0).permutation(count)[: self.reference_size])

    def probe_flags(self, points, samples):
        """The training flags of the quality probe (evaluations.probe) against this judging's
        reference: the digits' train split (at the run's own image size), or the training
        folder's cached features."""
        if not points:
            return []
        flags = ["--probe_points", points, "--probe_samples", samples, "--probe_features", self.features]
        if self.reference == "digits":
            return flags + ["--probe_reference", "digits"]
        self.reference_features(None)  # computed (and cached) before the training that reads it
        flags += ["--probe_reference", self._features_file()]
        if self.extractor.weights:
            flags += ["--probe_inception_weights", self.extractor.weights]
        return flags

    def reference_features(self, size):
        if self.reference == "digits":
            from . import digits_features

            if size not in self._ref:
                self._ref[size] = self.extractor(digits_features.digits_images("train", size)[0])[0]
            return self._ref[size]
        if "train" not in self._ref:
            from . import metrics

            # the one reference-feature cache: beside the folder, keyed by its files' names,
            # sizes and times (an edited training folder is computed again)
            self._ref["train"] = metrics.reference_features(self._reference_folder(), self.extractor)[0]
        return self._ref["train"]

    def _reference_folder(self) -> str:
        """The chosen reference images as a folder of links, `000000.png`... in the chosen order
        (images_to_npz reads such names in index order), under `cache_dir`/reference."""
        files = self._files()
        if not files:
            raise UserError(f"{self.data_train}: no images to judge against")
        chosen = self._chosen(len(files))
        folder = os.path.join(self.cache_dir or self.data_train, "reference", f"train-{len(chosen)}-of-{len(files)}")
        links = {f"{k:06d}{os.path.splitext(files[i])[1]}": os.path.abspath(files[i]) for k, i in enumerate(chosen)}
        current = os.path.isdir(folder) and sorted(os.listdir(folder)) == sorted(links) and all(
            os.readlink(os.path.join(folder, name)) == target for name, target in links.items())
        if not current:
            with fileio.atomic_dir(folder, replace=True) as tmp:
                for name, target in links.items():
                    os.symlink(target, os.path.join(tmp, name))
        return folder

    def _features_file(self) -> str:
        """The features file metrics.reference_features keeps beside the reference folder (the
        probe reads its `features`)."""
        return f"{os.path.normpath(self._reference_folder())}.{self.extractor.kind}-features.npz"


def judge(npz_path: str, seed: int = 0, judging: Judging = None) -> dict:
    """FD (FD-digits, or FID with Inception features) with its bootstrap std, KID, precision/recall
    (k = 3) and the Inception Score formula on the feature network's classes, of a samples npz
    against the reference of `judging` (default: the real digits, train split, at the samples'
    size), and for labelled samples their per-class recall (class_recall with its std, its mean
    and minimum) and the digits-classifier accuracy when the judging asks for it; the copies of
    the training set (evaluations.copies). Judged on the first `judging.judged_count` samples (as
    many as there are held-out real images, the real row's n), the figures of all samples under
    `all_samples`. Also written to `<npz>.metrics.json`."""
    from . import metrics

    judging = judging or Judging()
    images, labels = npz.read_samples(npz_path)
    n = judging.judged_count(len(images), images.shape[1])
    out = judge_images(images[:n], None if labels is None else labels[:n], judging, seed,
                       pairs_path=os.path.join(os.path.dirname(npz_path), CLOSEST_PAIRS))
    out["num_drawn"] = int(len(images))
    if n < len(images):  # every sample drawn, for the record: not compared with rows of another n
        feats = judging.extractor(images)[0]
        m = metrics.evaluate_features(judging.reference_features(images.shape[1]), feats, None, ("fd", "pr"),
                                      seed=seed)
        out["all_samples"] = {"num_samples": int(len(images)), "fd_digits": m["fd"][0], "fd_std": m["fd"][1],
                              "precision": m["precision"], "recall": m["recall"]}
    fileio.write_text(npz_path + ".metrics.json", json.dumps(out, indent=2) + "\n")
    return out


def judge_images(images, labels, judging: Judging, seed: int = 0, pairs_path=None) -> dict:
    """judge's figures of uint8 images (and labels or None), all of them judged."""
    from . import copies, digits_features, metrics

    feats, logits = judging.extractor(images)
    size = images.shape[1]
    ref = judging.reference_features(size)
    m = metrics.evaluate_features(ref, feats, logits, splits=min(10, len(images)), seed=seed,
                                  kid_scale=judging.extractor.kid_scale)
    out = {"fd_digits": m["fd"][0], "fd_std": m["fd"][1], "kid": m["kid"][0], "kid_std": m["kid"][1],
           "precision": m["precision"], "recall": m["recall"], "is": m["is"][0], "is_std": m["is"][1],
           "precision_std": m["precision_std"], "recall_std": m["recall_std"], "num_samples": int(len(images))}
    if labels is not None:
        ref_labels = judging.reference_labels(size)
        if ref_labels is not None:
            # within-class collapse: one image per class passes the overall recall
            per_class = {c: r for c, r in metrics.class_recall(ref, ref_labels, feats, labels).items() if r is not None}
            if per_class:
                stds = metrics.class_recall_std(ref, ref_labels, feats, labels, seed=seed)
                worst = min(per_class, key=per_class.get)
                out.update(class_recall={str(c): r for c, r in per_class.items()},
                           class_recall_std={str(c): stds.get(c) for c in per_class},
                           class_recall_mean=float(sum(per_class.values()) / len(per_class)),
                           class_recall_min=per_class[worst], class_recall_min_class=worst)
    if labels is not None and judging.class_accuracy:
        out["class_accuracy"] = digits_features.accuracy(images, labels, digits_features.load_classifier())
    limits = judging.copy_limits(size)
    if limits is not None:
        out.update(copies.measure(images, feats, judging.training_images(size), ref, limits, pairs_path))
    return out


def judge_real(judging: Judging, size: int, n: int, out_dir: str, probe_samples=None) -> dict:
    """The real-data row: the held-out real images judged exactly like a run's samples, on a fixed
    random `n` of them (all when fewer), and the FD of a fixed `probe_samples` of them (the
    quality probe's n) for the "over training" figure's band; None without held-out images."""
    import numpy as np

    from . import metrics

    held = judging.heldout(size)
    if held is None:
        return None
    images, labels, description = held
    rng = np.random.default_rng(0)
    pick = np.sort(rng.permutation(len(images))[:n]) if n < len(images) else np.arange(len(images))
    os.makedirs(out_dir, exist_ok=True)
    row = judge_images(images[pick], None if labels is None else labels[pick], judging,
                       pairs_path=os.path.join(out_dir, CLOSEST_PAIRS))
    row.update(sampler="–", dir=out_dir, num_drawn=int(len(images)))
    real = {"name": REAL_NAME, "description": description, "dir": out_dir, "num_heldout": int(len(images)),
            "rows": [row], "fd_at": {}}
    if probe_samples and probe_samples <= len(images):
        sub = np.sort(rng.permutation(len(images))[:probe_samples])
        fd, std = metrics.fd_bootstrap(judging.reference_features(size), judging.extractor(images[sub])[0], 50, 0)
        real["fd_at"][str(probe_samples)] = [fd, std]
    fileio.write_text(os.path.join(out_dir, "metrics.json"), json.dumps(real, indent=2) + "\n")
    return real


# the closest (sample, training image) pairs beside a row's samples; not samples_*.npz, which
# find_samples takes for the samples
CLOSEST_PAIRS = "closest-training-images.npz"
REAL_NAME = report.REAL_NAME  # the real-data row's name in the report's tables


HOLDOUT_FRACTION = 0.1


def hold_out(data_train: str, out: str):
    """(training folder, held-out folder, description) for a data set without a test or valid
    split: a fixed random HOLDOUT_FRACTION of DATA_DIR/train (seed 0) is linked into
    <out>/data/heldout and the rest into <out>/data/train, which every run then trains on, so the
    held-out images are never trained on. A folder with subfolders, or too few images for a
    held-out part of more than 3, is left as it is: (data_train, None, None)."""
    import numpy as np

    from . import fid

    files = fid.list_images(data_train)
    n = int(round(len(files) * HOLDOUT_FRACTION))
    nested = any(e.is_dir() for e in os.scandir(data_train))
    if n <= K_NEIGHBOURS or nested:
        return data_train, None, None
    held = set(np.random.default_rng(0).permutation(len(files))[:n].tolist())
    root = os.path.join(out, "data")
    dirs = {"train": os.path.join(root, "train"), "heldout": os.path.join(root, "heldout")}
    for split, final in dirs.items():
        if os.path.isdir(final) and os.listdir(final):  # made by an earlier run of this comparison (--reuse)
            continue
        with fileio.atomic_dir(final, replace=True) as tmp:
            for i, f in enumerate(files):
                if (i in held) == (split == "heldout"):
                    os.symlink(os.path.abspath(f), os.path.join(tmp, os.path.basename(f)))
    note = (f"a fixed random {n:,} of the {len(files):,} images of {data_train} ({100 * HOLDOUT_FRACTION:g}%, seed 0; "
            f"the data set has no {' or '.join(HELDOUT_SPLITS)} split), held out: every run trained on the other "
            f"{len(files) - n:,} ({dirs['train']})")
    return dirs["train"], dirs["heldout"], note

