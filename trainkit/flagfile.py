"""Flag files read from Python: a shell file (flags/<family>/*.sh, flags/compare/*.sh) is sourced
in bash, as launch/run.sh sources it, and the variables asked for are read back. The files stay
plain shell (they may compute values, source each other, read the environment); this is the one
place Python reads them.

A flag file's command line for a module of role R (TRAIN, SAMPLE, INTERPOLATE, EDIT, ...) is
$MODEL_FLAGS $DIFFUSION_FLAGS ${R_FLAGS}, word-split as the shell splits it there.
"""

import shlex
import subprocess

from .errors import UserError

ROLE_VARS = ("MODEL_FLAGS", "DIFFUSION_FLAGS")  # what every role's command line starts with


def read_vars(path, names, what: str = "flag file") -> dict:
    """{name: value} of the shell variables `names` after `source path` in bash ("" for one the
    file leaves unset). A file that is missing, or fails while sourced, is a UserError naming it
    (`what` says what the file is for) with the first line bash printed."""
    names = list(names)
    bad = [n for n in names if not n.replace("_", "a").isalnum() or n[0].isdigit()]
    if bad:
        raise ValueError(f"not shell variable names: {bad}")
    # $0 is the file: a flag file that looks at its own name sees its own path
    script = ('source "$0" >/dev/null || exit 3; for v in ' + " ".join(names)
              + '; do printf "%s=%s\\0" "$v" "${!v-}"; done')
    try:
        proc = subprocess.run(["bash", "-c", script, str(path)], capture_output=True, text=True)
    except OSError as e:
        raise UserError(f"{path}: cannot run bash to read this {what} ({e.strerror or e})") from None
    if proc.returncode != 0:
        first = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[0]
        raise UserError(f"{path}: the {what} failed to load in bash ({first[:200]})")
    values = dict(item.split("=", 1) for item in proc.stdout.split("\0") if "=" in item)
    return {n: values.get(n, "") for n in names}


def role_flags(values: dict, role: str = "TRAIN") -> list:
    """The command line of `role` from a flag file's variables (read_vars of `role_vars(role)`)."""
    return [flag for name in role_vars(role) for flag in shlex.split(values.get(name, ""))]


def role_vars(role: str = "TRAIN") -> tuple:
    """The variables whose words, in order, make a flag file's command line for `role`."""
    return ROLE_VARS + (f"{role}_FLAGS",)


def flag_file_argv(path, role: str = "TRAIN") -> list:
    """The flags launch/run.sh passes from the flag file `path` to a module of `role`."""
    return role_flags(read_vars(path, role_vars(role)), role)
