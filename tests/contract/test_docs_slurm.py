"""docs/operations.md's Slurm section matches launch/slurm.sbatch (from tests/e2e/test_slurm_real.py,
which runs the script on a real cluster)."""

import re

import helpers

SBATCH = helpers.ROOT / "launch" / "slurm.sbatch"


def test_docs_say_killwait_bounds_the_checkpoint_and_how_to_size_the_lead_time():
    """Defect 4: under Slurm the checkpoint's time is bounded by KillWait (or the grace time),
    not by TORCH_ELASTIC_SHUTDOWN_TIMEOUT as the docs used to advise; they show the script's own
    warning signal and how to size its lead time."""
    docs = (helpers.ROOT / "docs" / "operations.md").read_text()
    assert "\n## Slurm\n" in docs
    section = docs[docs.index("\n## Slurm\n"):]
    section = section[:section.index("\n## ", 1)]
    spec = re.search(r"^#SBATCH (--signal=\S+)$", SBATCH.read_text(), re.M).group(1)
    assert f"#SBATCH {spec}" in section
    assert "**`KillWait` bounds the checkpoint**" in section and "Size `--signal`'s lead time" in section
    assert "raise `TORCH_ELASTIC_SHUTDOWN_TIMEOUT`" not in docs
