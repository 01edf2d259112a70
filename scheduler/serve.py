"""`corral serve`: the one place that composes the store, the Ray backend, the controller and the HTTP
API into a process.

Secrets never pass through argv or logs: the database URL (it may hold a password) and the bootstrap
admin token come from the environment or files (see scheduler/cli/local_cmd.py), the log shows the
URL without its password, and the admin token is stored hashed (TokenStore.ensure_admin).
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import uvicorn

from scheduler import faults
from scheduler.api.app import ApiSettings, create_app
from scheduler.backends.gpu_monitor import GpuMonitor
from scheduler.backends.job_user import JobUserError, ensure_job_user
from scheduler.backends.ray_backend import LABEL_NODE, RayBackend
from scheduler.backends.ray_state import gcs_reachable
from scheduler.clock import WallClock
from scheduler.config.live import load_live_config
from scheduler.control.controller import Controller, LiveBackend
from scheduler.control.leadership import Leadership
from scheduler.control.suggestions import team_queues
from scheduler.forecast.live import attach_forecaster
from scheduler.metrics import Metrics
from scheduler.store.lease import DEFAULT_LEASE_S, Lease
from scheduler.store.store import Store
from scheduler.store.token_store import BootstrapTokenError, TokenStore

log = logging.getLogger("corral.serve")


class ServeError(ValueError):
    """A start-up problem the operator must fix (one line naming the option)."""


@dataclass(frozen=True, slots=True)
class JobOptions:
    """How jobs run on the nodes (see RayBackend)."""

    job_user: str | None = None  # when Corral runs as root; None: as Corral's own user
    work_root: Path | None = None  # default <log_dir>/../../work
    log_cap_bytes: int = 1 << 30
    start_timeout_s: float = 30.0


@dataclass(frozen=True, slots=True)
class ServeOptions:
    config: Path
    db_url: str = field(repr=False)  # may hold a password
    ray_address: str
    log_dir: Path
    host: str = "127.0.0.1"
    port: int = 8470
    job_info_metrics: bool = False
    admin_token: str | None = field(default=None, repr=False)  # stored hashed on start
    api: ApiSettings = field(default_factory=ApiSettings)
    jobs: JobOptions = field(default_factory=JobOptions)
    lease_duration_s: float = DEFAULT_LEASE_S
    forecast_interval_s: float = 5.0  # start-time estimates at most this often (0: none)
    advertise_url: str = ""  # how other replicas and clients reach this API (default http://host:port)
    kubernetes: KubernetesOptions | None = None  # read node topology from Kubernetes (Helm)


@dataclass(frozen=True, slots=True)
class KubernetesOptions:
    """The Kubernetes topology source (scheduler/kube): node labels, cordons, readiness."""

    namespace: str | None = None  # the pod's own namespace if None
    rack_label: str = "corral.dev/rack"
    pod_selector: str = "ray.io/is-ray-node=yes"


def bootstrap_admin(tokens: TokenStore, admin_token: str | None, now: float) -> None:
    """Store the bootstrap admin token (hashed), or check that some admin token exists already."""
    if admin_token is not None:
        try:
            tokens.ensure_admin(admin_token, now)
        except BootstrapTokenError as exc:
            raise ServeError(f"--admin-token-file/CORRAL_ADMIN_TOKEN: {exc}") from None
    elif tokens.active_admins() == 0:
        raise ServeError(
            "--admin-token-file: no admin token is stored yet and none was given: give one with "
            "--admin-token-file PATH or CORRAL_ADMIN_TOKEN"
        )


def serve(options: ServeOptions) -> None:
    """Run until SIGTERM/SIGINT; running jobs keep running (a restart adopts them)."""
    # Many request threads, one store writer and the controller share one GIL: with the default
    # 5 ms switch interval a thread holding the write lock waits behind every other before it can
    # commit (a lock convoy); a shorter interval keeps commits flowing.
    sys.setswitchinterval(float(os.environ.get("CORRAL_SWITCH_INTERVAL_S", "0.0005")))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = load_live_config(options.config)
    clock = WallClock()
    store = Store.open(options.db_url)
    tokens = TokenStore(store.engine)
    try:
        bootstrap_admin(tokens, options.admin_token, clock.now())
    except ServeError:
        store.close()
        raise
    for name, value in faults.active().items():
        log.warning("fault injection is ON: %s=%s (CORRAL_FAULTS; tests only)", name, value)
    options.log_dir.mkdir(parents=True, exist_ok=True)
    if options.jobs.job_user:  # fail at start, not at the first takeover
        _job_user(options.jobs.job_user)
    api_url = options.advertise_url or f"http://{options.host}:{options.port}"
    lease = Lease(store, duration_s=options.lease_duration_s, api_url=api_url)
    metrics = Metrics()

    def make_controller(fence: Lease) -> Controller:
        """A fresh controller and Ray connection for each term as leader, with its forecaster."""
        controller = Controller(
            store,
            _topology(options, _backend(options, clock)),
            config,
            clock,
            metrics=metrics,
            job_info_metrics=options.job_info_metrics,
            fence=fence,  # every write checks the lease's epoch in its own transaction
            team_queues=lambda: team_queues(tokens.list(include_revoked=False)),
        )
        if options.forecast_interval_s > 0:
            attach_forecaster(controller, store, config, options.forecast_interval_s)
        return controller

    leadership = Leadership(
        lease,
        make_controller,
        store=store,
        config=config,
        clock=clock,
        metrics=metrics,
        ray_health=lambda: gcs_reachable(options.ray_address, 2.0),
        job_info_metrics=options.job_info_metrics,
    )
    gpus = GpuMonitor(LABEL_NODE)  # NVML agents on real-GPU nodes only
    metrics.attach_gpus(gpus.samples)
    try:
        settings = replace(options.api, default_min_runtime_s=config.policy.default_min_runtime_s)
        app = create_app(  # built (and its imports done) before any thread starts
            store,
            leadership,
            tokens,
            options.log_dir,
            clock,
            settings=settings,
            metrics_registry=metrics.registry,
        )
        server = uvicorn.Server(
            uvicorn.Config(app, host=options.host, port=options.port, log_level="warning", access_log=False)
        )
        leadership.start()
        log.info(
            "API on http://%s:%d (advertised %s), store %s, Ray %s; lease %g s",
            options.host,
            options.port,
            api_url,
            store.url_for_humans,  # never store.url: it may hold the password
            options.ray_address,
            options.lease_duration_s,
        )
        server.run()
    finally:
        leadership.stop()  # gives the lease up: a follower leads at its next try
        gpus.close()
        store.close()


def _topology(options: ServeOptions, backend: RayBackend) -> LiveBackend:
    """The Ray backend, seen through the Kubernetes topology when asked for."""
    kube = options.kubernetes
    if kube is None:
        return backend
    from scheduler.kube.wiring import with_kubernetes_topology  # imports kubernetes: only here

    try:
        return with_kubernetes_topology(
            backend, namespace=kube.namespace, rack_label=kube.rack_label, pod_selector=kube.pod_selector
        )
    except BaseException:
        backend.close()
        raise


def _job_user(name: str) -> str | None:
    try:
        return ensure_job_user(name)
    except JobUserError as exc:
        raise ServeError(f"--job-user: {exc}") from None


def _backend(options: ServeOptions, clock: WallClock) -> RayBackend:
    jobs = options.jobs
    job_user = _job_user(jobs.job_user) if jobs.job_user else None
    if job_user is not None:
        log.info("jobs run as user %s", job_user)
    return RayBackend(
        options.ray_address,
        options.log_dir,
        clock,
        start_timeout_s=jobs.start_timeout_s,
        work_root=jobs.work_root,
        job_user=job_user,
        log_cap_bytes=jobs.log_cap_bytes,
    )
