"""The in-process entry-point runner: `python -m module argv...` without a new interpreter."""

import importlib
import signal
import sys

import pytest


def main_in_process(module, argv, monkeypatch, capsys):
    """(exit code, stderr) of `module.main()` run in this process with `argv` as its command
    line; `module` is a module or its dotted name. Returning from main is exit 0; the signal
    handlers entry points install are put back afterwards."""
    if isinstance(module, str):
        module = importlib.import_module(module)
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)}
    monkeypatch.setattr(sys, "argv", [module.__name__, *map(str, argv)])
    try:
        with pytest.raises(SystemExit) as e:
            module.main()
            raise SystemExit(0)
    finally:
        for s, h in saved.items():
            signal.signal(s, h)
    return e.value.code, capsys.readouterr().err


def exit_code(main, *argv):
    """The exit code of `main(argv)`, an entry point that takes its command line as a list
    (0 when it returns)."""
    try:
        main([str(a) for a in argv])
    except SystemExit as e:
        return e.code
    return 0
