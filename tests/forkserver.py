"""A fork server for the test suite: import torch and the project once, then run every
single-process `python -m MODULE ...` / `python SCRIPT ...` the tests start as a forked child.

Starting a Python process that imports torch costs ~2.5 s of CPU here; the suite starts
hundreds. A forked child of a process that has the code imported starts in milliseconds and is
otherwise the process a user would run: its own pid, environment, working directory, argv,
stdin/stdout/stderr (the caller's own file descriptors, passed over the socket), signals and
exit status; `__main__` is executed afresh by runpy, exactly as `python -m` does.

What is forked: a single process of the project, and torchrun's workers (they meet over TCP;
torchrun's agent is a real interpreter that starts, watches, signals and restarts them as its
child processes, through `tests/bin/python`). A rank of mpiexec (MPI's daemon knows its ranks by
the processes it started), `python -c`, other interpreter options and other modules start a
real interpreter (`tests/bin/python` execs one). `GENBENCH_TEST_FORK=0` turns the server off:
every process is a real interpreter.

Protocol, over a unix socket, one connection per process: the client sends one JSON line
{"kind": "module"|"path", "target", "argv", "env", "cwd"} with its stdin, stdout and stderr
file descriptors attached (SCM_RIGHTS); the server answers "pid N" and, when the child has
ended, "exit CODE" (negative: killed by that signal, as subprocess reports it). A client that
goes away (killed) takes its child with it.

    python tests/forkserver.py SOCKET MODULE...   # prints "ready" once the modules are imported
"""

import atexit
import importlib
import json
import os
import runpy
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
SOCKET_ENV = "GENBENCH_FORKSERVER"
SWITCH_ENV = "GENBENCH_TEST_FORK"
# A rank of mpiexec (these in its environment) gets a real interpreter: MPI's daemon knows its
# ranks by the processes it started. torchrun's workers are forked (they meet over TCP); its
# agent is a real interpreter that starts them with bin/python (so that they are its children,
# which launch/run.sh signals).
MPI_VARS = ("OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE")
TORCHRUN = "torch.distributed.run"
PACKAGES = ("trainkit", "evaluations", "improved_diffusion", "ddgan", "gans", "scripts", "datasets")
PRELOAD = ("torch", "torchvision", "numpy", "PIL.Image", "sklearn.datasets", "matplotlib.pyplot",
           "trainkit.selfcheck", "trainkit.elastic", "improved_diffusion.train", "improved_diffusion.sample",
           "improved_diffusion.nll", "improved_diffusion.interpolate", "improved_diffusion.edit", "ddgan.train",
           "ddgan.sample", "ddgan.interpolate", "ddgan.export", "gans.train", "gans.sample", "gans.interpolate",
           "evaluations.compare", "evaluations.fid", "evaluations.digits_features", "evaluations.metrics",
           "evaluations.report", "evaluations.grid", "evaluations.npz_to_images", "evaluations.images_to_npz")


# --- the server ------------------------------------------------------------------------------

def _exit_code(e: SystemExit) -> int:
    """What the interpreter does with an uncaught SystemExit."""
    if e.code is None:
        return 0
    if isinstance(e.code, int):
        return e.code
    print(e.code, file=sys.stderr)
    return 1


