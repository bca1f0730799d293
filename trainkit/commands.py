"""`genbench COMMAND [ARGS ...]`: one command in front of every entry point.

`genbench ddgan-train --dataset digits ...` is `ddgan-train --dataset digits ...` is
`python -m ddgan.train --dataset digits ...`: the same module's main() with the same arguments,
so flags, --help, exit codes and launchers (mpiexec, torchrun) behave alike. `genbench` alone or
with --help lists the commands with the first line of each module's docstring, read from the
source without importing it (the training modules import torch).

The table below is data: trainkit imports a family only when its command is run, by name, the
way `python -m` would; setup.py's console scripts are the same table (a test checks it).
"""

import ast
import importlib
import importlib.util
import sys

PROG = "genbench"
# command -> module; each module has main(), as its console script (setup.py) calls it
COMMANDS = {
    "compare": "evaluations.compare",
    "fid": "evaluations.fid",
    "fd-digits": "evaluations.digits_features",
    "improved-diffusion-train": "improved_diffusion.train",
    "improved-diffusion-sample": "improved_diffusion.sample",
    "improved-diffusion-nll": "improved_diffusion.nll",
    "improved-diffusion-interpolate": "improved_diffusion.interpolate",
    "improved-diffusion-edit": "improved_diffusion.edit",
    "ddgan-train": "ddgan.train",
    "ddgan-sample": "ddgan.sample",
    "ddgan-export": "ddgan.export",
    "ddgan-interpolate": "ddgan.interpolate",
    "gans-train": "gans.train",
    "gans-sample": "gans.sample",
    "gans-interpolate": "gans.interpolate",
    "posthoc-ema": "trainkit.posthoc_ema",
    "resources": "trainkit.resources",
}


def summary(module: str) -> str:
    """The first line of `module`'s docstring, from its source (the module is not run)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        return ""
    with open(spec.origin, encoding="utf-8") as f:
        doc = ast.get_docstring(ast.parse(f.read())) or ""
    return doc.strip().split("\n", 1)[0].strip()


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"usage: {PROG} COMMAND [ARGS ...]   ({PROG} COMMAND --help for a command's flags)", "",
             "commands (each is also `python -m MODULE`):"]
    lines += [f"  {name:<{width}}  {summary(module)}" for name, module in COMMANDS.items()]
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"{PROG}: unknown command {name!r}; one of {', '.join(COMMANDS)} ({PROG} --help)", file=sys.stderr)
        return 2
    # the entry points read sys.argv, as their console scripts do; argparse names the command
    sys.argv = [f"{PROG} {name}", *rest]
    return importlib.import_module(COMMANDS[name]).main()


if __name__ == "__main__":
    sys.exit(main())
