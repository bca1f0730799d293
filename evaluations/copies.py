"""Copies of the training set: how close each sample comes to its nearest training image, against
how close held-out real images come.

A model trained on a small set can score well by drawing its training images back. Held-out real
images (never trained on) say how close a fresh draw of the data's law comes to the training set
by chance: the criterion is the COPY_QUANTILE (5%) quantile of their nearest-training distances.
A sample closer than that is "closer to a training image than held-out real images usually are";
held-out data has COPY_QUANTILE of its images there by construction, and a model that copies has
far more. The share is measured in two spaces:

- pixels: root-mean-square difference of the images in [0, 1] (an exact copy is at 0; the
  verdict's criterion, since a copy is a copy whatever a feature network makes of it);
- features: Euclidean distance in the comparison's feature space (near-copies that moved a little).

The share's error bar is binomial over the samples (each sample is closer or not, independently
given the training set and the threshold).
"""

import math

import numpy as np
import torch

from trainkit import fileio

COPY_QUANTILE = 0.05
# the training images shown for each row in the report's figure: its closest pairs
PAIRS = 8


def pixel_vectors(images) -> torch.Tensor:
    """uint8 N,H,W,C -> float64 N,(H*W*C) in [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(images)).reshape(len(images), -1)
    return x.double().div_(255.0)


def nearest(points, train, block=1024):
    """(distance, index) of each point's nearest row of `train` (Euclidean)."""
    points, train = torch.as_tensor(points, dtype=torch.float64), torch.as_tensor(train, dtype=torch.float64)
    dist, idx = [], []
    for i in range(0, len(points), block):
        d = torch.cdist(points[i:i + block], train)
        v, j = d.min(dim=1)
        dist.append(v)
        idx.append(j)
    return torch.cat(dist).numpy(), torch.cat(idx).numpy()


def pixel_nearest(images, train_images):
    """(RMS pixel distance in [0, 1], index) of each image's nearest training image."""
    d, j = nearest(pixel_vectors(images), pixel_vectors(train_images))
    return d / math.sqrt(pixel_vectors(images[:1]).shape[1]), j


def share(distances, threshold) -> tuple:
    """(share of distances below the threshold, its binomial std over the samples)."""
    n = len(distances)
    p = float(np.mean(np.asarray(distances) < threshold)) if n else float("nan")
    return p, math.sqrt(p * (1 - p) / n) if n else float("nan")


def thresholds(heldout_images, heldout_features, train_images, train_features) -> dict:
    """The COPY_QUANTILE quantile of held-out real images' nearest-training distances, in pixels
    (None when the images differ in size from the training images) and in features."""
    out = {"quantile": COPY_QUANTILE}
    out["features"] = float(np.quantile(nearest(heldout_features, train_features)[0], COPY_QUANTILE))
    if train_images is not None and heldout_images.shape[1:] == train_images.shape[1:]:
        out["pixels"] = float(np.quantile(pixel_nearest(heldout_images, train_images)[0], COPY_QUANTILE))
    return out


def measure(images, features, train_images, train_features, limits: dict, pairs_path=None) -> dict:
    """Each sample's nearest training image in both spaces and the shares closer than `limits`
    (thresholds()); with `pairs_path`, the PAIRS closest (sample, training image) pairs in pixels
    are written there (npz: samples, train, distance, sample_index, train_index) for the figure,
    with every sample's nearest training image in both spaces (nearest_{pixels,features}_index
    and _distance, in the training images' order)."""
    out = {}
    fd, fj = nearest(features, train_features)
    out["copies_features"], out["copies_features_std"] = share(fd, limits["features"])
    out["nearest_train_features_median"] = float(np.median(fd))
    if limits.get("pixels") is not None and train_images is not None and images.shape[1:] == train_images.shape[1:]:
        pd, pj = pixel_nearest(images, train_images)
        out["copies"], out["copies_std"] = share(pd, limits["pixels"])
        out["nearest_train_pixels_median"] = float(np.median(pd))
        out["nearest_train_pixels_min"] = float(pd.min())
        if pairs_path:
            order = np.argsort(pd, kind="stable")[:PAIRS]
            with fileio.atomic_path(pairs_path) as tmp:
                with open(tmp, "wb") as f:
                    np.savez(f, samples=images[order], train=train_images[pj[order]], distance=pd[order],
                             sample_index=order, train_index=pj[order],
                             # every sample's nearest training image, in both spaces
                             nearest_pixels_index=pj, nearest_pixels_distance=pd,
                             nearest_features_index=fj, nearest_features_distance=fd)
            out["closest_pairs"] = pairs_path
    out["copy_threshold"] = {k: v for k, v in limits.items() if v is not None}
    return out
