"""The stage runner: start one job in a session of its own, its output into a log, and stop it
(past its time, or when the caller is interrupted) by one policy that leaves none of its
processes behind; for the main job, a stage (`Stage`): a launch/run.sh job with its own folder,
log and record of success. The main job's stages (evaluations.compare) and the GPU check's jobs
(benchmarks/gpu_check.py) both run through `run`; this module imports nothing but the standard
library (the GPU check's driver never imports torch).

The stop policy (`stop`): SIGTERM to the job, which launch/run.sh turns into a graceful stop of
its ranks (they finish the step, checkpoint and exit 0); after `grace` seconds a second SIGTERM,
which run.sh turns into its launcher's own shutdown; after `grace` more, SIGKILL to every process
left in the job's sessions. The sessions are the job's own (it starts in a new one) and those of
its descendants, found before the first signal: run.sh runs mpiexec or torchrun in a session of
its own, out of reach of a signal to run.sh's group, so a kill of run.sh alone would leave the
launcher and its ranks running.
"""

import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict

from trainkit import fileio, resources

GRACE_SECONDS = 20.0


def _process_table() -> dict:
    """{pid: (parent pid, session id)} of the live (not zombie) processes, from /proc; {} without it."""
    table = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return table
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                text = f.read()
        except OSError:  # ended while we looked
            continue
        # the command name (in parentheses) may hold spaces: the fields after its closing one
        fields = text[text.rindex(")") + 2:].split()
        if fields[0] == "Z":  # ended, not yet reaped: nothing left to stop
            continue
        table[int(name)] = (int(fields[1]), int(fields[3]))
    return table


def job_sessions(pid: int) -> set:
    """The session ids of `pid` and of all its descendants (never the caller's own session)."""
    table = _process_table()
    children = defaultdict(list)
    for p, (parent, _) in table.items():
        children[parent].append(p)
    sessions, todo = {pid}, [pid]  # the job started a session of its own: its id is its pid
    while todo:
        p = todo.pop()
        if p in table:
            sessions.add(table[p][1])
        todo.extend(children.get(p, ()))
    sessions.discard(os.getsid(0))
    return sessions


def processes_in(sessions: set) -> list:
    """Live processes whose session is one of `sessions`."""
    return sorted(p for p, (_, sid) in _process_table().items() if sid in sessions)


