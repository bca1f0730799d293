# Conditional fully connected GAN (cGAN) on MNIST at its native 28 px, seed 002's setting
# (../shared/seeds/002_*.txt, a course notebook): "Generator: Concatenates noise vector with
# one-hot encoded labels", "Discriminator: Processes both image and label information" (here:
# the one-hot label concatenated to the flattened image). 10 classes from the file names
# (<label>_<index>.png). Every other value as flags/gans/gan_mnist28.sh, from seed 002:
#   --image_size 28 --num_channels 1   "28x28 grayscale images" (no resizing)
#   --nz 100               "LATENT_DIM = 100"
#   --ngf 64 --ndf 64      hidden widths 256/512/1024 (G) and 1024/512/256 (D); not listed in seed 002
#   --batch_size 128       "BATCH_SIZE = 128"
#   --epochs 50            "EPOCHS = 50"
#   --lr_g/--lr_d 2e-4     "LEARNING_RATE = 0.0002 (GAN)", "OPTIMIZER = Adam"
#   --beta1 0.5 --beta2 0.999  "BETA1 = 0.5, BETA2 = 0.999"
#   --loss bce             "GAN: Binary Cross-Entropy Loss"
# Data: data/mnist28 comes from `python datasets/mnist.py DOWNLOAD_DIR --out data/mnist28`
# (28 px, no --size).
#   bash launch/run.sh torchrun 1 flags/gans/cgan_mnist28.sh gans.train --logdir runs/cgan_mnist28
#   bash launch/run.sh torchrun 1 flags/gans/cgan_mnist28.sh gans.interpolate --model_path runs/cgan_mnist28
MODEL_FLAGS="--model cgan --image_size 28 --num_channels 1 --nz 100 --ngf 64 --ndf 64"
TRAIN_FLAGS="--data_dir data/mnist28/train --batch_size 128 --epochs 50 --lr_g 2e-4 --lr_d 2e-4 --beta1 0.5 --beta2 0.999 --loss bce --save_interval 2000 --log_interval 10"
SAMPLE_FLAGS="--num_samples 10000 --batch_size 500"
INTERPOLATE_FLAGS="--seeds 0,1,2,3 --num_steps 10 --class_label 0"
