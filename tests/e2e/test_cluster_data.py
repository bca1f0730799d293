"""Run directories and data on a cluster, with two torchrun agents on this machine standing for two
nodes (`launch/run.sh --nnodes 2`, one rank each). What a node sees of a folder is made its own by a
tmpfs mounted over that folder in a private mount namespace, and its host name by a UTS namespace
(`unshare`): so a node-local --logdir, node-local or shared data caches, and nodes whose environments
differ are real, not simulated. Needs root.

- a --logdir one node does not see fails the start on every node: one line naming it, non-zero, no hang;
- the data path (node cache or memory, and the cache folder) is rank 0's choice, whatever each node's
  TRAINKIT_DATA_* say (mpiexec forwards none of them to other nodes);
- nodes that share the cache folder decode a large data set once (the log's decoding line), nodes that
  do not each decode into their own.
"""

import os
import shutil
import subprocess

import pytest
import torch

import helpers

pytestmark = pytest.mark.slow

STEPS = ["--max_steps", "2", "--save_interval", "2", "--log_interval", "1", "--batch_size", "4", "--dump"]
DECODING = "trainkit.data: decoding "
# Agents whose workers' host names do not resolve (a UTS namespace's) meet over loopback: without
# these, the jobs still formed here, but each took 10-15 s longer (lookups of the name timing out).
LOOPBACK = {"TORCHRUN_ARGS": "--local-addr 127.0.0.1", "GLOO_SOCKET_IFNAME": "lo"}


