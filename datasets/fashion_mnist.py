"""Fashion-MNIST from its official IDX .gz files to image folders.

    python datasets/fashion_mnist.py DOWNLOAD_DIR --out data/fashion_mnist [--size 32]

Fashion-MNIST ships the same four file names in the same IDX format as MNIST (labels 0..9:
T-shirt/top .. ankle boot), so this is mnist.py's conversion with another default --out.
"""

import mnist
from dataset_tools import run


@run.main
def main(argv=None):
    mnist.convert(argv, "Fashion-MNIST", "data/fashion_mnist")


if __name__ == "__main__":
    main()
