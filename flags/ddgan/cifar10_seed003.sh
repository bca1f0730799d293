# Seed 003's CIFAR-10 run: one GPU, batch 128, 50 epochs (its README's train_ddgan.py command).
#   bash launch/run.sh local 1 flags/ddgan/cifar10_seed003.sh ddgan.train --data_dir $DATA_DIR
MODEL_FLAGS="--dataset cifar10 --image_size 32 --num_channels 3 --num_channels_dae 128 --ch_mult 1 2 2 2 --num_res_blocks 2 --nz 100 --z_emb_dim 256 --n_mlp 4 --ngf 64 --embedding_type positional"
DIFFUSION_FLAGS="--num_timesteps 4"
TRAIN_FLAGS="--exp ddgan_cifar10_exp1 --batch_size 128 --num_epoch 50 --lr_d 1.25e-4 --lr_g 1.6e-4 --lazy_reg 15 --r1_gamma 0.02 --use_ema --ema_decay 0.9999 --save_content"
SAMPLE_FLAGS="--num_samples 50000 --batch_size 200"
