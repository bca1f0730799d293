"""A fourth family for tests/e2e/test_toy_family.py: the least a family declares to go through the
main job (a Task, build_task, a draw shared by the sampler, a train and a sample entry point)."""
