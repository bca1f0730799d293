# A tiny DDGAN on the bundled digits (16x16 grey) that learns in minutes on a CPU. Batch 8 and three
# D updates per G update, chosen by benchmarks/tune_digits.py (docs/evaluations.md): with one, D sits
# at chance and the result of a run depends on where G's aimless walk ends.
#   python datasets/digits.py --out data/digits16 --size 16
#   bash launch/run.sh local 1 flags/ddgan/digits16.sh ddgan.train --data_dir data/digits16/train
MODEL_FLAGS="--dataset digits --image_size 16 --num_channels 1 --num_channels_dae 16 --ch_mult 1 2 --num_res_blocks 1 --attn_resolutions 8 --nz 16 --z_emb_dim 32 --t_emb_dim 32 --n_mlp 2 --ngf 8"
DIFFUSION_FLAGS="--num_timesteps 4"
TRAIN_FLAGS="--exp digits16 --batch_size 8 --d_steps 3 --num_epoch 30 --lr_d 5e-4 --lr_g 5e-4 --lazy_reg 4 --r1_gamma 0.02 --use_ema --ema_decay 0.99 --save_ckpt_every 5 --random_flip false --log_interval 20"
SAMPLE_FLAGS="--num_samples 1000 --batch_size 100"
# bash launch/run.sh local 1 flags/ddgan/digits16.sh ddgan.interpolate --model_path RUN (docs/ddgan.md, Controllability)
INTERPOLATE_FLAGS="--seeds 0,1,2 --num_steps 8 --mode both --method slerp"