def kill_sessions(sessions: set):
    """SIGKILL to every live process of `sessions` (and, where /proc is missing, their groups)."""
    for pid in processes_in(sessions):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for sid in sessions:  # a session's leader's group: all there is to reach without /proc
        try:
            os.killpg(sid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def stop(proc: subprocess.Popen, grace: float = GRACE_SECONDS):
    """Stop the job `proc` by the module's policy: two SIGTERMs `grace` seconds apart, then
    SIGKILL to whatever is left of its sessions. Returns when none of its processes is left."""
    sessions = job_sessions(proc.pid)  # before it ends: its launcher's session is found through it
    try:
        for _ in range(2):
            if proc.poll() is not None:
                break
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
    finally:  # a second interrupt while waiting: straight to the kill
        kill_sessions(sessions)
        proc.wait()


class Result:
    """How a job ended: exit `code`, wall `seconds`, `timed_out`, and `seen`: per watched regex,
    the (time.perf_counter(), line) of each stdout line that matched it."""

    def __init__(self, code, seconds, timed_out, seen):
        self.code, self.seconds, self.timed_out, self.seen = code, seconds, timed_out, seen


def run(argv, log_path, env=None, cwd=None, timeout=None, watch=(), tick=None, poll_seconds=1.0,
        header=None, grace=GRACE_SECONDS) -> Result:
    """Run `argv` in a new session, stdout and stderr into `log_path` (after `header`, when
    given). `watch`: regexes whose matching stdout lines are timed as they arrive (the output
    then passes through this process). `tick(seconds)` is called every `poll_seconds` while the
    job runs. Past `timeout` seconds, or when the caller is interrupted (KeyboardInterrupt or any
    exception while waiting), the job is stopped by `stop`; an interruption is then raised again."""
    seen = {w.pattern: [] for w in watch}
    began = time.perf_counter()
    expired = False
    with open(log_path, "w") as log:
        if header:
            log.write(header)
            log.flush()
        piped = bool(watch)
        proc = subprocess.Popen([str(a) for a in argv], cwd=cwd, env=env, start_new_session=True,
                                stdout=subprocess.PIPE if piped else log, stderr=subprocess.STDOUT,
                                text=piped, bufsize=1 if piped else -1)
        reader = None
        if piped:
            def copy():
                for line in proc.stdout:
                    now = time.perf_counter()
                    log.write(line)
                    for w in watch:
                        if w.search(line):
                            seen[w.pattern].append((now, line))
                log.flush()

            reader = threading.Thread(target=copy, daemon=True)
            reader.start()
        try:
            while True:
                wait = poll_seconds if tick else None
                if timeout is not None:
                    left = timeout - (time.perf_counter() - began)
                    if left <= 0:
                        expired = True
                        stop(proc, grace)
                        break
                    wait = left if wait is None else min(wait, left)
                try:
                    proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    if tick:
                        tick(time.perf_counter() - began)
        except BaseException:  # an interrupted caller leaves no process of the job behind
            stop(proc, grace)
            raise
        finally:
            if reader is not None:
                reader.join()
                proc.stdout.close()
    return Result(proc.returncode, time.perf_counter() - began, expired, seen)


# --- the main job's stages ----------------------------------------------------------------

def pick_launcher(nproc: int) -> str:
    if nproc == 1:
        return "local"
    import importlib.util
    from shutil import which

    # find_spec asks whether mpi4py is installed without importing it (importing starts MPI).
    have_mpi = importlib.util.find_spec("mpi4py") is not None
    return "mpiexec" if have_mpi and which("mpiexec") else "torchrun"


def run_sh(launcher, nproc, flag_file, module, *flags):
    return ["bash", resources.run_sh(), launcher, str(nproc), resources.find(flag_file, "flag file"), module,
            *map(str, flags)]


def command_identity(argv) -> list:
    """What decides whether a stage's earlier success answers the same question: its command line,
    each shell file it names (launch/run.sh, the flag file) stood for by its name and a digest of
    its content. An edited flag file runs the stage again; the same files at another path (the
    installed package's copies, a checkout elsewhere) do not by themselves."""
    out = []
    for a in map(str, argv):
        if a.endswith(".sh") and os.path.isfile(a):
            with open(a, "rb") as f:
                a = f"{os.path.basename(a)}@sha256:{hashlib.sha256(f.read()).hexdigest()[:16]}"
        out.append(a)
    return out


def last_error_line(log_path: str) -> str:
    with open(log_path, errors="replace") as f:
        lines = [line.strip() for line in f if line.strip()]
    for line in reversed(lines):
        if "error" in line.lower():
            return line[:300]
    return lines[-1][:300] if lines else "no output"


class Stage:
    """One launch/run.sh job with its own directory, log and record of success."""

    def __init__(self, directory, argv, env_extra=None, label=None, watch_csv=None, watch_samples=False):
        self.dir = directory
        self.argv = argv
        self.env_extra = env_extra or {}
        self.record_path = os.path.join(directory, "stage.json")
        # shown by the job's progress display: RUN/STAGE, and a training's progress.csv or (watch_samples)
        # a sampler's progress record to read while it runs
        self.label = label or os.path.join(os.path.basename(os.path.dirname(directory)), os.path.basename(directory))
        self.watch_csv = watch_csv
        self.watch_samples = watch_samples
        deadline = self.env_extra.get("TRAINKIT_DEADLINE")
        self.deadline = float(deadline) if deadline else None

    def done_before(self):
        """The record of this stage's earlier success with the same command (`command_identity`),
        else None: a stage whose flags changed (another sample count, sampler or config) or whose
        flag file was edited runs again."""
        if os.path.exists(self.record_path):
            with open(self.record_path) as f:
                record = json.load(f)
            if "identity" in record:
                same = record["identity"] == command_identity(self.argv)
            else:  # recorded before identities: the command line as it was typed
                same = record.get("argv") == [str(a) for a in self.argv]
            return record if record.get("ok") and same else None
        return None

    def run(self, reuse: bool, progress=None) -> dict:
        """Run the job (or, with `reuse`, take its earlier success); `progress` (a
        compare_progress.Progress) hears when it starts and ends and, every
        `progress.poll_seconds` while it runs, how far it is. An interrupted caller (Ctrl-C)
        stops the job by the module's policy before the interruption goes on."""
        if reuse:
            record = self.done_before()
            if record:
                record["reused"] = True
                if progress:
                    progress.finish(self.label, "reused")
                return record
        from .compare_progress import clock, latest_progress, latest_sampling

        os.makedirs(self.dir, exist_ok=True)
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.env_extra)
        if resources.CHECKOUT:  # an installed package's children import the installed modules
            env["PYTHONPATH"] = resources.ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.setdefault("PYTHON", sys.executable)
        log_path = os.path.join(self.dir, "launch.log")
        start = time.time()

        def tick(seconds):
            latest = (latest_progress(self.watch_csv) if self.watch_csv
                      else latest_sampling(self.dir, start) if self.watch_samples else None)
            progress.running(self.label, seconds, latest, self.deadline)

        if progress:
            progress.start(self.label)
        result = run(self.argv, log_path, env=env, cwd=resources.ROOT, tick=tick if progress else None,
                     poll_seconds=progress.poll_seconds if progress else 1.0,
                     header="$ " + " ".join(shlex.quote(str(a)) for a in self.argv) + "\n")
        code, seconds = result.code, result.seconds
        record = {"ok": code == 0, "exit": code, "seconds": seconds, "log": log_path,
                  "argv": [str(a) for a in self.argv], "identity": command_identity(self.argv)}
        if code != 0:
            record["error"] = last_error_line(log_path)
        with fileio.atomic_path(self.record_path) as tmp, open(tmp, "w") as f:  # never a half record
            json.dump(record, f, indent=2)
        if progress:
            progress.finish(self.label, f"done in {clock(seconds)}" if code == 0 else f"FAILED (exit {code})")
        return record
