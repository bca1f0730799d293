"""A fork server for the kill tests: import the training code once, then fork one child per run.

Killing a training run 20 times per family means 60+ runs; paying the ~2 s of `import torch`
and friends for each would eat most of the fault suite's time budget. This process imports
the given modules once; for every request it forks a child that runs `python -m MODULE ARGV`
exactly as the interpreter would (runpy, `__name__ == "__main__"`), with stdout/stderr going to
a log file. The child is an ordinary process that the test kills with SIGKILL by pid.

Protocol, one line each way (JSON in, text out), on stdin/stdout:
    {"module": "gans.train", "argv": [...], "log": "/path/log"}  ->  "pid N"   then, when the
    child has ended, "exit CODE" (CODE is negative for a signal, as subprocess reports it).

Start it with OMP_NUM_THREADS=1: the forked children must not inherit an OpenMP thread pool.
"""

import importlib
import json
import os
import runpy
import sys
import traceback
import warnings


def child(request) -> int:
    fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # the request pipe belongs to the server
    sys.argv = [request["module"], *request["argv"]]
    # the server imported the module already; runpy runs a fresh copy as __main__, as `-m` does
    warnings.filterwarnings("ignore", message=".*found in sys.modules", category=RuntimeWarning)
    try:
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
        return 0
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        traceback.print_exc()
        return 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def main():
    for name in sys.argv[1:]:
        importlib.import_module(name)
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            os._exit(child(request))
        out.write(f"pid {pid}\n")
        out.flush()
        _, status = os.waitpid(pid, 0)
        out.write(f"exit {os.waitstatus_to_exitcode(status)}\n")
        out.flush()


if __name__ == "__main__":
    main()
