# A tiny improved-diffusion on sklearn's digits (python datasets/digits.py --out data/digits16 --size 16):
# 16 px, 32 channels, one res block per level, trains in minutes on a CPU. Hybrid loss as in the paper.
# --image_channels 1: the digits are grey; trained as RGB (openai's loader) they came out in false colour.
MODEL_FLAGS="--image_size 16 --image_channels 1 --num_channels 32 --num_res_blocks 1 --channel_mult 1,2 --attention_resolutions 8 --num_heads 1 --learn_sigma True --dropout 0.0"
DIFFUSION_FLAGS="--diffusion_steps 100 --noise_schedule cosine"
TRAIN_FLAGS="--data_dir data/digits16/train --lr 1e-3 --batch_size 16 --ema_rate 0.99,0.999 --log_interval 50 --save_interval 500 --max_steps 2000"
SAMPLE_FLAGS="--num_samples 64 --batch_size 32 --timestep_respacing 25"
NLL_FLAGS="--data_dir data/digits16/test --num_samples 32 --batch_size 16"
# Control (docs/improved_diffusion.md, Controllability): x_T interpolation and SDEdit, decoded by 50 DDIM steps.
INTERPOLATE_FLAGS="--seeds 0,1,2 --num_steps 8 --method slerp --sampler ddim --steps 50"
EDIT_FLAGS="--images data/digits16/test --num_images 8 --t0 0.25,0.5,0.75,1.0 --sampler ddim --steps 50"
