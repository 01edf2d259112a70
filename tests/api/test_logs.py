"""GET /v1/jobs/{id}/logs: a snapshot, an offset, and following until the job ends."""

from __future__ import annotations

import threading
import time

from scheduler.model.job import JobState
from tests.api.conftest import Api
from tests.api.harness import auth, finish, start

SPEC = {"name": "j", "queue": "ml-a", "gpus_per_node": 1, "command": ["true"]}


def submit(api: Api) -> str:
    return str(api.client.post("/v1/jobs", json=SPEC, headers=auth("a")).json()["id"])


def test_log_snapshot_and_offset(api: Api) -> None:
    job = submit(api)
    assert api.client.get(f"/v1/jobs/{job}/logs", headers=auth("a")).text == ""  # no file yet
    (api.log_dir / f"{job}.log").write_bytes(b"line 1\nline 2\n")
    r = api.client.get(f"/v1/jobs/{job}/logs", headers=auth("a"))
    assert r.status_code == 200 and r.text == "line 1\nline 2\n"
    assert r.headers["content-type"].startswith("text/plain")
    assert api.client.get(f"/v1/jobs/{job}/logs", params={"offset": 7}, headers=auth("a")).text == "line 2\n"


def test_follow_streams_new_bytes_until_the_job_is_terminal(api: Api) -> None:
    job = submit(api)
    start(api.store, job, {"cn-north-r1-n00": (0,)})
    path = api.log_dir / f"{job}.log"

    def worker() -> None:
        time.sleep(0.3)
        for i in range(5):
            with path.open("ab") as f:
                f.write(f"step {i}\n".encode())
            time.sleep(0.1)
        finish(api.store, job, JobState.SUCCEEDED)

    thread = threading.Thread(target=worker)
    began = time.monotonic()
    thread.start()
    received: list[bytes] = []
    with api.client.stream("GET", f"/v1/jobs/{job}/logs", params={"follow": "true"}, headers=auth("a")) as r:
        assert r.status_code == 200
        for chunk in r.iter_bytes():
            received.append(chunk)
    thread.join()
    assert b"".join(received) == b"".join(f"step {i}\n".encode() for i in range(5))
    assert len(received) > 1  # streamed as written, not in one piece at the end
    assert time.monotonic() - began < 5
