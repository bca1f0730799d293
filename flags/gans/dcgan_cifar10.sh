# DCGAN on CIFAR-10, seed 003's configuration (the PyTorch DCGAN tutorial network): 64 px,
# batch 128, nz 100, ngf = ndf = 64, 50 epochs, lr_g 1.6e-4, lr_d 1.25e-4, Adam beta1 0.5.
# Seed 003 trains on one GPU, so --batch_size 128 (per rank) is its setting with 1 process.
# CIFAR-10's 32 px images are upscaled to 64 px by the loader (BICUBIC), as that run did.
#   bash launch/run.sh torchrun 1 flags/gans/dcgan_cifar10.sh gans.train
#   bash launch/run.sh torchrun 1 flags/gans/dcgan_cifar10.sh gans.sample --model_path RUN_DIR
MODEL_FLAGS="--model dcgan --image_size 64 --num_channels 3 --nz 100 --ngf 64 --ndf 64"
TRAIN_FLAGS="--data_dir data/cifar10/train --batch_size 128 --epochs 50 --lr_g 1.6e-4 --lr_d 1.25e-4 --beta1 0.5 --beta2 0.999 --loss bce --save_interval 2000 --log_interval 10"
# seed 003 samples 50k images for FID
SAMPLE_FLAGS="--num_samples 50000 --batch_size 500"
INTERPOLATE_FLAGS="--seeds 0,1,2,3 --num_steps 10"
