# Seed 002 (../shared/seeds/002_*.txt, the course notebooks): a fully connected vanilla GAN, its
# cGAN and a DDPM on MNIST at the native 28 px, each with the seed's own hyper-parameters (see
# the flag files). Run it with the four MNIST files downloaded into data/downloads/mnist:
#   python -m evaluations.compare --config flags/compare/seed002_mnist.sh [--data_root DIR]
# It converts them to data/mnist28 first (datasets/mnist.py). Judged in the digits CNN's
# feature space against 10,000 training images. results/ gets gan_samples.png, cgan_samples.png
# (one row per class), ddpm_samples.png and loss_curve.png.
DATA_DIR=data/mnist28
DATA_ROOT=data/downloads/mnist
DATA_NEEDS="train-images-idx3-ubyte.gz|train-images-idx3-ubyte train-labels-idx1-ubyte.gz|train-labels-idx1-ubyte t10k-images-idx3-ubyte.gz|t10k-images-idx3-ubyte t10k-labels-idx1-ubyte.gz|t10k-labels-idx1-ubyte"
DATA_PREP="python datasets/mnist.py {data_root} --out {data_dir}"
NPROC=2
MINUTES=60
TRAIN_FRACTION=0.7
NUM_SAMPLES=500
SAMPLE_BATCH=125
FEATURES=digits
REFERENCE=train
REFERENCE_SIZE=10000
CLASS_ACCURACY=yes

# NAME | FLAG_FILE | PACKAGE | SHARE | extra train flags | samplers (see flags/compare/digits.sh)
# --max_steps 1000000: the time share stops training, not the seed's epoch count.
RUNS="
gan  | flags/gans/gan_mnist28.sh                         | gans               | 1 | --max_steps 1000000 |
cgan | flags/gans/cgan_mnist28.sh                        | gans               | 1 | --max_steps 1000000 |
ddpm | flags/improved_diffusion/ddpm_mnist28_linear.sh   | improved_diffusion | 3 | --max_steps 1000000 | ddpm-1000: --timestep_respacing 1000 ; ddim50: --timestep_respacing ddim50 --use_ddim True
"
# RUN | the seed's file name | sampler (default: the run's first)
PICTURES="
gan  | gan_samples.png
cgan | cgan_samples.png
ddpm | ddpm_samples.png | ddpm-1000
"
LOSS_PICTURE=loss_curve.png
# Control stages: each run's flag file asks for them (INTERPOLATE_FLAGS: <package>.interpolate,
# EDIT_FLAGS: <package>.edit); these flags come after the flag file's ({data}: the folder the
# runs trained on): the edits start from training images.
EDIT_FLAGS="--images {data}"
