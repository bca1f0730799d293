"""Quality over training: the FD of a small fixed sample set at evenly spaced points of a run.

Loss curves do not show quality, and a GAN's or a diffusion model's loss is not comparable
with another's. A run trained with `--probe_points K` gets K rows in RUN_DIR/quality.csv: at
K evenly spaced points of its budget (the last at its end), rank 0 samples `--probe_samples`
images with the family's cheapest sampler, on the same noise every time, from the weights its
sampler would use (the EMA where the family samples from it), and measures their Fréchet
distance, with the std of 50 bootstrap resamples, against a fixed reference:

- `--probe_features digits` (default): FD-digits, in the embedded digits CNN's feature space,
  against the sklearn digits' train split at the run's image size (`--probe_reference digits`)
  or against a features file;
- `--probe_features inception`: FID's feature space (pytorch-fid's Inception-v3); the
  reference must then be a features file: an .npz with `features` (N, 2048), as the
  comparison caches its reference (evaluations.judging, through metrics.reference_features).

The --probe_* flags are declared once, with the loop's, by trainkit.loopflags.

The training loop (trainkit.loop) decides when; this module measures. The comparison's
report plots the rows against training seconds and images seen.

Each family's `Task.probe_images` names its sampler: gans and DDGAN their only one; improved
diffusion DDIM with 10 steps from t = T-1 (improved_diffusion.samplers.sample_loop).
"""

import os

import numpy as np

from trainkit import dist
from trainkit.errors import UserError

from . import metrics

BOOTSTRAP = 50


class Probe:
    """`points` and `num_samples` for trainkit.loop; called on rank 0 with uint8 N,H,W,C images
    (and labels, unused), returns {'fd', 'fd_std'}."""

    def __init__(self, points, num_samples, features="digits", reference="digits", image_size=None,
                 inception_weights=None):
        self.points, self.num_samples = int(points), int(num_samples)
        self.features, self.reference, self.image_size = features, reference, image_size
        self.inception_weights = inception_weights or None
        self.name = "FID" if features == "inception" else "FD-digits"
        self._extractor = None
        self._ref_stats = None
        if reference != "digits" and not os.path.isfile(reference):
            raise UserError(f"--probe_reference {reference}: no such features file (or choose digits)")
        if reference == "digits" and features != "digits":
            raise UserError("--probe_features inception needs --probe_reference FILE.npz of Inception features")

    def prepare(self):
        """Load the reference (rank 0): a bad reference fails before training starts."""
        if self._ref_stats is not None:
            return self
        if self.reference == "digits":
            from . import digits_features

            self._extractor = metrics.Extractor("digits")
            ref = self._extractor(digits_features.digits_images("train", self.image_size)[0])[0]
        else:
            try:
                with np.load(self.reference) as z:
                    ref = np.asarray(z["features"], dtype=np.float64)
            except (OSError, ValueError, KeyError) as e:
                raise UserError(f"--probe_reference {self.reference}: not a features .npz with 'features' ({e})") \
                    from None
            self._extractor = metrics.Extractor(self.features, self.inception_weights)
        self._ref_stats = ref
        return self

    def __call__(self, images, labels=None) -> dict:
        self.prepare()
        feats = self._extractor(np.asarray(images))[0]
        fd, std = metrics.fd_bootstrap(self._ref_stats, feats, BOOTSTRAP, seed=0)
        return {"fd": fd, "fd_std": std}


def from_args(args, image_size):
    """The run's Probe, or None with --probe_points 0. Rank 0 reads the reference now."""
    if not args.probe_points:
        return None
    probe = Probe(args.probe_points, args.probe_samples, args.probe_features, args.probe_reference, image_size,
                  args.probe_inception_weights)
    if probe.features == "inception":
        from . import fid

        # every rank, before training: finding (or fetching) the default weights is collective, and
        # the probe itself runs on rank 0 alone while the other ranks train (a hang there)
        probe.inception_weights = fid.ensure_weights(probe.inception_weights)
    if dist.is_main():
        with dist.rank_zero_only("probe: reading the reference"):
            probe = probe.prepare()
    return probe
