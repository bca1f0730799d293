# A class-conditional digits_tiny.sh trained for classifier-free guidance (Ho & Salimans 2022):
# each label is replaced by the null class with probability 0.1 (the paper: 0.1-0.2), which adds one
# row to the label embedding (recorded in options.json, so the samplers rebuild it).
# Sampling guides with uncond + w (cond - uncond), w = --guidance_scale (1: the conditional model, no
# guidance; docs/improved_diffusion.md, "Classifier-free guidance"). On the 8 px digits after 200 steps
# (tests/unit/test_id_guidance.py) class accuracy went 0.13 / 0.64 / 0.98 at w = 0 / 1 / 3; this file's
# w = 3 is that measurement's, not one tuned on this 16 px model.
#   bash launch/run.sh mpiexec 2 flags/improved_diffusion/cddpm_digits.sh improved_diffusion.train --logdir runs/cddpm
#   bash launch/run.sh mpiexec 2 flags/improved_diffusion/cddpm_digits.sh improved_diffusion.sample --model_path runs/cddpm
source "$(dirname "${BASH_SOURCE[0]}")/digits_tiny.sh"
MODEL_FLAGS="$MODEL_FLAGS --class_cond True --num_classes 10 --class_dropout_prob 0.1"
SAMPLE_FLAGS="$SAMPLE_FLAGS --guidance_scale 3"
INTERPOLATE_FLAGS="$INTERPOLATE_FLAGS --guidance_scale 3"
EDIT_FLAGS="$EDIT_FLAGS --guidance_scale 3"
