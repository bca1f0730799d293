# Seed 000's conditional DDPM on FashionMNIST: ddpm_fashion_mnist32.sh with --class_cond True
# --num_classes 10 (openai's label embedding, added to the time embedding; the classes come from the exported
# file names, <label>_<index>.png). The seed trains it with the same `--epochs 10 --batch_size 8`.
#   bash launch/run.sh mpiexec 2 flags/improved_diffusion/cddpm_fashion_mnist32.sh improved_diffusion.train
#   bash launch/run.sh mpiexec 2 flags/improved_diffusion/cddpm_fashion_mnist32.sh improved_diffusion.sample --model_path RUN_DIR
source "$(dirname "${BASH_SOURCE[0]}")/ddpm_fashion_mnist32.sh"
MODEL_FLAGS="${MODEL_FLAGS/--class_cond False/--class_cond True --num_classes 10}"
