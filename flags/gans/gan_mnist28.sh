# Fully connected ("vanilla") GAN on MNIST at its native 28 px, seed 002's setting
# (../shared/seeds/002_*.txt, a course notebook):
#   --model gan            "Vanilla GAN ... fully connected layers with LeakyReLU activations"
#   --image_size 28 --num_channels 1   "28x28 grayscale images" (no resizing: the FC network takes any size)
#   --nz 100               "LATENT_DIM = 100"
#   --ngf 64 --ndf 64      hidden widths 256/512/1024 (G) and 1024/512/256 (D), the classic MNIST
#                          GAN; seed 002 does not list its widths (see docs/gans.md)
#   --batch_size 128       "BATCH_SIZE = 128" (one process in seed 002, so per rank with 1 process)
#   --epochs 50            "EPOCHS = 50"
#   --lr_g/--lr_d 2e-4     "LEARNING_RATE = 0.0002 (GAN)", "OPTIMIZER = Adam"
#   --beta1 0.5 --beta2 0.999  "BETA1 = 0.5, BETA2 = 0.999"
#   --loss bce             "GAN: Binary Cross-Entropy Loss"
# Data: data/mnist28 comes from `python datasets/mnist.py DOWNLOAD_DIR --out data/mnist28`
# (28 px, no --size), DOWNLOAD_DIR holding the four MNIST *-ubyte.gz files.
#   bash launch/run.sh torchrun 1 flags/gans/gan_mnist28.sh gans.train --logdir runs/gan_mnist28
#   bash launch/run.sh torchrun 1 flags/gans/gan_mnist28.sh gans.sample --model_path runs/gan_mnist28
# For the conditional variant use flags/gans/cgan_mnist28.sh.
MODEL_FLAGS="--model gan --image_size 28 --num_channels 1 --nz 100 --ngf 64 --ndf 64"
TRAIN_FLAGS="--data_dir data/mnist28/train --batch_size 128 --epochs 50 --lr_g 2e-4 --lr_d 2e-4 --beta1 0.5 --beta2 0.999 --loss bce --save_interval 2000 --log_interval 10"
SAMPLE_FLAGS="--num_samples 10000 --batch_size 500"
INTERPOLATE_FLAGS="--seeds 0,1,2,3 --num_steps 10"
