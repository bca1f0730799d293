"""Two hosts on one machine, as network namespaces: what the multi-host tests run on.

Each host is a network namespace with one end of a veth pair (`veth0`, 10.77.0.1 and
10.77.0.2/24). Both ends are created inside the namespaces, so the pair never exists in the
machine's own namespace and nothing can leave it. A command runs "on a host" through
`ip netns exec NS unshare --uts`: its own host name (a UTS namespace) and its own /etc/hosts (a
bind mount; `ip netns exec` gives the command a private mount namespace, so the real /etc is never
touched). The file system, /tmp included, is shared, like a cluster's shared file system.

/etc/hosts comes in three styles (`style=` of `Hosts.cmd`), because multi-host launchers decide
addresses by resolving host names:
  resolvable    every name maps to its cluster address (what a cluster's DNS gives)
  debian        as Debian/Ubuntu's installer writes it: the host's own name -> 127.0.1.1
  unresolvable  the host's own name is missing

`ssh_env=True` runs the command with the environment an ssh login gives (env -i, then HOME, USER,
LOGNAME, SHELL and the system PATH), which is what a rank started over ssh on another node has.

Facts behind this (measured on the CI machine kind): /work/shared/REFERENCE_FACTS.md, "Two hosts in
network namespaces". Set-up and tear-down take tens of milliseconds.
"""

import os
import shutil
import subprocess
import tempfile
import textwrap

