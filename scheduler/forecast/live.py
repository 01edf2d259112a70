"""The forecaster wired to a live controller and its store (what `corral serve` attaches)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from scheduler.config.live import LiveConfig
from scheduler.control.controller import Controller
from scheduler.forecast.replay import ForecastOptions
from scheduler.forecast.runtimes import finished_runtime
from scheduler.forecast.service import Forecaster
from scheduler.model.job import JobState
from scheduler.store.store import Store

__all__ = ["attach_forecaster", "finished_runtimes"]

LEARN_FROM = 2000  # the newest finished jobs runtimes are learned from
_ENDED_ON_THEIR_OWN = (JobState.SUCCEEDED, JobState.FAILED, JobState.TIMEOUT)  # not cancelled


def finished_runtimes(store: Store, limit: int = LEARN_FROM) -> Callable[[], Iterator[tuple[str, float]]]:
    """(queue, runtime) of the newest jobs that ended on their own, oldest first."""

    def read() -> Iterator[tuple[str, float]]:
        records = store.jobs(states=_ENDED_ON_THEIR_OWN, limit=limit, newest_first=True)
        for rec in reversed(records):
            runtime = finished_runtime(rec.job)
            if runtime is not None:
                yield rec.job.spec.queue, runtime

    return read


def attach_forecaster(
    controller: Controller,
    store: Store,
    config: LiveConfig,
    interval_s: float,
    options: ForecastOptions | None = None,
) -> Forecaster:
    """A Forecaster that replays this controller's cycles and publishes into its view."""
    forecaster = Forecaster(
        controller.scheduling_state,
        controller.set_estimates,
        config.cluster,
        config.policy,
        finished_runtimes(store),
        interval_s=interval_s,
        options=options,
    )
    controller.attach(forecaster)
    return forecaster
