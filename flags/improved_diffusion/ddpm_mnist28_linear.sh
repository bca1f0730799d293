# Seed 002's DDPM on MNIST at its native 28 px (../shared/seeds/002_*.txt, "Part 2"):
#   T = 1000 and a linear beta schedule from 1e-4 to 0.02 (openai's "linear" at 1000 steps is exactly
#   that), MSE on epsilon (no --learn_sigma, no --use_kl: openai's simple loss), Adam lr 1e-3,
#   batch 128, 10 epochs (60,000 / 128 = 469 steps an epoch: --max_steps 4690).
#   Its U-Net "32 -> 64 -> 128 channels, sinusoidal time embedding" is --num_channels 32
#   --channel_mult 1,2,4: three levels, 28 -> 14 -> 7 px (a fourth would need 3.5 px). One res
#   block per level and no attention at any level, as the seed's small U-Net has none (openai's
#   U-Net keeps the one in its 7 px middle block); openai's time embedding is the sinusoidal one.
#   Grey: --image_channels 1.
# Data: python datasets/mnist.py DOWNLOAD_DIR --out data/mnist28   (28 px, no --size)
#   bash launch/run.sh mpiexec 2 flags/improved_diffusion/ddpm_mnist28_linear.sh improved_diffusion.train
#   bash launch/run.sh mpiexec 2 flags/improved_diffusion/ddpm_mnist28_linear.sh improved_diffusion.sample --model_path RUN_DIR
# The seed samples with all 1000 steps (its "Inference: 1000 steps"); --batch_size is per rank.
MODEL_FLAGS="--image_size 28 --image_channels 1 --num_channels 32 --channel_mult 1,2,4 --num_res_blocks 1 --attention_resolutions none --learn_sigma False --dropout 0.0"
DIFFUSION_FLAGS="--diffusion_steps 1000 --noise_schedule linear"
TRAIN_FLAGS="--data_dir data/mnist28/train --lr 1e-3 --batch_size 128 --max_steps 4690 --log_interval 50 --save_interval 1000"
SAMPLE_FLAGS="--num_samples 1000 --batch_size 250"
INTERPOLATE_FLAGS="--seeds 0,1,2 --num_steps 8 --method slerp --sampler ddim --steps 50"
EDIT_FLAGS="--images data/mnist28/test --num_images 8 --t0 0.25,0.5,0.75,1.0 --sampler ddim --steps 50"
