# Seed 004's diffusion model on CelebA 64 px (../shared/seeds/004_*.txt): "a U-Net model with
# attention", "1000 timesteps". The seed ran a pre-trained model from a library built on openai's
# code and gives no more; the rest is openai's 64 px configuration (Nichol & Dhariwal 2021):
# 128 channels at levels (1,2,3,4), three res blocks, attention at 16 and 8 px with 4 heads,
# learned variances (hybrid loss), cosine schedule, lr 1e-4, dropout 0.1.
# Data: python datasets/celeba.py img_align_celeba.zip --out data/celeba64   (crop 140, 64 px)
#   bash launch/run.sh torchrun 8 flags/improved_diffusion/celeba64.sh improved_diffusion.train
#   bash launch/run.sh torchrun 8 flags/improved_diffusion/celeba64.sh improved_diffusion.sample --model_path RUN_DIR
# Sampling uses all 1000 steps, as the seed's model does (--timestep_respacing 250 is 4x faster).
MODEL_FLAGS="--image_size 64 --num_channels 128 --num_res_blocks 3 --attention_resolutions 16,8 --num_heads 4 --learn_sigma True --dropout 0.1"
DIFFUSION_FLAGS="--diffusion_steps 1000 --noise_schedule cosine"
TRAIN_FLAGS="--data_dir data/celeba64/train --lr 1e-4 --batch_size 32 --log_interval 100 --save_interval 10000"
SAMPLE_FLAGS="--num_samples 10000 --batch_size 100"
INTERPOLATE_FLAGS="--seeds 0,1,2 --num_steps 8 --method slerp --sampler ddim --steps 50"
EDIT_FLAGS="--images data/celeba64/test --num_images 8 --t0 0.25,0.5,0.75,1.0 --sampler ddim --steps 50"
