"""gans.trainer: the import path of the family's Task before it moved to gans.task (kept for
the scripts and tests that import `GANTrainer` or `write_grid` from here)."""

from .task import GANTrainer, Task, write_grid  # noqa: F401 (re-export)
