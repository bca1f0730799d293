# Tiny class-conditional DCGAN on scikit-learn's digits (no download, trains on a CPU in minutes):
#   python datasets/digits.py --out data/digits --size 32   # the quickstart's export; the loader resizes to 16 px
#   bash launch/run.sh mpiexec 2 flags/gans/cdcgan_digits.sh gans.train
# Use --model dcgan for the unconditional baseline (the data set is the same).
MODEL_FLAGS="--model cdcgan --image_size 16 --num_channels 1 --nz 32 --ngf 32 --ndf 32"
TRAIN_FLAGS="--data_dir data/digits/train --batch_size 32 --max_steps 600 --lr_g 2e-4 --lr_d 2e-4 --beta1 0.5 --beta2 0.999 --loss bce --save_interval 200 --log_interval 20"
SAMPLE_FLAGS="--num_samples 1000 --batch_size 250"
INTERPOLATE_FLAGS="--seeds 0,1,2,3 --num_steps 8 --class_label 3"
