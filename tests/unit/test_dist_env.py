"""Rank and rendezvous settings read from the environment, in process (from tests/e2e/test_hosts_netns.py,
whose multi-host runs use them)."""

from trainkit import dist, elastic


def test_local_rank_of_a_hand_written_srun_line(monkeypatch):
    """RANK and WORLD_SIZE exported by hand, no LOCAL_RANK: Slurm's or MPI's local rank."""
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    assert dist.local_rank() == 1
    monkeypatch.delenv("SLURM_LOCALID")
    monkeypatch.setenv("OMPI_COMM_WORLD_LOCAL_RANK", "1")
    assert dist.local_rank() == 1


def test_ddgan_rendezvous_id_is_the_same_on_every_node_and_differs_between_runs():
    assert elastic.run_id("10.77.0.1", 6020, 2) == elastic.run_id("10.77.0.1", 6020, 2)  # two nodes' processes
    assert elastic.run_id("10.77.0.1", 6021, 2) != elastic.run_id("10.77.0.1", 6020, 2)  # two runs on one machine
    assert elastic.run_id("127.0.0.1", 0, 1) != elastic.run_id("127.0.0.1", 0, 1)  # one node: nobody to agree with
