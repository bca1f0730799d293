# Seed 000 (../shared/seeds/000_*.txt, "Diffusion vs. GANs"): GAN, cGAN, DDPM and conditional DDPM
# on FashionMNIST at 32 px, with the seed's epochs and batch sizes (see the flag files). Run it
# with the four Fashion-MNIST files downloaded into data/downloads/fashion_mnist:
#   python -m evaluations.compare --config flags/compare/seed000_fashion_mnist.sh [--data_root DIR]
# It converts them to data/fashion_mnist32 first (datasets/fashion_mnist.py --size 32). The seed's
# pictures go to results/: gan_samples.png, cgan_samples.png, ddpm_samples.png, cddpm_samples.png
# (conditional grids one row per class) and loss_curve.png. Judged against 10,000 training images
# in the digits CNN's feature space (a small learned space, not Inception: comparable between these
# runs, not with published FIDs); the digits classifier's class accuracy means nothing here.
DATA_DIR=data/fashion_mnist32
DATA_ROOT=data/downloads/fashion_mnist
DATA_NEEDS="train-images-idx3-ubyte.gz|train-images-idx3-ubyte train-labels-idx1-ubyte.gz|train-labels-idx1-ubyte t10k-images-idx3-ubyte.gz|t10k-images-idx3-ubyte t10k-labels-idx1-ubyte.gz|t10k-labels-idx1-ubyte"
DATA_PREP="python datasets/fashion_mnist.py {data_root} --out {data_dir} --size 32"
NPROC=2
MINUTES=90
TRAIN_FRACTION=0.7
NUM_SAMPLES=500
SAMPLE_BATCH=125
FEATURES=digits
REFERENCE=train
REFERENCE_SIZE=10000
CLASS_ACCURACY=no

# --class_labels 0,...,9: the conditional DDPM's samples are class-balanced, like the data.
RUNS="
gan   | flags/gans/dcgan_fashion_mnist.sh                 | gans               | 1 | --max_steps 1000000 |
cgan  | flags/gans/cdcgan_fashion_mnist.sh                | gans               | 1 | --max_steps 1000000 |
ddpm  | flags/improved_diffusion/ddpm_fashion_mnist32.sh  | improved_diffusion | 3 | --max_steps 1000000 | ddpm-1000: --timestep_respacing 1000 ; ddim50: --timestep_respacing ddim50 --use_ddim True
cddpm | flags/improved_diffusion/cddpm_fashion_mnist32.sh | improved_diffusion | 3 | --max_steps 1000000 | ddpm-1000: --timestep_respacing 1000 --class_labels 0,1,2,3,4,5,6,7,8,9 ; ddim50: --timestep_respacing ddim50 --use_ddim True --class_labels 0,1,2,3,4,5,6,7,8,9
"
PICTURES="
gan   | gan_samples.png
cgan  | cgan_samples.png
ddpm  | ddpm_samples.png  | ddpm-1000
cddpm | cddpm_samples.png | ddpm-1000
"
LOSS_PICTURE=loss_curve.png
# Control stages: each run's flag file asks for them (INTERPOLATE_FLAGS: <package>.interpolate,
# EDIT_FLAGS: <package>.edit); these flags come after the flag file's ({data}: the folder the
# runs trained on): the edits start from training images.
EDIT_FLAGS="--images {data}"
