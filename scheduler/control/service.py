"""`corral serve`: one process holding the store, the Ray backend, the controller and the HTTP API."""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from scheduler.api.app import create_app
from scheduler.api.auth import TokenTable
from scheduler.backends.gpu_monitor import GpuMonitor
from scheduler.backends.ray_backend import LABEL_NODE, RayBackend
from scheduler.clock import WallClock
from scheduler.control.config import load_live_config
from scheduler.control.controller import Controller
from scheduler.store.controller_lock import ControllerLock, ControllerLockHeld
from scheduler.store.store import Store

log = logging.getLogger("corral.serve")


@dataclass(frozen=True, slots=True)
class ServeOptions:
    config: Path
    tokens: Path
    db_url: str
    ray_address: str
    log_dir: Path
    host: str = "127.0.0.1"
    port: int = 8470
    job_info_metrics: bool = False


def serve(options: ServeOptions) -> None:
    """Run until SIGTERM/SIGINT; running jobs keep running (a restart adopts them)."""
    # Many request threads, one store writer and the controller share one GIL: with the default
    # 5 ms switch interval a thread holding the write lock waits behind every other before it can
    # commit (a lock convoy); a shorter interval keeps commits flowing.
    sys.setswitchinterval(float(os.environ.get("CORRAL_SWITCH_INTERVAL_S", "0.0005")))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = load_live_config(options.config)
    tokens = TokenTable.load(options.tokens)
    clock = WallClock()
    store = Store.open(options.db_url)
    try:
        lock = ControllerLock.acquire(store)
    except ControllerLockHeld:
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
        app = create_app(  # built (and its imports done) before any thread starts
            store, controller, tokens, options.log_dir, clock, metrics_registry=controller.metrics.registry
        )
        controller.start()
        server = uvicorn.Server(
            uvicorn.Config(app, host=options.host, port=options.port, log_level="warning", access_log=False)
        )
        log.info(
            "API on http://%s:%d, store %s, Ray %s",
            options.host,
            options.port,
            store.url,
            options.ray_address,
        )
        server.run()
    finally:
        controller.stop()
        gpus.close()
        backend.close()
        lock.release()
        store.close()
