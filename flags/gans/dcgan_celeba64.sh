# Seed 004's DCGAN on CelebA 64 px (../shared/seeds/004_*.txt): "based on the DCGAN architecture",
# a generator of transposed convolutions up to 64 x 64 and a convolutional discriminator. The seed
# gives no hyper-parameters; these are the DCGAN paper's and the PyTorch DCGAN tutorial's on CelebA:
# nz 100, ngf = ndf = 64 (ngf*8 at 4x4), Adam lr 2e-4, beta1 0.5, batch 128, 5 epochs, BCE.
# Data: python datasets/celeba.py img_align_celeba.zip --out data/celeba64   (crop 140, 64 px)
#   bash launch/run.sh mpiexec 2 flags/gans/dcgan_celeba64.sh gans.train
#   bash launch/run.sh mpiexec 2 flags/gans/dcgan_celeba64.sh gans.sample --model_path RUN_DIR
MODEL_FLAGS="--model dcgan --image_size 64 --num_channels 3 --nz 100 --ngf 64 --ndf 64"
TRAIN_FLAGS="--data_dir data/celeba64/train --batch_size 128 --epochs 5 --lr_g 2e-4 --lr_d 2e-4 --beta1 0.5 --beta2 0.999 --loss bce --save_interval 2000 --log_interval 50"
SAMPLE_FLAGS="--num_samples 10000 --batch_size 500"
INTERPOLATE_FLAGS="--seeds 0,1,2,3 --num_steps 10"
