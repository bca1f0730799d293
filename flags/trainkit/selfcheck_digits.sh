# The runtime self-check on the embedded digits (launch/quickstart.sh, tests).
MODEL_FLAGS="--image_size 32"
SELFCHECK_FLAGS="--batch_size 16 --max_steps 200 --log_interval 50 --save_interval 100 --ema_rate 0.999,0.99"
