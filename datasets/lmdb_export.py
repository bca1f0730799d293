"""An image folder to an LMDB database in DDGAN's layout (its datasets_prep/lmdb_datasets.py).

    python datasets/lmdb_export.py SRC --out data/celeba256_lmdb [--format raw|encoded] [--size 256]
                                   [--split train|validation]

Writes OUT/train.lmdb (OUT/validation.lmdb with --split validation), the folder DDGAN's
`--datadir` names. Key str(i).encode() holds the i-th image of SRC in trainkit's folder order
(trainkit.data.list_image_files: .jpg/.jpeg/.png/.gif found recursively, sorted by path), so
`--data_dir OUT` trains on the same images, in the same order, as `--data_dir SRC`.

Values, `--format`:
  encoded  each file's own bytes (a PNG of the resized image when --size is given); DDGAN's
           LMDBDataset(is_encoded=True) and trainkit read these.
  raw      uint8 RGB bytes of a square image, row by row (side = sqrt(len / 3)), what DDGAN's
           LMDBDataset reads by default; needs square images or --size.
`--size N` resizes as trainkit's loader does (box-halving, BICUBIC, centre crop) before storing.
Labels are not stored: DDGAN's LMDB data sets have none. The database is built under a temporary
name and renamed into place, so an interrupted export never leaves a train.lmdb behind.
"""

import io
import os

from PIL import Image

import dataset_tools as tools
from dataset_tools import UserError, run
from trainkit import data, fileio

SPLITS = ("train", "validation")  # DDGAN: root/train.lmdb, root/validation.lmdb
FORMATS = ("encoded", "raw")
BATCH = 256  # images per write transaction
START_MAP_BYTES = 64 * 2**20


def _import_lmdb():
    try:
        import lmdb
    except ImportError:
        raise UserError(f"writing an LMDB needs the lmdb package: {data.LMDB_INSTALL}") from None
    return lmdb


def value_of(path: str, fmt: str, size: int) -> bytes:
    """What key i stores for image file `path`; a UserError naming the file if it is no image."""
    try:
        with open(path, "rb") as f:
            raw_file = f.read()
        image = Image.open(io.BytesIO(raw_file))
        image.load()
    except Exception as e:  # PIL raises many types for bad files; all mean the same here
        raise UserError(f"{path}: cannot read image ({type(e).__name__}: {e})") from None
    if fmt == "encoded" and not size:
        return raw_file
    image = image.convert("RGB")
    if size:
        image = data.center_crop_resize(image, size)
    if fmt == "encoded":
        out = io.BytesIO()
        image.save(out, format="PNG")
        return out.getvalue()
    if image.size[0] != image.size[1]:
        raise UserError(f"{path}: {image.size[0]}x{image.size[1]} is not square; --format raw stores square "
                        "images only (give --size)")
    return image.tobytes()


def export(files: list, dst: str, fmt: str, size: int) -> int:
    """Write `files` as keys 0..N-1 of a new LMDB at `dst` (a directory); the number written."""
    lmdb = _import_lmdb()
    map_size = max(START_MAP_BYTES, 2 * sum(os.path.getsize(p) for p in files))
    with fileio.atomic_dir(dst) as tmp:
        env = lmdb.open(tmp, map_size=map_size, subdir=True, meminit=False, map_async=False)
        try:
            with tools.progress(len(files), f"writing {dst}") as bar:
                for start in range(0, len(files), BATCH):
                    batch = [(str(i).encode(), value_of(files[i], fmt, size))
                             for i in range(start, min(start + BATCH, len(files)))]
                    while True:
                        try:
                            with env.begin(write=True) as txn:
                                for key, value in batch:
                                    txn.put(key, value)
                            break
                        except lmdb.MapFullError:  # the transaction was aborted: grow the map, write it again
                            map_size *= 2
                            env.set_mapsize(map_size)
                    bar.update(len(batch))
            env.sync(True)
        except lmdb.Error as e:
            raise UserError(f"{dst}: cannot write the LMDB ({' '.join(str(e).split())})") from None
        finally:
            env.close()
    return len(files)


@run.main
def main(argv=None):
    p = run.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src", help="image folder to export (searched recursively, as --data_dir reads it)")
    p.add_argument("--out", default="data/lmdb", help="output folder; gets SPLIT.lmdb (DDGAN's --datadir)")
    p.add_argument("--split", choices=SPLITS, default="train", help="which database to write: train.lmdb or "
                   "validation.lmdb")
    p.add_argument("--format", choices=FORMATS, default="encoded", help="value of each key: the image file's "
                   "bytes (encoded) or uint8 RGB bytes of a square image (raw, DDGAN's default)")
    p.add_argument("--size", type=run.NONNEG_INT, default=0, help="resize and centre-crop to SIZE x SIZE before "
                   "storing (0: keep each image as it is)")
    args = p.parse_args(argv)
    if not os.path.isdir(args.src):
        raise UserError(f"{args.src}: no such folder")
    files = data.list_image_files(args.src)
    if not files:
        raise UserError(f"{args.src}: no images (.jpg, .jpeg, .png, .gif) below this folder")
    dst = os.path.join(args.out, f"{args.split}.lmdb")
    if os.path.exists(dst):
        raise UserError(f"{dst}: exists; remove it or choose another --out")
    _import_lmdb()  # fail before any work
    n = export(files, dst, args.format, args.size)
    print(f"{dst}: {n} images ({args.format})")


if __name__ == "__main__":
    main()