SUBNET = "10.77.0"
SSH_ENV = {"HOME": "/root", "USER": "root", "LOGNAME": "root", "SHELL": "/bin/bash",
           "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}


def unavailable() -> str:
    """Why two namespaces cannot be made here ('' when they can): one line for pytest.skip."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    for tool in ("ip", "unshare", "mount"):
        if shutil.which(tool) is None:
            return f"'{tool}' is not installed (iproute2 / util-linux)"
    probe = f"tkprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    if made.returncode != 0:
        return f"'ip netns add' failed: {made.stderr.strip()}"
    return ""


class Host:
    def __init__(self, netns: str, name: str, addr: str):
        self.netns, self.name, self.addr = netns, name, addr


class Hosts:
    """Two hosts `a` and `b` (`hosts.a.name`, `.addr`, `.netns`); a context manager that
    removes both namespaces and every process left in them."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="netns-hosts-")
        tag = os.getpid()
        self.a = Host(f"tk{tag}a", "nodea", f"{SUBNET}.1")
        self.b = Host(f"tk{tag}b", "nodeb", f"{SUBNET}.2")
        self._made = []
        try:
            for h in (self.a, self.b):
                self._ip("netns", "add", h.netns)
                self._made.append(h.netns)
            self._ip("-n", self.a.netns, "link", "add", "veth0", "type", "veth", "peer", "name", "veth0",
                     "netns", self.b.netns)
            for h in (self.a, self.b):
                self._ip("-n", h.netns, "addr", "add", f"{h.addr}/24", "dev", "veth0")
                self._ip("-n", h.netns, "link", "set", "lo", "up")
                self._ip("-n", h.netns, "link", "set", "veth0", "up")
            self._write_hosts_files()
            self.rsh_agent = self._write_rsh_agent()
        except BaseException:
            self.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def host(self, key):
        return {"a": self.a, "b": self.b}[key] if isinstance(key, str) else key

    @staticmethod
    def _ip(*args):
        proc = subprocess.run(["ip", *args], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip()}")

    def _write_hosts_files(self):
        for h in (self.a, self.b):
            for style in ("resolvable", "debian", "unresolvable"):
                lines = ["127.0.0.1 localhost"]
                for other in (self.a, self.b):
                    if other is h and style == "debian":
                        lines.append(f"127.0.1.1 {h.name}")
                    elif other is h and style == "unresolvable":
                        continue
                    else:
                        lines.append(f"{other.addr} {other.name}")
                with open(self._hosts_file(h, style), "w") as f:
                    f.write("\n".join(lines) + "\n")

    def _hosts_file(self, h, style):
        return os.path.join(self.dir, f"hosts-{h.name}-{style}")

    def cmd(self, key, argv, style="resolvable", ssh_env=False) -> list:
        """The command line that runs `argv` on host `key` ('a' or 'b')."""
        h = self.host(key)
        enter = 'hostname "$1"; mount --bind "$2" /etc/hosts; shift 2; exec "$@"'
        clean = ["env", "-i", *[f"{k}={v}" for k, v in SSH_ENV.items()]] if ssh_env else []
        return ["ip", "netns", "exec", h.netns, "unshare", "--uts", "--", *clean, "bash", "-c", enter, "enter",
                h.name, self._hosts_file(h, style), *[str(a) for a in argv]]

    def _write_rsh_agent(self):
        """An `ssh` for Open MPI's `--mca plm_rsh_agent`: `AGENT [-opts] HOST COMMAND...` runs the
        command through a shell on HOST (its namespace, its name, its /etc/hosts), with an ssh
        login's environment when $NETNS_SSH_ENV=1 and the /etc/hosts style of $NETNS_HOSTS_STYLE."""
        by_name = {}
        for h in (self.a, self.b):
            by_name[h.name] = by_name[h.addr] = h
        cases = "\n".join(
            f"  {h.name}|{h.addr}) ns={h.netns} name={h.name} ;;" for h in (self.a, self.b))
        path = os.path.join(self.dir, "rsh-agent")
        with open(path, "w") as f:
            f.write(textwrap.dedent("""\
                #!/bin/bash
                # ssh stand-in: enter the named host's namespace and run the command in its shell
                while [[ "$1" == -* ]]; do shift; done
                host="$1"; shift
                case "$host" in
                {cases}
                  *) echo "rsh-agent: unknown host $host" >&2; exit 255 ;;
                esac
                hosts_file="{dir}/hosts-$name-${{NETNS_HOSTS_STYLE:-resolvable}}"
                enter='hostname "$1"; mount --bind "$2" /etc/hosts; shift 2; exec bash -c "$*"'
                if [[ "${{NETNS_SSH_ENV:-0}}" == 1 ]]; then
                  exec ip netns exec "$ns" unshare --uts -- env -i {ssh_env} \\
                    bash -c "$enter" enter "$name" "$hosts_file" "$@"
                fi
                exec ip netns exec "$ns" unshare --uts -- bash -c "$enter" enter "$name" "$hosts_file" "$@"
                """).format(cases=cases, dir=self.dir,
                            ssh_env=" ".join(f"{k}={v}" for k, v in SSH_ENV.items())))
        os.chmod(path, 0o755)
        return path

    def hostfile(self, slots=(1, 1)) -> str:
        """An Open MPI hostfile naming both hosts by address."""
        path = os.path.join(self.dir, f"hostfile-{slots[0]}-{slots[1]}")
        with open(path, "w") as f:
            f.write(f"{self.a.addr} slots={slots[0]}\n{self.b.addr} slots={slots[1]}\n")
        return path

    def link(self, key, up: bool):
        """Cut (or mend) host `key`'s network link."""
        self._ip("-n", self.host(key).netns, "link", "set", "veth0", "up" if up else "down")

    def pids(self, key) -> list:
        proc = subprocess.run(["ip", "netns", "pids", self.host(key).netns], capture_output=True, text=True)
        return [int(p) for p in proc.stdout.split()]

    def kill_all(self, key, sig=9):
        """Every process on host `key` (a host that dies); returns how many there were."""
        pids = self.pids(key)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        return len(pids)

    def close(self):
        for netns in self._made:
            proc = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True)
            for pid in proc.stdout.split():
                try:
                    os.kill(int(pid), 9)
                except ProcessLookupError:
                    pass
            subprocess.run(["ip", "netns", "del", netns], capture_output=True)
        self._made = []
        shutil.rmtree(self.dir, ignore_errors=True)
