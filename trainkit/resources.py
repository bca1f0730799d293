"""Where the flag files, launch scripts and data set scripts are, with or without a checkout.

    python -m trainkit.resources                          # every shipped file, one a line
    python -m trainkit.resources flags/compare/digits.sh  # the path a command would use

In a source checkout (or its `pip install -e .`) they are the checkout's `flags/`, `launch/` and
`datasets/`. A wheel or `pip install .` ships the same folders, same layout, under
`genbench_data/` beside the packages (setup.py's SHIPPED), so a documented relative path such as
`flags/compare/digits.sh` means the same file in both. `find` is the one place that decides:
a path that exists as given (relative to the working directory) wins, so a user's own copy is
never shadowed by a shipped one; otherwise the shipped copy; otherwise one line naming the path.
The launcher script itself (`run_sh`) is always the installation's own.
"""

import argparse
import os
import sys

from .errors import UserError

_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = ("flags", "launch", "datasets")


def _holds_resources(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, "launch", "run.sh")) and os.path.isdir(os.path.join(folder, "flags"))


# The checkout this code runs from, else None (an installed wheel: the parent is site-packages).
CHECKOUT = _PARENT if _holds_resources(_PARENT) else None
# The folder that holds flags/, launch/ and datasets/: the checkout, else the installed copies.
ROOT = CHECKOUT or os.path.join(_PARENT, "genbench_data")


def find(path: str, what: str = "file") -> str:
    """The absolute path of `path`: as given when it exists, else its copy under ROOT.
    Raises UserError `PATH: no such WHAT` when neither exists."""
    if os.path.isfile(path):
        return os.path.abspath(path)
    if not os.path.isabs(path):
        shipped = os.path.join(ROOT, path)
        if os.path.isfile(shipped):
            return shipped
    raise UserError(f"{path}: no such {what}")


def run_sh() -> str:
    """launch/run.sh, which every job of the comparison goes through: always this installation's
    own (a launch/run.sh that happens to sit in the working directory is not ours to run)."""
    path = os.path.join(ROOT, "launch", "run.sh")
    if not os.path.isfile(path):
        raise UserError(f"{path}: missing; reinstall the project (pip install .) or run from its checkout")
    return path


def base_dir() -> str:
    """What a config's relative output paths (DATA_DIR, DATA_ROOT) are relative to: the checkout,
    as documented there; without one the working directory (never the installed package)."""
    return CHECKOUT or os.getcwd()


def shipped_files() -> list:
    """Every file under ROOT's flags/, launch/ and datasets/, as relative paths, sorted."""
    found = []
    for top in SHIPPED:
        for folder, dirs, files in os.walk(os.path.join(ROOT, top)):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            found += [os.path.relpath(os.path.join(folder, f), ROOT) for f in files if not f.endswith(".pyc")]
    return sorted(found)


def build_parser() -> argparse.ArgumentParser:
    # plain argparse: printing a path should not cost trainkit.run's torch import
    parser = argparse.ArgumentParser(prog="trainkit.resources", description="Print the path of each flag file, "
                                     "launch script or data set script named (every shipped one when none is).")
    parser.add_argument("paths", nargs="*", help="relative paths such as flags/compare/digits.sh")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        lines = [find(p) for p in args.paths] if args.paths else shipped_files()
    except UserError as e:
        print(f"trainkit.resources: error: {e}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
