"""Issue 38, item 4: one reference-feature cache. The main job's folder reference (a fixed random
subset of the training images) is cached by metrics.reference_features, keyed by the files'
names, sizes and times; the second cache compare kept, keyed by the image counts only, served the
old features after the training folder changed."""

import shutil

import numpy as np
from PIL import Image

from evaluations import compare, metrics


def test_an_edited_training_folder_is_judged_against_its_new_images(tmp_path, digits):
    folder = tmp_path / "train"
    folder.mkdir()
    for f in sorted(digits(16).iterdir())[:40]:
        shutil.copy(f, folder / f.name)
    judging = compare.Judging("digits", "train", str(folder), reference_size=30, cache_dir=str(tmp_path / "cmp"))
    before = judging.reference_features(None)
    path = judging.probe_flags(1, 10)[-1]  # the probe reads the one cache's file
    with np.load(path) as z:
        assert np.array_equal(z["features"], before)
    assert np.array_equal(before, metrics.reference_features(judging._reference_folder(), judging.extractor)[0])

    # the same number of images, other pixels: a new comparison over this folder sees them
    for f in sorted(folder.iterdir()):
        with Image.open(f) as im:
            Image.fromarray(255 - np.asarray(im)).save(f)
    after = compare.Judging("digits", "train", str(folder), reference_size=30,
                            cache_dir=str(tmp_path / "cmp")).reference_features(None)
    assert after.shape == before.shape and not np.allclose(after, before)
