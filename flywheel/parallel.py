"""Process pools for batch stages.

Workers are spawned, not forked: the stages run inside Dagster steps, whose log capture and
torch's thread pools hold locks that a forked child inherits in a locked state (a filter run
under Dagster deadlocked with forked workers). Spawned workers import what they need afresh.
"""

import multiprocessing


def worker_context():
    return multiprocessing.get_context("spawn")
