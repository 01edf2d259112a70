"""Log followers against the real server (uvicorn): many of them leave the API responsive, each token
may hold only so many, and a follower that goes away gives its slot back at once."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from scheduler.api.app import ApiSettings
from scheduler.model.job import JobState
from tests.api.harness import ROOT, Served, until

FOLLOWERS = 100
JOBS = 10
LINES = 20

# A separate process holds the followers (asyncio, one connection each), so that the client's work
# does not share the server's interpreter. It prints "ready" once every stream has its headers,
# then, at the end, how many bytes each stream received.
FOLLOWER_SCRIPT = r"""
import asyncio, json, sys
import httpx

url, plan = sys.argv[1], json.loads(sys.argv[2])

async def follow(client, token, job):
    got = 0
    headers = {"Authorization": f"Bearer {token}"}
    async with client.stream("GET", f"/v1/jobs/{job}/logs", params={"follow": "true"}, headers=headers) as r:
        assert r.status_code == 200, r.status_code
        ready.append(1)
        async for chunk in r.aiter_bytes():
            got += len(chunk)
    return got

async def main():
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    timeout = httpx.Timeout(120, connect=10)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:
        tasks = [asyncio.create_task(follow(client, t, j)) for t, j in plan]
        while len(ready) < len(plan):
            await asyncio.sleep(0.05)
        print("ready", flush=True)
        print(json.dumps(await asyncio.gather(*tasks)), flush=True)

ready = []
asyncio.run(main())
"""


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with Served(tmp_path, ApiSettings(log_poll_s=0.2)) as s:
        yield s


def _latencies(http: httpx.Client, headers: dict[str, str], n: int = 30) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = http.get("/v1/jobs", headers=headers)
        out.append(time.perf_counter() - t0)
        assert r.status_code == 200
    return out


def test_a_hundred_followers_leave_the_job_list_fast(
    served: Served, record_property: pytest.RecordProperty
) -> None:
    h = served.h
    with httpx.Client(base_url=served.server.url, timeout=30) as http:
        tokens = []
        for _ in range(-(-FOLLOWERS // h.settings.max_followers)):  # enough tokens for the cap of 8
            r = http.post("/v1/tokens", json={"team": "ml-a"}, headers=h.auth("admin"))
            tokens.append(r.json()["token"])
        jobs = []
        for i in range(JOBS):
            r = http.post(
                "/v1/jobs",
                json={"name": f"j{i}", "queue": "ml-a", "gpus_per_node": 1, "command": ["true"]},
                headers=h.auth("a"),
            )
            jobs.append(r.json()["id"])
        for job in jobs:
            h.start(job)
        baseline = _latencies(http, h.auth("a"))
        plan = [(tokens[i // h.settings.max_followers], jobs[i % JOBS]) for i in range(FOLLOWERS)]
        followers = subprocess.Popen(
            [sys.executable, "-c", FOLLOWER_SCRIPT, served.server.url, json.dumps(plan)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert followers.stdout is not None
            assert followers.stdout.readline().strip() == "ready", (
                followers.stderr.read() if followers.stderr else ""
            )
            stop = threading.Event()

            def write_logs() -> None:  # the jobs keep logging while we measure
                for n in range(LINES):
                    for job in jobs:
                        with (h.log_dir / f"{job}.log").open("a") as f:
                            f.write(f"line {n}\n")
                    if stop.wait(0.05):
                        return

            writer = threading.Thread(target=write_logs)
            writer.start()
            loaded = _latencies(http, h.auth("a"))
            writer.join(timeout=30)
            for job in jobs:  # the jobs end: every follower must finish by itself
                h.exit(job, 0)
            for job in jobs:
                h.wait_for(job, [JobState.SUCCEEDED])
            out, err = followers.communicate(timeout=60)
        finally:
            if followers.poll() is None:
                followers.kill()
                followers.wait(timeout=10)
    assert followers.returncode == 0, err
    sizes = json.loads(out.strip().splitlines()[-1])
    expected = sum(len(f"line {n}\n") for n in range(LINES))
    assert sizes == [expected] * FOLLOWERS  # every follower got every byte, then ended
    p50, worst = statistics.median(loaded), max(loaded)
    record_property("jobs_latency_p50_s_no_followers", round(statistics.median(baseline), 4))
    record_property("jobs_latency_p50_s_100_followers", round(p50, 4))
    record_property("jobs_latency_max_s_100_followers", round(worst, 4))
    print(
        f"\nGET /v1/jobs: p50 {statistics.median(baseline) * 1000:.1f} ms alone, "
        f"p50 {p50 * 1000:.1f} ms / max {worst * 1000:.1f} ms with {FOLLOWERS} followers"
    )
    assert p50 < 0.25 and worst < 2.0  # a sanity bound on a shared 2-core machine, not a benchmark
    until(lambda: h.app.state.deps.watcher.watched == 0, "the end watcher to forget the jobs")


def test_each_token_may_follow_only_so_many_logs(served: Served) -> None:
    h = served.h
    cap = h.settings.max_followers
    with httpx.Client(base_url=served.server.url, timeout=30) as http:
        r = http.post(
            "/v1/jobs",
            json={"name": "j", "queue": "ml-a", "gpus_per_node": 1, "command": ["true"]},
            headers=h.auth("a"),
        )
        job = r.json()["id"]
        h.start(job)
        url = f"{served.server.url}/v1/jobs/{job}/logs"
        clients = [httpx.Client(timeout=30) for _ in range(cap)]
        streams = []
        try:
            for c in clients:
                stream = c.stream("GET", url, params={"follow": "true"}, headers=h.auth("a"))
                response = stream.__enter__()
                assert response.status_code == 200
                streams.append((stream, c))
            refused = http.get(url, params={"follow": "true"}, headers=h.auth("a"))
            assert refused.status_code == 429 and refused.headers["Retry-After"] == "5"
            assert (
                refused.json()["field"] == "follow"
                and f"already follows {cap} logs" in refused.json()["error"]
            )
            # a plain read is not a follower, and another token has slots of its own
            assert http.get(url, params={"follow": "false"}, headers=h.auth("a")).status_code == 200
            with (
                httpx.Client(timeout=30) as c2,
                c2.stream("GET", url, params={"follow": "true"}, headers=h.auth("admin")) as admin,
            ):
                assert admin.status_code == 200
            # a follower that disconnects while the log is quiet frees its slot at once
            stream, c = streams.pop()
            c.close()
            deps = h.app.state.deps
            token_id = http.get("/v1/whoami", headers=h.auth("a")).json()["token_id"]
            until(lambda: deps.followers.active(token_id) == cap - 1, "the slot of the closed follower")
            with http.stream("GET", url, params={"follow": "true"}, headers=h.auth("a")) as again:
                assert again.status_code == 200
        finally:
            for c in clients:
                c.close()
        until(lambda: h.app.state.deps.followers.active(token_id) == 0, "every slot back")
