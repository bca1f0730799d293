"""openai's `improved_diffusion.image_datasets.load_data`, on trainkit.data.

`load_data(*, data_dir, batch_size, image_size, class_cond=False, deterministic=False)` returns
openai's infinite iterator of `(images, kwargs)`: images a float32 N,C,H,W tensor in [-1, 1]
(RGB, openai's resize and centre crop), kwargs `{"y": int64 labels}` with `class_cond` (the
label is the file name before its first "_"), else `{}`. Each rank gets `batch_size` images of
its own. Images are shuffled (the order follows torch's global seed on rank 0) unless
`deterministic`, which visits each rank's share (every world_size-th file, as openai shards)
in file order; batches never cross an epoch's end (openai's drop_last).

Differences from openai's: the folder is decoded when load_data is called (not at the first
`next`), so a bad file or a folder smaller than a batch fails at once with a one-line
trainkit.errors.UserError (openai's loader hangs on a shard smaller than the batch, #77); a
samples .npz works as data_dir too. All ranks call load_data (it agrees on the shuffle seed).
"""

import torch

from trainkit import data, dist
from trainkit.errors import UserError


def load_data(*, data_dir, batch_size, image_size, class_cond=False, deterministic=False):
    """An infinite iterator of (images N,C,H,W in [-1, 1], {"y": labels} or {})."""
    if not data_dir:
        raise UserError("load_data: unspecified data directory")
    if int(batch_size) < 1:
        raise UserError(f"load_data: batch_size {batch_size} must be positive")
    dataset = data.load_dataset(data_dir, image_size, class_cond=class_cond, channels=3)
    if deterministic:
        return _in_order(dataset, batch_size)
    seed = int(torch.randint(0, 2**31 - 1, ()))
    if dist.world_size() > 1:
        seed = dist.broadcast_object(seed)  # every rank cuts the same permutation into disjoint slices
    return _with_labels(data.Batches(dataset, batch_size, seed=seed))


def _with_labels(batches):
    for images, labels in batches:
        yield images, ({"y": labels} if labels is not None else {})


def _in_order(dataset, batch_size):
    mine = data.shard(len(dataset))
    if len(mine) < batch_size:
        raise UserError(f"{dataset.source}: this rank's share is {len(mine)} images, fewer than one batch of "
                        f"{batch_size}")

    def batches():
        while True:
            for start in range(0, len(mine) - batch_size + 1, batch_size):
                yield mine[start:start + batch_size]

    def generate():
        for chunk in batches():
            images = dataset.images[chunk].float().div_(127.5).sub_(1.0)
            yield images, ({"y": dataset.labels[chunk]} if dataset.labels is not None else {})

    return generate()
