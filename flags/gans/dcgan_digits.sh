# Tiny unconditional DCGAN on scikit-learn's digits: cdcgan_digits.sh with --model dcgan, so one
# flag file serves gans.train, gans.sample and gans.interpolate alike.
source "$(dirname "${BASH_SOURCE[0]}")/cdcgan_digits.sh"
MODEL_FLAGS="${MODEL_FLAGS/--model cdcgan/--model dcgan}"
