"""openai's import path of the trainer, kept for its users: improved_diffusion.task holds the
Task (here under its earlier name DiffusionTask) and log_loss_dict."""

from .task import Task as DiffusionTask  # noqa: F401 (re-export)
from .task import log_loss_dict  # noqa: F401 (re-export)
