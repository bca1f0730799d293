"""Evaluate the bits/dim of a trained model on a data set: openai's scripts/image_nll.py, the same flags.

    python scripts/image_nll.py $MODEL_FLAGS $DIFFUSION_FLAGS ...

works from any folder, and under mpiexec or torchrun. It runs improved_diffusion.nll
(`python -m improved_diffusion.nll --help` lists every flag); see README.md, "openai's
scripts and modules".
"""

import os
import sys

# This checkout's package, wherever the script is run from (and before any other
# improved_diffusion installed in the environment, openai's included).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from improved_diffusion.nll import main

if __name__ == "__main__":
    main()
