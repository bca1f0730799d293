"""A throw-away Slurm on this one host, for tests: munged + slurmctld + one slurmd per node.

Everything (key, sockets, state, spool, logs, pid files) lives under one folder; the daemons are
stopped by their pid files. Two nodes run on one host as two slurmd processes with their own
node names and ports (Debian's build has no --enable-multiple-slurmd: distinct NodeHostname
values, NodeAddr=127.0.0.1, a Port each, `slurmd -N NAME`). The first node is this host's own
name, which must resolve: it is the head node whose name torchrun's agents rendezvous at.

Two partitions make preemption testable: `low` (the default) is preempted by `high` with
PreemptMode=REQUEUE and a GraceTime, as a shared cluster's scavenger queue.

    python tests/slurm_cluster.py FOLDER   # start one by hand; prints SLURM_CONF, Ctrl-C stops it
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "scontrol", "scancel")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _which(name):
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.path.exists(p)), None)


def missing_reason():
    """None when a cluster can be started here, else the one-line reason it cannot (after
    trying `apt-get install` of the packages when they are missing and this is root)."""
    if os.geteuid() != 0:
        return "a real Slurm needs root (slurmd starts job steps as any user)"
    if not all(_which(p) for p in PROGRAMS):
        if not shutil.which("apt-get"):
            return f"Slurm is not installed and there is no apt-get to install {' '.join(PACKAGES)}"
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *PACKAGES]):
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
            if proc.returncode != 0:
                tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
                return f"could not install {' '.join(PACKAGES)} ({' '.join(cmd[:2])}: {tail})"
        if not all(_which(p) for p in PROGRAMS):
            return f"{' '.join(PACKAGES)} installed but {[p for p in PROGRAMS if not _which(p)]} not found"
    try:
        socket.gethostbyname(socket.gethostname())
    except OSError:
        return f"this host's name {socket.gethostname()!r} does not resolve (Slurm's head node must)"
    return None


class Cluster:
    """A one-host Slurm under `root`. `nodes` slurmd processes; `grace` the low partition's
    GraceTime; `kill_wait` KillWait; `user_signal` adds preempt_send_user_signal."""

    def __init__(self, root, nodes=2, cpus=2, grace=30, kill_wait=30, user_signal=False):
        self.root = Path(root)
        self.host = socket.gethostname()
        self.names = [self.host] + [f"{self.host}x{i}" for i in range(1, nodes)]
        self.cpus = cpus
        self.grace = grace
        self.kill_wait = kill_wait
        self.user_signal = user_signal
        self.conf = self.root / "slurm.conf"
        self.munge_socket = self.root / "munge" / "munge.socket"
        self.pid_files = []

    # --- start / stop ---------------------------------------------------------------------

    def env(self, base=None, **extra) -> dict:
        """`base` (default: this process's environment) with SLURM_CONF naming this cluster; a
        job submitted with it must not believe it runs inside the caller's own Slurm job."""
        env = dict(os.environ if base is None else base)
        for k in [k for k in env if k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_"))]:
            env.pop(k)
        env["SLURM_CONF"] = str(self.conf)
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def _write_conf(self):
        r = self.root
        ctld_port = _free_port()
        nodes = "\n".join(
            f"NodeName={n} NodeHostname={n} NodeAddr=127.0.0.1 Port={_free_port()} CPUs={self.cpus} "
            f"RealMemory=2000 State=UNKNOWN" for n in self.names)
        params = "SlurmctldParameters=preempt_send_user_signal\n" if self.user_signal else ""
        low = ("PartitionName=low Nodes=ALL Default=YES MaxTime=INFINITE State=UP PriorityTier=1 "
               f"PreemptMode=REQUEUE GraceTime={self.grace}")
        self.conf.write_text(f"""\
ClusterName=genbenchtest
SlurmctldHost={self.host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MailProg=/bin/true
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait={self.kill_wait}
MinJobAge=600
FirstJobId=1000
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
{params}StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool-%n
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd-%n.pid
SlurmctldLogFile={r}/slurmctld.log
SlurmdLogFile={r}/slurmd-%n.log
SlurmdDebug=debug
{nodes}
{low}
PartitionName=high Nodes=ALL MaxTime=INFINITE State=UP PriorityTier=2 PreemptMode=OFF
""")

    def _start_munge(self):
        d = self.munge_socket.parent
        d.mkdir(mode=0o755)
        d.chmod(0o755)  # munged refuses a socket folder others cannot enter
        key = self.root / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        pid = self.root / "munged.pid"
        subprocess.run([_which("munged"), f"--socket={self.munge_socket}", f"--key-file={key}",
                        f"--pid-file={pid}", f"--log-file={self.root}/munged.log",
                        f"--seed-file={self.root}/munged.seed", "--force"], check=True, capture_output=True, timeout=60)
        self.pid_files.append(pid)

    def start(self, timeout=60):
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        (self.root / "state").mkdir(exist_ok=True)
        self._write_conf()
        self._start_munge()
        env = self.env()
        subprocess.run([_which("slurmctld"), "-i"], env=env, check=True, capture_output=True, timeout=60)
        self.pid_files.append(self.root / "slurmctld.pid")
        for n in self.names:
            (self.root / f"spool-{n}").mkdir(exist_ok=True)
            subprocess.run([_which("slurmd"), "-N", n], env=env, check=True, capture_output=True, timeout=60)
            self.pid_files.append(self.root / f"slurmd-{n}.pid")
        self.wait(lambda: self.idle_nodes() == len(self.names), timeout, "every node idle")

    def stop(self, timeout=30):
        """Cancel every job and wait until none is left (a job step's slurmstepd outlives its
        slurmd); then SIGTERM the Slurm daemons by their pid files, all at once (each takes
        seconds to finish on its own), then munged; SIGKILL one that outlives `timeout`."""
        if self.pid_files:
            try:
                jobs = self.run("squeue", "-h", "-o", "%i", check=False).stdout.split()
                if jobs:
                    self.run("scancel", *jobs, check=False)
                    self.wait(lambda: not self.run("squeue", "-h", "-o", "%i", check=False).stdout.split(),
                              self.kill_wait + 30, "no job left")
            except (OSError, subprocess.SubprocessError, TimeoutError):
                pass  # stop the daemons all the same
        slurm, munge = self.pid_files[1:], self.pid_files[:1]
        for group in (slurm, munge):
            pids = []
            for pid_file in group:
                try:
                    pid = int(pid_file.read_text().split()[0])
                    os.kill(pid, signal.SIGTERM)
                    pids.append(pid)
                except (OSError, ValueError, IndexError):
                    continue  # never started, or already gone
            deadline = time.monotonic() + timeout
            while any(_alive(p) for p in pids) and time.monotonic() < deadline:
                time.sleep(0.05)
            for p in pids:
                if _alive(p):
                    os.kill(p, signal.SIGKILL)
        self.pid_files = []

    # --- asking it things -----------------------------------------------------------------

    def run(self, *cmd, check=True, timeout=60, **kw):
        proc = subprocess.run([str(c) for c in cmd], env=kw.pop("env", None) or self.env(), capture_output=True,
                              text=True, timeout=timeout, **kw)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, cmd))}: exit {proc.returncode}: {proc.stderr.strip()}")
        return proc

    def idle_nodes(self) -> int:
        proc = self.run("sinfo", "-h", "-N", "-o", "%N %t", check=False)  # a node once per partition
        return len({line.split()[0] for line in proc.stdout.splitlines() if line.split()[1:] == ["idle"]})

    def sbatch(self, *args, cwd, env) -> str:
        """Submit; the job id."""
        return self.run("sbatch", "--parsable", *args, cwd=cwd, env=env).stdout.strip().split(";")[0]

    def job(self, job_id) -> dict:
        """`scontrol -o show job ID` as a dict (JobState, Restarts, ExitCode, ...)."""
        out = self.run("scontrol", "-o", "show", "job", job_id).stdout
        return dict(re.findall(r"(\w+)=(\S*)", out))

    def wait(self, condition, timeout, what):
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"slurm test cluster: no '{what}' within {timeout} s (logs in {self.root})")
            time.sleep(0.1)

    def wait_state(self, job_id, states, timeout=120):
        states = {states} if isinstance(states, str) else set(states)
        self.wait(lambda: self.job(job_id).get("JobState") in states, timeout, f"job {job_id} in {sorted(states)}")
        return self.job(job_id)


def _alive(pid) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child of ours counts as gone
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True


if __name__ == "__main__":
    reason = missing_reason()
    if reason:
        sys.exit(f"slurm_cluster: {reason}")
    c = Cluster(sys.argv[1], grace=int(os.environ.get("GRACE", 30)), kill_wait=int(os.environ.get("KILLWAIT", 30)),
                user_signal=os.environ.get("USER_SIGNAL") == "1")
    t = time.monotonic()
    c.start()
    print(f"started in {time.monotonic() - t:.2f} s; export SLURM_CONF={c.conf}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        t = time.monotonic()
        c.stop()
        print(f"stopped in {time.monotonic() - t:.2f} s")
