"""What the tests share and no test module owns: the families' small flag sets and trained-run
recipes (flags.py, runs.py), the in-process entry-point runner (entry.py), checks on processes
and checkpoints (checks.py), the diffusion samplers' closed-form oracle (oracles.py), a toy Task
(tasks.py) and the fault tests' families and fork-server client (faultlib.py).

Tests import it as `from _support.flags import ...`: pytest.ini's `pythonpath = tests` puts
tests/ on sys.path once, so no test module imports another and none edits sys.path."""
