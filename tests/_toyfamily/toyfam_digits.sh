# The toy family on the embedded digits at 16 px (tests/e2e/test_toy_family.py).
MODEL_FLAGS="--image_size 16"
TRAIN_FLAGS="--batch_size 16 --lr 1e-2 --log_interval 5 --save_interval 0 --ema_rate 0.9"
SAMPLE_FLAGS="--batch_size 50"
