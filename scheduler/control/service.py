"""`corral serve`: one process holding the store, the Ray backend, the controller and the HTTP API.

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

from scheduler.api.app import ApiSettings, create_app
from scheduler.backends.gpu_monitor import GpuMonitor
from scheduler.backends.ray_backend import LABEL_NODE, RayBackend
from scheduler.clock import WallClock
from scheduler.control.config import load_live_config
from scheduler.control.controller import Controller
from scheduler.store.controller_lock import ControllerLock, ControllerLockHeld
from scheduler.store.store import Store
from scheduler.store.token_store import BootstrapTokenError, TokenStore

log = logging.getLogger("corral.serve")


class ServeError(ValueError):
    """A start-up problem the operator must fix (one line naming the option)."""


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
        lock = ControllerLock.acquire(store)
    except (ServeError, ControllerLockHeld):
        store.close()
        raise
    options.log_dir.mkdir(parents=True, exist_ok=True)
    try:
        backend = RayBackend(options.ray_address, options.log_dir, clock)
    except BaseException:
        lock.release()
        store.close()
        raise
    controller = Controller(store, backend, config, clock, job_info_metrics=options.job_info_metrics)
    gpus = GpuMonitor(LABEL_NODE)  # NVML agents on real-GPU nodes only
    controller.metrics.attach_gpus(gpus.samples)
    try:
        settings = replace(options.api, default_min_runtime_s=config.policy.default_min_runtime_s)
        app = create_app(  # built (and its imports done) before any thread starts
            store,
            controller,
            tokens,
            options.log_dir,
            clock,
            settings=settings,
            metrics_registry=controller.metrics.registry,
        )
        controller.start()
        server = uvicorn.Server(
            uvicorn.Config(app, host=options.host, port=options.port, log_level="warning", access_log=False)
        )
        log.info(
            "API on http://%s:%d, store %s, Ray %s",
            options.host,
            options.port,
            store.url_for_humans,  # never store.url: it may hold the password
            options.ray_address,
        )
        server.run()
    finally:
        controller.stop()
        gpus.close()
        backend.close()
        lock.release()
        store.close()
