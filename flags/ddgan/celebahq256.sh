# DDGAN on CelebA-HQ 256x256 as in the NVlabs readme (8 GPUs x 4 images, 2 steps).
#   bash launch/run.sh torchrun 8 flags/ddgan/celebahq256.sh ddgan.train --data_dir $DATA_DIR
MODEL_FLAGS="--dataset celeba_256 --image_size 256 --num_channels 3 --num_channels_dae 64 --ch_mult 1 1 2 2 4 4 --num_res_blocks 2 --ngf 64 --z_emb_dim 256 --embedding_type positional"
DIFFUSION_FLAGS="--num_timesteps 2"
TRAIN_FLAGS="--exp ddgan_celebahq_exp1 --batch_size 4 --num_epoch 800 --lr_d 1e-4 --lr_g 2e-4 --lazy_reg 10 --r1_gamma 2. --use_ema --save_content"
SAMPLE_FLAGS="--num_samples 50000 --batch_size 100"