@pytest.fixture(scope="module")
def unshare(tmp_path_factory):
    """Skips the module, with one line, where a private mount and host name cannot be had."""
    if os.geteuid() != 0:
        pytest.skip("needs root: a node's own view of a folder is a tmpfs mounted in a private mount namespace")
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux) for a node's private mount and host name")
    probe = tmp_path_factory.mktemp("probe")
    proc = subprocess.run(["unshare", "--mount", "--uts", "--propagation", "private", "--", "bash", "-c",
                           f"mount -t tmpfs none {probe} && hostname probe-node"],
                          capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        pytest.skip(f"unshare --mount --uts with a tmpfs mount fails here: {proc.stderr.strip()[:200]}")


def _agent(node_rank, port, argv, env, private=None, host=None):
    """One node's agent: run.sh --nnodes 2 torchrun 1 trainkit.selfcheck ARGV. With `private`, the
    node sees an empty tmpfs at that folder; with `host`, it has that host name."""
    cmd = ["bash", helpers.ROOT / "launch" / "run.sh", "--nnodes", "2", "--node_rank", node_rank, "--rdzv_endpoint",
           f"127.0.0.1:{port}", "--rdzv_id", f"t{port}", "torchrun", "1", "trainkit.selfcheck", *argv]
    if private or host:
        steps = (['mount -t tmpfs none "$1"'] if private else []) + ([f"hostname {host}"] if host else [])
        cmd = ["unshare", "--mount", "--uts", "--propagation", "private", "--", "bash", "-c",
               " && ".join(steps) + ' && shift && exec "$@"', "node", private or "", *cmd]
        env = dict(env, GENBENCH_TEST_FORK="0")  # the fork server's children would live outside the namespaces
    return subprocess.Popen([str(c) for c in cmd], cwd=helpers.ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _job(*agents, timeout=300):
    """[(exit status, stdout, stderr)] of the agents, once all have ended."""
    try:
        outs = [a.communicate(timeout=timeout) for a in agents]
    finally:
        for a in agents:
            if a.poll() is None:  # a hang: run.sh stops its launcher's session at a second signal
                a.terminate()
                a.terminate()
                try:
                    a.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    a.kill()
    return [(a.returncode, out, err) for a, (out, err) in zip(agents, outs)]


def _say(results) -> str:
    return "\n".join(f"--- node {i}: exit {rc}\n{out[-2000:]}\n{err[-3000:]}"
                     for i, (rc, out, err) in enumerate(results))


def _rank0(results) -> int:
    """Which node's agent ran global rank 0 (c10d picks it, not --node_rank): the one that logged."""
    (node,) = [i for i, (_, out, _) in enumerate(results) if "Logging to " in out]
    return node


def _same_params(run_dir):
    a, b = (torch.load(run_dir / f"params_rank{r}.pt", weights_only=True) for r in (0, 1))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_logdir_one_node_does_not_see_fails_on_every_node_with_one_line(unshare, digits, tmp_path):
    shared = tmp_path / "shared"  # node 1 sees an empty folder of its own here
    shared.mkdir()
    run_dir = shared / "run"
    port = helpers.free_port()
    argv = ["--data_dir", digits(16), "--logdir", run_dir, *STEPS]
    results = _job(_agent(0, port, argv, helpers.test_env()),
                   _agent(1, port, argv, helpers.test_env(), private=shared), timeout=120)  # it took 12 s
    line = f"trainkit.selfcheck: error: {run_dir}: not the same folder on every node"
    for rc, out, err in results:
        assert rc != 0, _say(results)
        assert sum(line in e for e in err.splitlines()) == 1, _say(results)
    # nothing of the run was written, and the token is gone (when rank 0 was the node that sees this folder)
    assert not run_dir.exists() or os.listdir(run_dir) == [], os.listdir(run_dir)


def test_the_data_path_is_rank_0s_whatever_each_nodes_environment_says(unshare, digits, tmp_path):
    """One node asks for the cache (TRAINKIT_DATA_CACHE_MB=0) in its folder, the other for memory and
    another folder: both ranks take rank 0's path, and train together."""
    run_dir = tmp_path / "run"
    caches = [tmp_path / "cache0", tmp_path / "cache1"]
    envs = [helpers.test_env(TRAINKIT_DATA_CACHE=caches[0], TRAINKIT_DATA_CACHE_MB=0, TRAINKIT_DATA_DECODERS=1),
            helpers.test_env(TRAINKIT_DATA_CACHE=caches[1], TRAINKIT_DATA_DECODERS=0)]
    port = helpers.free_port()
    argv = ["--data_dir", digits(16), "--logdir", run_dir, *STEPS]
    results = _job(*(_agent(n, port, argv, envs[n]) for n in (0, 1)))
    assert all(rc == 0 for rc, _, _ in results), _say(results)
    _same_params(run_dir)
    decodes = sum(err.count(DECODING) for _, _, err in results)
    if _rank0(results) == 0:  # the cache, in node 0's folder, decoded by node 0's one decoder
        assert decodes == 1 and len(os.listdir(caches[0])) == 1, _say(results)
    else:  # in memory: no node touched a cache, not even the one asking for it
        assert decodes == 0 and not caches[0].exists(), _say(results)
    assert not caches[1].exists()


@pytest.mark.parametrize("cache_seen_by", ["both", "each"])
def test_nodes_sharing_the_cache_folder_decode_once(cache_seen_by, unshare, digits, tmp_path):
    """Two host names, one cache folder: one node decodes and both map the file. The same folder name
    node-local on each node, and one host name (containers on one machine with host networking): each
    node decodes its own, and no node waits for a file it cannot see."""
    run_dir, cache = tmp_path / "run", tmp_path / "cache"
    env = helpers.test_env(TRAINKIT_DATA_CACHE=cache, TRAINKIT_DATA_CACHE_MB=0, **LOOPBACK)
    port = helpers.free_port()
    argv = ["--data_dir", digits(16), "--logdir", run_dir, *STEPS]
    cache.mkdir()
    results = _job(_agent(0, port, argv, env),
                   _agent(1, port, argv, env, **({"private": cache} if cache_seen_by == "each" else {"host": "node1"})))
    assert all(rc == 0 for rc, _, _ in results), _say(results)
    _same_params(run_dir)
    decodes = [err.count(DECODING) for _, _, err in results]
    assert decodes == [1, 1] if cache_seen_by == "each" else sorted(decodes) == [0, 1], \
        f"decoding lines per node: {decodes}\n{_say(results)}"
    names = os.listdir(cache)
    assert len(names) == 1 and names[0].endswith(".u8"), names  # no token or temporary file left
