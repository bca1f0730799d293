# Class-conditional DCGAN on FashionMNIST, seed 000's cGAN setting: 32 px, grey, 10 epochs,
# batch 128; 10 classes from the file names (<label>_<anything>.png). DCGAN paper learning rates.
MODEL_FLAGS="--model cdcgan --image_size 32 --num_channels 1 --nz 100 --ngf 64 --ndf 64"
TRAIN_FLAGS="--data_dir data/fashion_mnist/train --batch_size 128 --epochs 10 --lr_g 2e-4 --lr_d 2e-4 --beta1 0.5 --beta2 0.999 --loss bce --save_interval 2000 --log_interval 10"
SAMPLE_FLAGS="--num_samples 10000 --batch_size 500"
INTERPOLATE_FLAGS="--seeds 0,1,2,3 --num_steps 10 --class_label 0"
