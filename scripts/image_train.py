"""Train a diffusion model on images: openai's scripts/image_train.py, the same flags.

    python scripts/image_train.py $MODEL_FLAGS $DIFFUSION_FLAGS ...

works from any folder, and under mpiexec or torchrun. It runs improved_diffusion.train
(`python -m improved_diffusion.train --help` lists every flag); see README.md, "openai's
scripts and modules".
"""

import os
import sys

# This checkout's package, wherever the script is run from (and before any other
# improved_diffusion installed in the environment, openai's included).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from improved_diffusion.train import main

if __name__ == "__main__":
    main()
