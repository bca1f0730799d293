# The CIFAR-10 flags of seed 003 (comparative-diffusion-models): openai's paper configuration
# run with `source flags.sh`; sampled with --num_samples 1024.
MODEL_FLAGS="--image_size 32 --num_channels 128 --num_res_blocks 3 --learn_sigma True --dropout 0.3"
DIFFUSION_FLAGS="--diffusion_steps 4000 --noise_schedule cosine"
TRAIN_FLAGS="--data_dir data/cifar10/train --lr 1e-4 --batch_size 128"
SAMPLE_FLAGS="--num_samples 1024 --batch_size 64"
