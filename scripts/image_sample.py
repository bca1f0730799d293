"""Sample a trained model into samples_NxHxWxC.npz: openai's scripts/image_sample.py, the same flags.

    python scripts/image_sample.py $MODEL_FLAGS $DIFFUSION_FLAGS ...

works from any folder, and under mpiexec or torchrun. It runs improved_diffusion.sample
(`python -m improved_diffusion.sample --help` lists every flag); see README.md, "openai's
scripts and modules".
"""

import os
import sys

# This checkout's package, wherever the script is run from (and before any other
# improved_diffusion installed in the environment, openai's included).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from improved_diffusion.sample import main

if __name__ == "__main__":
    main()
