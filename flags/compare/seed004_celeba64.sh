# Seed 004 (../shared/seeds/004_*.txt): DCGAN and a U-Net diffusion model with attention (1000
# steps) on CelebA 64 px, each judged by FID. A GPU-sized job: with img_align_celeba.zip
# downloaded into data/downloads/celeba,
#   python -m evaluations.compare --config flags/compare/seed004_celeba64.sh [--data_root DIR] [--nproc 8]
# converts it to data/celeba64 first (datasets/celeba.py: crop 140, 64 px). FID uses pytorch-fid's
# Inception weights (downloaded to torch hub's cache when absent, or --inception_weights FILE),
# against 5,000 training images; 1,000 samples per sampler (FID at this count is biased upwards:
# compare these rows with each other, not with 50k-sample FIDs). results/ gets
# dcgan_samples.png, ddpm_samples.png and loss_curve.png.
DATA_DIR=data/celeba64
DATA_ROOT=data/downloads/celeba
DATA_NEEDS="img_align_celeba.zip|img_align_celeba"
DATA_PREP="python datasets/celeba.py {data_root}/{found[0]} --out {data_dir}"
NPROC=2
MINUTES=240
TRAIN_FRACTION=0.75
NUM_SAMPLES=1000
SAMPLE_BATCH=100
FEATURES=inception
REFERENCE=train
REFERENCE_SIZE=5000

RUNS="
dcgan | flags/gans/dcgan_celeba64.sh           | gans               | 1 | --max_steps 1000000 |
ddpm  | flags/improved_diffusion/celeba64.sh   | improved_diffusion | 3 | --max_steps 1000000 | ddpm-1000: --timestep_respacing 1000 ; ddim50: --timestep_respacing ddim50 --use_ddim True
"
PICTURES="
dcgan | dcgan_samples.png
ddpm  | ddpm_samples.png | ddpm-1000
"
LOSS_PICTURE=loss_curve.png
# Control stages: each run's flag file asks for them (INTERPOLATE_FLAGS: <package>.interpolate,
# EDIT_FLAGS: <package>.edit); these flags come after the flag file's ({data}: the folder the
# runs trained on): the edits start from training images.
EDIT_FLAGS="--images {data}"
