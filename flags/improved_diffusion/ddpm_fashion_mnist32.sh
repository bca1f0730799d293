# Seed 000's DDPM on FashionMNIST (../shared/seeds/000_*.txt): 32 px grey (the 28 px images resized
# to 32 and scaled to [-1, 1]), `--epochs 10 --batch_size 8`: 60,000 / 8 = 7,500 steps an epoch,
# so --max_steps 75000. The seed gives no schedule, learning rate or network: this uses Ho et
# al.'s DDPM (T = 1000, linear betas 1e-4 .. 0.02, MSE on epsilon) and openai's lr 1e-4, with a
# 64-channel U-Net at openai's 32 px levels (1,2,2,2), two res blocks, attention at 16 px.
# Data: python datasets/fashion_mnist.py DOWNLOAD_DIR --out data/fashion_mnist32 --size 32
#   bash launch/run.sh mpiexec 2 flags/improved_diffusion/ddpm_fashion_mnist32.sh improved_diffusion.train
#   bash launch/run.sh mpiexec 2 flags/improved_diffusion/ddpm_fashion_mnist32.sh improved_diffusion.sample --model_path RUN_DIR
# Its conditional model is cddpm_fashion_mnist32.sh.
MODEL_FLAGS="--image_size 32 --image_channels 1 --num_channels 64 --num_res_blocks 2 --attention_resolutions 16 --learn_sigma False --dropout 0.1 --class_cond False"
DIFFUSION_FLAGS="--diffusion_steps 1000 --noise_schedule linear"
TRAIN_FLAGS="--data_dir data/fashion_mnist32/train --lr 1e-4 --batch_size 8 --max_steps 75000 --log_interval 100 --save_interval 5000"
SAMPLE_FLAGS="--num_samples 1000 --batch_size 250"
INTERPOLATE_FLAGS="--seeds 0,1,2 --num_steps 8 --method slerp --sampler ddim --steps 50"
EDIT_FLAGS="--images data/fashion_mnist32/test --num_images 8 --t0 0.25,0.5,0.75,1.0 --sampler ddim --steps 50"
