"""CelebA (aligned) to 64 x 64 image folders with the DCGAN recipe: centre crop 140, resize 64.

    python datasets/celeba.py img_align_celeba.zip --out data/celeba64 [--fid_stats train]

Reads `img_align_celeba.zip` (or its extracted `img_align_celeba/` folder) as downloaded by the
user. Images are split by CelebA's official partition (list_eval_partition.txt), which is a pure
function of the file number: 000001-162770 train, 162771-182637 valid, 182638-202599 test;
`--partition FILE` reads the list instead. Each image is centre-cropped to --crop (140) and
resized to --size (64) with BICUBIC. CelebA has no classes: every label is 0.
"""

import os
import re
import zipfile

from PIL import Image

import dataset_tools as tools
from dataset_tools import UserError, run

SPLITS = ("train", "valid", "test")
_NUMBER = re.compile(r"^(\d+)\.(jpg|jpeg|png)$", re.IGNORECASE)


def official_split(number: int) -> str:
    return "train" if number <= 162770 else ("valid" if number <= 182637 else "test")


def read_partition(path: str) -> dict:
    try:
        with open(path) as f:
            rows = [line.split() for line in f if line.strip()]
        return {name: SPLITS[int(part)] for name, part in rows}
    except (OSError, ValueError, IndexError) as e:
        raise UserError(f"{path}: not a CelebA list_eval_partition.txt ({e})") from None


class Source:
    """The image files of the zip or folder, in file-number order, opened on demand."""

    def __init__(self, path: str):
        self.path = path
        if not os.path.exists(path):
            raise UserError(f"{path}: no such file or directory")
        self.zip = None
        if os.path.isdir(path):
            names = [os.path.join(dp, n) for dp, _, ns in os.walk(path) for n in ns]
        else:
            try:
                self.zip = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError) as e:
                raise UserError(f"{path}: not a readable zip archive ({e})") from None
            names = [n for n in self.zip.namelist() if not n.endswith("/")]
        self.names = sorted((n for n in names if _NUMBER.match(os.path.basename(n))),
                            key=lambda n: int(_NUMBER.match(os.path.basename(n)).group(1)))
        if not self.names:
            raise UserError(f"{path}: no numbered CelebA images (000001.jpg ...) inside")

    def open(self, name: str) -> Image.Image:
        where = f"{self.path}:{name}" if self.zip else name
        try:
            if self.zip:
                with self.zip.open(name) as f:
                    image = Image.open(f)
                    image.load()
            else:
                image = Image.open(name)
                image.load()
            return image.convert("RGB")
        except Exception as e:
            raise UserError(f"{where}: cannot read image ({e})") from None


def items(source: Source, names, crop: int, size: int):
    for name in names:
        image = source.open(name)
        w, h = image.size
        if w < crop or h < crop:
            raise UserError(f"{name}: {w}x{h} is smaller than --crop {crop}")
        left, top = (w - crop) // 2, (h - crop) // 2
        image = image.crop((left, top, left + crop, top + crop)).resize((size, size), resample=Image.BICUBIC)
        yield image, 0


@run.main
def main(argv=None):
    p = tools.parser("CelebA -> OUT/{train,valid,test}/0_{index:05d}.png (crop 140, resize 64)", "data/celeba64")
    p.add_argument("archive", help="img_align_celeba.zip or the extracted img_align_celeba folder")
    p.add_argument("--crop", type=run.POSITIVE_INT, default=140,
                   help="side of the centre square cut from each image first")
    p.add_argument("--size", type=run.POSITIVE_INT, default=64,
                   help="output side: the crop is resized to SIZE x SIZE (BICUBIC)")
    p.add_argument("--partition", default="", help="list_eval_partition.txt (default: official number ranges)")
    args = p.parse_args(argv)
    if args.size < 1 or args.crop < 1:
        raise UserError("--size and --crop must be positive")
    for split in SPLITS:
        tools.check_new_split(args.out, split)
    source = Source(args.archive)
    partition = read_partition(args.partition) if args.partition else None
    by_split = {s: [] for s in SPLITS}
    for name in source.names:
        base = os.path.basename(name)
        split = partition.get(base) if partition is not None else official_split(int(_NUMBER.match(base).group(1)))
        if split is not None:
            by_split[split].append(name)
    written = []
    for split in SPLITS:
        if by_split[split]:
            n = tools.write_split(args.out, split, items(source, by_split[split], args.crop, args.size),
                                  total=len(by_split[split]))
            written.append(split)
            print(f"{os.path.join(args.out, split)}: {n} images")
    tools.fid_statistics(args, written)


if __name__ == "__main__":
    main()
