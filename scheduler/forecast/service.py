"""The forecaster beside the live controller: estimates recomputed in their own thread.

Every `interval_s` (and never more often than the replay's own cost allows: at least 4× the last
replay's time between two, so it takes at most a fifth of a core that the controller and the API
share) it takes the state of the controller's last cycle — an immutable SchedulingState, read under
the controller's lock without copying — and, if it changed since the last forecast, replays it
forward (scheduler/forecast/replay.py) and hands the estimates to `publish`. It never runs inside
the decide cycle, and a failure is logged and retried at the next interval: estimates are
advisory, scheduling never waits for them. Runtimes are learned again every `learn_every_s` from
the jobs that finished (`finished()`: (queue, runtime) pairs).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping

from scheduler.forecast.replay import Forecast, ForecastOptions, forecast_starts
from scheduler.forecast.runtimes import RuntimeModel
from scheduler.model.queue import ClusterConfig
from scheduler.policy.config import PolicyConfig
from scheduler.view import SchedulingState

__all__ = ["Forecaster"]

log = logging.getLogger("corral.forecast")


class Forecaster:
    def __init__(
        self,
        source: Callable[[], SchedulingState | None],
        publish: Callable[[Mapping[str, float | None]], None],
        cluster: ClusterConfig,
        policy: PolicyConfig,
        finished: Callable[[], Iterable[tuple[str, float]]] = lambda: (),
        *,
        interval_s: float = 5.0,
        learn_every_s: float = 60.0,
        options: ForecastOptions | None = None,
    ) -> None:
        self.source = source
        self.publish = publish
        self.cluster = cluster
        self.policy = policy
        self.finished = finished
        self.interval_s = interval_s
        self.learn_every_s = learn_every_s
        self.options = options or ForecastOptions()
        self.runtimes = RuntimeModel()
        self.last: Forecast | None = None
        self.last_error = ""
        self._learned_at = float("-inf")
        self._seen: SchedulingState | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="corral-forecast", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def refresh(self) -> Forecast | None:
        """One forecast now, if the controller's state changed since the last one (None if not)."""
        state = self.source()
        if state is None or state is self._seen:
            return None
        mono = time.monotonic()
        if mono - self._learned_at >= self.learn_every_s:
            self.runtimes = RuntimeModel.learn(self.finished())
            self._learned_at = mono
        forecast = forecast_starts(state, self.cluster, self.policy, self.runtimes, self.options)
        self._seen = state
        self.last = forecast
        self.publish(forecast.starts)
        return forecast

    def _run(self) -> None:
        wait = 0.0
        while not self._stopping.wait(wait):
            try:
                forecast = self.refresh()
                self.last_error = ""
                spent = forecast.wall_s if forecast is not None else 0.0
            except Exception as exc:  # advisory: log, keep the last estimates, try again later
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("start-time forecast failed")
                spent = 0.0
            wait = max(self.interval_s, 4.0 * spent)
