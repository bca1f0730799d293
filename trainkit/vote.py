"""The stop vote: how the ranks agree, in one small all-reduce, whether to stop (a signal or
$TRAINKIT_DEADLINE on any rank), the first non-finite step, and how many steps to the next vote.

The distance K between votes is agreed in the vote itself from the measured step time and vote
cost, so that voting costs under VOTE_SHARE of training time, and is capped so that votes are
at most MAX_VOTE_GAP_S apart.
"""

import math
import time

from . import dist, stop
from .stepstats import first_bad_step

VOTE_SHARE = 0.01  # the largest share of training time the stop vote may take
MAX_VOTE_GAP_S = 2.0  # votes at most this far apart, so a signal stops the run promptly


def vote_interval(step_seconds: float, vote_seconds: float) -> int:
    """Steps between stop votes: enough that a vote costs at most VOTE_SHARE of the training
    time between votes, but votes no further apart than MAX_VOTE_GAP_S."""
    step_seconds = max(step_seconds, 1e-9)
    cap = max(1, int(MAX_VOTE_GAP_S / step_seconds))
    return max(1, min(cap, math.ceil(vote_seconds / (VOTE_SHARE * step_seconds) - 1e-9)))


class StopVote:
    """One rank's side of the vote. `stepped()` after every step; `vote(bad_code)` on every rank
    at the same step (collective) returns (stop, first non-finite step or None); `every` is the
    agreed number of steps to the next vote."""

    def __init__(self):
        self.every = 1
        self._cost = 0.0
        self._steps = 0
        self._since = time.perf_counter()

    def stepped(self) -> None:
        self._steps += 1

    def vote(self, bad_code: int) -> tuple:
        elapsed = time.perf_counter() - self._since
        local = [int(stop.stop_requested()), int(bad_code), int(elapsed * 1e6), int(self._cost * 1e6)]
        began = time.perf_counter()
        stopping, bad, elapsed_us, cost_us = dist.all_reduce_max_ints(local)
        self._cost = time.perf_counter() - began
        self.every = vote_interval(elapsed_us * 1e-6 / max(self._steps, 1), cost_us * 1e-6)
        self._steps = 0
        self._since = time.perf_counter()
        return bool(stopping), first_bad_step(bad)
