# DDGAN on LSUN Church Outdoor 256x256 as in the NVlabs readme (8 GPUs x 8 images).
# Data: LSUN's church_outdoor_train_lmdb folder (or an image folder of it); --dataset lsun trains on
# its first 120,000 images, as the reference's Subset(range(0, 120000)).
#   bash launch/run.sh torchrun 8 flags/ddgan/lsun_church.sh ddgan.train --data_dir $DATA_DIR
MODEL_FLAGS="--dataset lsun --image_size 256 --num_channels 3 --num_channels_dae 64 --ch_mult 1 1 2 2 4 4 --num_res_blocks 2 --ngf 64 --z_emb_dim 256 --embedding_type positional"
DIFFUSION_FLAGS="--num_timesteps 4"
TRAIN_FLAGS="--exp ddgan_lsun_exp1 --batch_size 8 --num_epoch 500 --lr_d 1e-4 --lr_g 1.6e-4 --lazy_reg 10 --r1_gamma 1. --use_ema --ema_decay 0.999 --save_content"
SAMPLE_FLAGS="--num_samples 50000 --batch_size 100"
