"""evaluations.probe, the quality probe's measurement: FD-digits of a few samples against the
digits' train split (or a features file), with a bootstrap std; bad references refused by name."""

import numpy as np
import pytest

from evaluations import digits_features, metrics, probe
from trainkit.errors import UserError


def test_the_probe_is_fd_digits_with_its_bootstrap_std():
    p = probe.Probe(4, 200, image_size=16).prepare()
    real, _ = digits_features.digits_images("test", 16)
    noise = np.random.default_rng(0).integers(0, 256, size=(200, 16, 16, 1), dtype=np.uint8)
    good, bad = p(real[:200]), p(noise)
    ref = metrics.Extractor("digits")(digits_features.digits_images("train", 16)[0])[0]
    expected = metrics.fd_bootstrap(ref, metrics.Extractor("digits")(real[:200])[0], probe.BOOTSTRAP, seed=0)
    assert (good["fd"], good["fd_std"]) == pytest.approx(expected)
    assert good["fd_std"] > 0 and bad["fd"] > 20 * good["fd"]


def test_a_features_file_is_the_reference(tmp_path):
    real, _ = digits_features.digits_images("train", 16)
    feats = metrics.Extractor("digits")(real)[0]
    path = tmp_path / "ref.npz"
    np.savez(path, features=feats)
    from_file = probe.Probe(2, 50, reference=str(path), image_size=16).prepare()
    from_digits = probe.Probe(2, 50, image_size=16).prepare()
    assert from_file(real[:50])["fd"] == pytest.approx(from_digits(real[:50])["fd"])


def test_bad_references_are_refused_by_name(tmp_path):
    with pytest.raises(UserError, match="--probe_reference .*missing.npz: no such features file"):
        probe.Probe(2, 50, reference=str(tmp_path / "missing.npz"))
    with pytest.raises(UserError, match="--probe_features inception needs --probe_reference FILE.npz"):
        probe.Probe(2, 50, features="inception")
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, mu=np.zeros(3))
    with pytest.raises(UserError, match="wrong.npz: not a features .npz with 'features'"):
        probe.Probe(2, 50, reference=str(wrong)).prepare()


def test_every_family_trains_with_the_probes_flags():
    from ddgan import train as ddgan_train
    from gans import train as gans_train
    from improved_diffusion import train as id_train

    for parser in (gans_train.create_argparser(), ddgan_train.create_parser(), id_train.create_argparser()):
        args = parser.parse_args(["--probe_points", "3", "--probe_samples", "64"])
        assert (args.probe_points, args.probe_samples, args.probe_features, args.probe_reference) == (3, 64, "digits",
                                                                                                     "digits")
        assert probe.from_args(parser.parse_args([]), 16) is None  # off unless asked
