"""GET /v1/jobs/{id}/logs: a snapshot, an offset, and following until the job ends."""

from __future__ import annotations

import threading
import time

from scheduler.model.job import JobState
from tests.api.conftest import Api


def test_log_snapshot_and_offset(api: Api) -> None:
    job = api.submit()
    logs = f"/v1/jobs/{job}/logs"
    assert api.client.get(logs, headers=api.auth("a")).text == ""  # no file yet
    (api.log_dir / f"{job}.log").write_bytes(b"line 1\nline 2\n")
    r = api.client.get(logs, headers=api.auth("a"))
    assert r.status_code == 200 and r.text == "line 1\nline 2\n"
    assert r.headers["content-type"].startswith("text/plain")
    assert api.client.get(logs, params={"offset": 7}, headers=api.auth("a")).text == "line 2\n"
    # past the end: an empty body, not an error; beyond 64 bits: 422 naming the offset
    past = api.client.get(logs, params={"offset": 10**9}, headers=api.auth("a"))
    assert past.status_code == 200 and past.text == ""
    huge = api.client.get(logs, params={"offset": 2**63}, headers=api.auth("a"))
    assert huge.status_code == 422 and huge.json()["field"] == "offset"
    # 007 is job 7: the same log
    padded = f"/v1/jobs/{job.zfill(3)}/logs"
    assert api.client.get(padded, headers=api.auth("a")).text == "line 1\nline 2\n"


def test_follow_streams_new_bytes_until_the_job_is_terminal(api: Api) -> None:
    job = api.submit()
    api.start(job)
    path = api.log_dir / f"{job}.log"

    def worker() -> None:
        time.sleep(0.3)
        for i in range(5):
            with path.open("ab") as f:
                f.write(f"step {i}\n".encode())
            time.sleep(0.1)
        api.exit(job, 0)  # the backend reports the exit; the controller ends the job

    thread = threading.Thread(target=worker)
    began = time.monotonic()
    thread.start()
    received: list[bytes] = []
    params = {"follow": "true"}
    with api.client.stream("GET", f"/v1/jobs/{job}/logs", params=params, headers=api.auth("a")) as r:
        assert r.status_code == 200
        for chunk in r.iter_bytes():
            received.append(chunk)
    thread.join()
    assert b"".join(received) == b"".join(f"step {i}\n".encode() for i in range(5))
    assert len(received) > 1  # streamed as written, not in one piece at the end
    assert time.monotonic() - began < 5
    assert api.store.get(job).state is JobState.SUCCEEDED  # type: ignore[union-attr]
    token_id = api.client.get("/v1/whoami", headers=api.auth("a")).json()["token_id"]
    assert api.app.state.deps.followers.active(token_id) == 0  # the follower's slot was given back
