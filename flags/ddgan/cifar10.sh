# DDGAN on CIFAR-10 32x32 as in the paper / NVlabs readme (4 GPUs x 64) and project seed 003.
# Data: an image folder or npz of the CIFAR-10 training set, e.g. DATA_DIR=data/cifar10/train.
#   bash launch/run.sh torchrun 4 flags/ddgan/cifar10.sh ddgan.train --data_dir $DATA_DIR
# On one GPU, the same 256-image update: --batch_size 256 --grad_accum 4.
MODEL_FLAGS="--dataset cifar10 --image_size 32 --num_channels 3 --num_channels_dae 128 --ch_mult 1 2 2 2 --num_res_blocks 2 --nz 100 --z_emb_dim 256 --n_mlp 4 --ngf 64 --embedding_type positional"
DIFFUSION_FLAGS="--num_timesteps 4"
TRAIN_FLAGS="--exp ddgan_cifar10_exp1 --batch_size 64 --num_epoch 1800 --lr_d 1.25e-4 --lr_g 1.6e-4 --lazy_reg 15 --r1_gamma 0.02 --use_ema --ema_decay 0.9999 --save_content"
SAMPLE_FLAGS="--num_samples 50000 --batch_size 200"
