"""ddgan.trainer: the import path of the family's Task before it moved to ddgan.task (kept for
the scripts, benchmarks and tests that import `Trainer` or the step's helpers from here).

The name is bound to the ddgan.task module itself, not to a copy of its names: code that
replaces one of them here (a test fixing the step's noise through `draw_step_noise`) then
changes what the Task calls, as it did before the move."""

import sys

from . import task

sys.modules[__name__] = task
