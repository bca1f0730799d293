# DCGAN on FashionMNIST, seed 000's GAN setting: images resized to 32 px (the loader turns the
# 28 px originals into 32 px), grey, 10 epochs, batch 64. Seed 000 does not state its learning
# rates; the DCGAN paper's 2e-4 / beta1 0.5 are used. For its conditional GAN use
# flags/gans/cdcgan_fashion_mnist.sh.
MODEL_FLAGS="--model dcgan --image_size 32 --num_channels 1 --nz 100 --ngf 64 --ndf 64"
TRAIN_FLAGS="--data_dir data/fashion_mnist/train --batch_size 64 --epochs 10 --lr_g 2e-4 --lr_d 2e-4 --beta1 0.5 --beta2 0.999 --loss bce --save_interval 2000 --log_interval 10"
SAMPLE_FLAGS="--num_samples 10000 --batch_size 500"
INTERPOLATE_FLAGS="--seeds 0,1,2,3 --num_steps 10"
