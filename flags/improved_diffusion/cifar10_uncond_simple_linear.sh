# CIFAR-10 baseline of the paper: L_simple, linear schedule, fixed variances.
MODEL_FLAGS="--image_size 32 --num_channels 128 --num_res_blocks 3 --dropout 0.3"
DIFFUSION_FLAGS="--diffusion_steps 4000 --noise_schedule linear"
TRAIN_FLAGS="--data_dir data/cifar10/train --lr 1e-4 --batch_size 128"
SAMPLE_FLAGS="--num_samples 50000 --batch_size 256 --timestep_respacing 100"
NLL_FLAGS="--data_dir data/cifar10/test --num_samples 10000 --batch_size 64"
