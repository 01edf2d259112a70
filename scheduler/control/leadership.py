"""Replicated controllers on one store: one leads, the others follow and take over.

The leader holds the store lease (scheduler/store/lease.py) and runs the Controller; every write it
makes is fenced by the lease's epoch. A follower serves the API from the store: submissions and
cancels are stored as on the leader (the leader reads them within a poll interval); `queues`,
`nodes` and queue positions show the leader's view, which it publishes in the store about once a
second; a dry run needs the leader's full state, so a follower answers it 503 with Retry-After.

A follower tries the lease every `try_every_s`. When the leader dies, is paused or is cut off from
the store, its lease expires and one follower takes it with a new epoch, builds a fresh Controller
(which reconciles with Ray and adopts the running jobs, never restarting them) and leads. A leader
whose renewal fails, or whose write is refused by the fence, stops its controller and follows.

Failover time: at most the lease duration (from the old leader's last renewal to expiry) + one try
interval + the new leader's recovery and first cycle (about a second on a few hundred jobs).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from scheduler.clock import Clock
from scheduler.config.live import LiveConfig
from scheduler.control.controller import Controller
from scheduler.control.spec_check import check_spec
from scheduler.metrics import Metrics
from scheduler.model.job import JobSpec
from scheduler.model.queue import with_defaults
from scheduler.policy.suggest import Suggestion
from scheduler.store import controller_state
from scheduler.store.errors import LockLost
from scheduler.store.lease import Lease, current_lease
from scheduler.store.store import Store
from scheduler.store.view_store import PublishedView, publish_view, read_view
from scheduler.view import ClusterView, DryRun, NotLeader, NotReady, ReplayInputs, empty_view

log = logging.getLogger(__name__)

__all__ = ["Leadership"]

_VIEW_CACHE_S = 0.5  # a follower reads the published view at most this often


class Leadership:
    """This process's controller role; also the ControllerHandle the API uses (leader or not)."""

    def __init__(
        self,
        lease: Lease,
        make_controller: Callable[[Lease], Controller],
        *,
        store: Store,
        config: LiveConfig,
        clock: Clock,
        metrics: Metrics,
        ray_health: Callable[[], str],
        try_every_s: float = 1.0,
        publish_every_s: float = 1.0,
        job_info_metrics: bool = False,
    ) -> None:
        self.lease = lease
        self.make_controller = make_controller
        self.store = store
        self.config = config
        self.clock = clock
        self.metrics = metrics
        self.ray_health = ray_health
        self.try_every_s = try_every_s
        self.publish_every_s = publish_every_s
        self.job_info_metrics = job_info_metrics
        self.terms = 0  # how many times this process has led
        self.last_error = ""
        self._controller: Controller | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._cached: PublishedView | None = None
        self._cached_at = float("-inf")
        self._empty = empty_view(config.cluster.priority_classes)

    # --- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        self.metrics.attach(
            _LeaderOnly(self), leader=self.is_leader, job_info=self.job_info_metrics, audit=self.store
        )
        self.metrics.initialize(
            [q.name for q in self.config.cluster.queues], {n.region for n in self.config.cluster.nodes}
        )
        self._thread = threading.Thread(target=self._run, name="corral-leadership", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(30)
        self._step_down("shutting down", release=True)

    def is_leader(self) -> bool:
        with self._lock:
            return self._controller is not None and self.lease.leading

    @property
    def controller(self) -> Controller | None:
        with self._lock:
            return self._controller

    def _run(self) -> None:
        last_renew = last_publish = float("-inf")
        while not self._stopping.is_set():
            now = time.monotonic()
            try:
                controller = self.controller
                if controller is None:
                    if self.lease.try_acquire():
                        self._lead()
                        last_renew = time.monotonic()
                elif controller.fatal:
                    self._step_down(controller.fatal)
                else:
                    if now - last_renew >= self.lease.duration_s / 3:
                        self.lease.renew()
                        last_renew = now
                    if now - last_publish >= self.publish_every_s:
                        publish_view(self.store, controller.view(), self.lease.epoch, self.lease.verify)
                        last_publish = now
                self.last_error = ""
            except LockLost as exc:
                self._step_down(str(exc))
            except Exception as exc:  # the store is down: keep trying; the lease's deadline decides
                self.last_error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
                log.warning("leadership: %s", self.last_error)
            self._stopping.wait(min(self.try_every_s, self.publish_every_s, 0.5))

    def _lead(self) -> None:
        log.info("leading: took the controller lease (epoch %d)", self.lease.epoch)
        controller = self.make_controller(self.lease)
        try:
            controller.start()  # reconciles with the backend: running jobs are adopted, not restarted
        except BaseException:
            _close(controller)
            self.lease.release()
            raise
        with self._lock:
            self._controller = controller
        self.terms += 1

    def _step_down(self, why: str, release: bool = False) -> None:
        with self._lock:
            controller, self._controller = self._controller, None
        if controller is None:
            return
        log.warning("stepping down as leader (epoch %d): %s", self.lease.epoch, why)
        _close(controller)
        if release:
            try:
                self.lease.release()  # a clean shutdown: a follower takes over at its next try
            except Exception:
                log.warning("could not release the lease; it expires by itself", exc_info=True)
        self.lease.epoch = 0

    # --- ControllerHandle -------------------------------------------------------------------------
    def view(self) -> ClusterView:
        controller = self.controller
        if controller is not None:
            return controller.view()
        published = self._published()
        return published.view if published is not None else self._empty

    def check_spec(self, spec: JobSpec) -> JobSpec:
        controller = self.controller
        if controller is not None:
            return controller.check_spec(spec)
        published = self._published()
        if published is None or not published.view.nodes:  # no leader has seen the cluster yet
            raise NotReady("no controller has seen the cluster yet (a leader is starting); retry")
        check_spec(
            spec,
            [n.node for n in published.view.nodes],
            list(self.config.cluster.queues),
            list(self.config.cluster.priority_classes),
        )
        return with_defaults(spec, self.config.cluster)

    def dry_run(self, spec: JobSpec, team: str) -> DryRun:
        controller = self.controller
        if controller is None:
            raise NotLeader(self._leader_url())
        return controller.dry_run(spec, team)

    def suggestions(self, job_id: str) -> Sequence[Suggestion]:
        """The leader's counterfactual reasons for a waiting job (a follower has none)."""
        controller = self.controller
        return controller.suggestions(job_id) if controller is not None else ()

    def replay_inputs(self) -> ReplayInputs:
        controller = self.controller
        if controller is None:
            raise NotLeader(self._leader_url())
        return controller.replay_inputs()

    def wake(self) -> None:
        controller = self.controller
        if controller is not None:
            controller.wake()

    def cordons_changed(self) -> None:
        controller = self.controller
        if controller is not None:
            controller.cordons_changed()  # a follower's admin cordon: the leader rereads within a cycle

    def health(self) -> Mapping[str, str]:
        controller = self.controller
        if controller is not None:
            return controller.health()
        alive = self._thread is not None and self._thread.is_alive()
        try:
            controller_state.ping(self.store)
            store = "ok"
        except Exception as exc:
            store = f"unreachable: {' '.join(str(exc).split())[:200]}"
        return {"controller": "ok" if alive else "stopped", "store": store, "ray": self.ray_health()}

    def role(self) -> Mapping[str, object]:
        leading = self.is_leader()
        return {
            "leader": leading,
            "epoch": self.lease.epoch if leading else 0,
            "leader_url": self._leader_url(),
        }

    # --- helpers ----------------------------------------------------------------------------------
    def _published(self) -> PublishedView | None:
        now = time.monotonic()
        if now - self._cached_at >= _VIEW_CACHE_S:
            try:
                self._cached = read_view(self.store)
            except Exception:
                log.debug("cannot read the published view", exc_info=True)
            self._cached_at = now
        return self._cached

    def _leader_url(self) -> str:
        if self.is_leader():
            return self.lease.api_url
        try:
            info = current_lease(self.store)
        except Exception:
            return ""
        return info.api_url if info is not None and info.expires_in_s > 0 else ""


class _LeaderOnly:
    """The metrics' view: the cluster as this process sees it while it leads, else nothing (only
    the leader exports cluster state, so sums across replicas count each GPU once)."""

    def __init__(self, leadership: Leadership) -> None:
        self._leadership = leadership

    def view(self) -> ClusterView:
        controller = self._leadership.controller
        return controller.view() if controller is not None else self._leadership._empty


def _close(controller: Controller) -> None:
    controller.stop()
    close = getattr(controller.backend, "close", None)
    if callable(close):
        try:
            close()  # detached jobs keep running for the next leader to adopt
        except Exception:
            log.warning("closing the backend failed", exc_info=True)
