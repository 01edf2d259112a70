"""The simulator collects young garbage less often while it replays (sim/gc_window.py), and puts
the collector's thresholds back when the last replay ends, however replays overlap."""

from __future__ import annotations

import gc
import threading

from scheduler.policy.config import PolicyConfig
from scheduler.sim.gc_window import YOUNG_THRESHOLD, FewerCollections
from scheduler.sim.runner import Simulator
from tests.builders import cluster, cluster_config


def test_a_replay_raises_the_young_threshold_and_puts_it_back() -> None:
    before = gc.get_threshold()
    seen: list[tuple[int, int, int]] = []

    class Watch:
        reads_reasons = False

        def before(self, sim: Simulator, t: float) -> None:
            seen.append(gc.get_threshold())

        def submitted(self, job: object) -> None: ...
        def changed(self, old: object, new: object) -> None: ...
        def cycled(self, sim: Simulator, seconds: float, plan: object) -> None: ...
        def finish(self, sim: Simulator) -> None: ...

    sim = Simulator(cluster_config(cluster(racks=1, nodes_per_rack=1)), [], PolicyConfig(), observer=Watch())
    sim.seed(0.0, list(sim.cluster.nodes), [], [], {})
    sim.run()
    assert seen and all(t[0] == max(before[0], YOUNG_THRESHOLD) for t in seen)
    assert gc.get_threshold() == before


def test_overlapping_windows_restore_the_thresholds_once_the_last_one_closes() -> None:
    before = gc.get_threshold()
    opened, release = threading.Event(), threading.Event()

    def other() -> None:
        with FewerCollections():
            opened.set()
            release.wait(5)

    worker = threading.Thread(target=other)
    with FewerCollections():
        worker.start()
        opened.wait(5)
    assert gc.get_threshold()[0] == max(before[0], YOUNG_THRESHOLD)  # the other still runs
    release.set()
    worker.join(5)
    assert gc.get_threshold() == before