def _run_child(request) -> int:
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = [request["target"], *request["argv"]]
    warnings.filterwarnings("ignore", message=".*found in sys.modules", category=RuntimeWarning)
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGHUP, signal.SIGCHLD, signal.SIGPIPE):
        signal.signal(s, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as a fresh interpreter has it
    try:
        if request["kind"] == "module":
            runpy.run_module(request["target"], run_name="__main__", alter_sys=True)
        else:
            sys.path.insert(0, os.path.dirname(os.path.abspath(request["target"])))
            runpy.run_path(request["target"], run_name="__main__")
        code = 0
    except SystemExit as e:
        code = _exit_code(e)
    except KeyboardInterrupt:
        traceback.print_exc()
        code = -signal.SIGINT
    except BaseException:  # the interpreter's own last resort, reproduced
        traceback.print_exc()
        code = 1
    # the interpreter's shutdown: wait for non-daemon threads, then the atexit functions
    for t in threading.enumerate():
        if t is not threading.main_thread() and not t.daemon:
            t.join()
    try:
        atexit._run_exitfuncs()
    except BaseException:  # as the interpreter: an exit function's error is printed, not raised
        traceback.print_exc()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    return code


def _manage(conn, request, fds):
    """In a forked copy of the server: fork the child, report its pid and exit status, and kill
    it if the client disappears first."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the server ignores it (auto-reaping); we wait
    pid = os.fork()
    if pid == 0:
        conn.close()
        for target, fd in zip((0, 1, 2), fds):
            os.dup2(fd, target)
        for fd in fds:
            os.close(fd)
        code = _run_child(request)
        if code < 0:  # ended by a signal: end the same way
            signal.signal(-code, signal.SIG_DFL)
            os.kill(os.getpid(), -code)
        os._exit(code & 0xFF)
    for fd in fds:
        os.close(fd)
    conn.sendall(f"pid {pid}\n".encode())
    pidfd = os.pidfd_open(pid)
    poller = select.poll()
    poller.register(conn, select.POLLIN | select.POLLHUP)
    poller.register(pidfd, select.POLLIN)
    while True:
        events = dict(poller.poll())
        if pidfd in events:
            _, status = os.waitpid(pid, 0)
            try:
                conn.sendall(f"exit {os.waitstatus_to_exitcode(status)}\n".encode())
            except OSError:
                pass
            return
        if conn.fileno() in events:  # the client went away (or wrote, which it never does)
            os.kill(pid, signal.SIGKILL)
            poller.unregister(conn)


def serve(path, modules):
    for name in modules:
        importlib.import_module(name)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # managers are reaped by the kernel
    print("ready", flush=True)
    while True:
        conn, _ = listener.accept()
        try:
            msg, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
            while not msg.endswith(b"\n"):
                more = conn.recv(1 << 20)
                if not more:
                    break
                msg += more
            request = json.loads(msg)
        except (OSError, ValueError):
            conn.close()
            continue
        if os.fork() == 0:
            listener.close()
            try:
                _manage(conn, request, fds)
            finally:
                os._exit(0)
        for fd in fds:
            os.close(fd)
        conn.close()


# --- the client ------------------------------------------------------------------------------

def forkable(kind, target, env) -> bool:
    """Whether the server may run this process (else a real interpreter must)."""
    if not env.get(SOCKET_ENV) or env.get(SWITCH_ENV) == "0" or any(v in env for v in MPI_VARS):
        return False
    target = str(target)
    if kind == "module":
        return target.split(".")[0] in PACKAGES
    return target.endswith(".py") and os.path.abspath(target).startswith(os.path.dirname(HERE) + os.sep)


class Forked:
    """A process run by the server: .pid, .wait(timeout) -> exit code or None, .kill()."""

    def __init__(self, kind, target, argv, env, cwd, stdin=0, stdout=1, stderr=2):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(env[SOCKET_ENV])
        request = {"kind": kind, "target": str(target), "argv": [str(a) for a in argv], "env": env,
                   "cwd": str(cwd)}
        socket.send_fds(self.sock, [(json.dumps(request) + "\n").encode()], [stdin, stdout, stderr])
        self._buffer = b""
        line = self._line(None)
        if not line or not line.startswith("pid "):
            raise RuntimeError(f"fork server: no child started ({line!r})")
        self.pid = int(line.split()[1])
        self.returncode = None

    def _line(self, timeout):
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([self.sock], [], [], left)[0]:
                return None
            chunk = self.sock.recv(4096)
            if not chunk:
                return ""
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def wait(self, timeout=None):
        if self.returncode is None:
            line = self._line(timeout)
            if line is None:
                return None
            if not line.startswith("exit "):
                raise RuntimeError(f"fork server: lost child {self.pid} ({line!r})")
            self.returncode = int(line.split()[1])
            self.sock.close()
        return self.returncode

    def kill(self, sig=signal.SIGKILL):
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass


def run(cmd, env, cwd, timeout):
    """subprocess.run(cmd, capture_output=True, text=True, timeout=timeout) for a forkable
    `python -m MODULE ...` / `python SCRIPT ...` command line, run by the server."""
    import tempfile

    kind, target, argv = ("module", cmd[2], cmd[3:]) if cmd[1] == "-m" else ("path", cmd[1], cmd[2:])
    with open(os.devnull, "rb") as stdin, tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        child = Forked(kind, target, argv, env, cwd, stdin.fileno(), out.fileno(), err.fileno())
        code = child.wait(timeout)
        if code is None:
            child.kill()
            child.wait()
            raise subprocess.TimeoutExpired(cmd, timeout)
        texts = []
        for f in (out, err):
            f.seek(0)
            texts.append(f.read().decode(errors="replace"))
    return subprocess.CompletedProcess(cmd, code, texts[0], texts[1])


class Server:
    """The server process of one test session (helpers starts it on first use)."""

    def __init__(self, directory, env):
        self.path = os.path.join(directory, "forkserver.sock")
        env = dict(env, OMP_NUM_THREADS="1")  # the children must not inherit an OpenMP thread pool
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), self.path, *PRELOAD],
                                     env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        line = self.proc.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError(f"fork server did not start (exit {self.proc.poll()})")

    def close(self):
        self.proc.kill()
        self.proc.wait()
        try:
            os.unlink(self.path)
        except OSError:
            pass


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2:])
