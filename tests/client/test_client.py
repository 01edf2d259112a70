"""The Python client (`from scheduler import Client`) against a live local API: the real API, the
real controller and store, and the scripted backend (tests/api/harness.py); no mock of the server.
Jobs move as the backend reports them; their logs are the files the API serves."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import scheduler
from scheduler import (
    Client,
    CorralError,
    InvalidSpec,
    Job,
    JobSpec,
    JobState,
    NotFound,
    PermissionDenied,
    Unreachable,
)
from scheduler.api import schemas
from scheduler.client import Node, NodeAllocation, Queue
from scheduler.client import client as client_module
from scheduler.client.context import Context, save_context
from tests.api.harness import Harness, Served, Server, free_port, until

BODY = {"name": "j", "queue": "ml-a", "gpus_per_node": 1, "command": ["true"]}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with Served(tmp_path) as s:
        yield s


def client(served: Served, who: str = "a", **kwargs: object) -> Client:
    return Client(served.server.url, served.h.secrets[who], **kwargs)  # type: ignore[arg-type]


def test_the_models_have_the_api_fields() -> None:
    """The client's models mirror the server's response models (which the client must not import)."""
    assert set(Job.model_fields) == set(schemas.JobOut.model_fields)
    assert set(NodeAllocation.model_fields) == set(schemas.NodeAllocationOut.model_fields)
    assert set(Queue.model_fields) == set(schemas.QueueOut.model_fields)
    assert set(Node.model_fields) == set(schemas.NodeOut.model_fields)


def test_import_scheduler_stays_light_and_exports_the_client() -> None:
    import subprocess
    import sys

    code = (
        "import sys, scheduler; light = 'scheduler.client' not in sys.modules; "
        "from scheduler import Client, NotFound; "
        "print(light, 'fastapi' in sys.modules, 'typer' in sys.modules, 'scheduler.api' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "False", "False", "False"]
    assert issubclass(scheduler.NotFound, scheduler.CorralError)


def test_submit_fields_dict_and_jobspec(served: Served) -> None:
    with client(served) as corral:
        gang = corral.submit(command="python train.py --lr 3e-4", gpus=16, queue="ml-a", name="gang")
        assert (gang.nodes, gang.gpus_per_node, gang.gpus) == (2, 8, 16)
        assert gang.spec.command == ["python", "train.py", "--lr", "3e-4"]
        assert gang.state in (JobState.PENDING, JobState.STARTING) and gang.team == "ml-a"
        split = corral.submit(command=["true"], gpus=4, nodes=2, queue="ml-a", time_limit_s=600)
        assert (split.nodes, split.gpus_per_node, split.time_limit_s) == (2, 2, 600)
        from_dict = corral.submit({**BODY, "name": "from-dict"}, priority="low")
        assert (from_dict.name, from_dict.priority, from_dict.gpus) == ("from-dict", "low", 1)
        spec = JobSpec.submitted({**BODY, "name": "from-spec", "data_region": "eu-west"})
        from_spec = corral.submit(spec)
        assert (from_spec.name, from_spec.data_region) == ("from-spec", "eu-west")
        again = corral.get(from_spec.id)
        assert again.id == from_spec.id and again.spec == from_spec.spec
        # one key, one job: submitting again with the same key returns the first
        first = corral.submit(BODY, idempotency_key="sweep-1")
        assert corral.submit(BODY, idempotency_key="sweep-1").id == first.id
    assert len(served.h.store.jobs()) == 5


def test_wait_logs_and_follow(served: Served) -> None:
    with client(served) as corral:
        job = corral.submit(BODY)
        served.h.start(job.id)
        log = served.h.log_dir / f"{job.id}.log"
        log.write_bytes(b"epoch 1 loss 0.9\n")
        assert corral.logs(job.id) == "epoch 1 loss 0.9\n"
        with pytest.raises(TimeoutError, match="RUNNING"):
            corral.wait(job.id, timeout=0.3)

        def train() -> None:
            for epoch in (2, 3):
                time.sleep(0.2)
                with log.open("ab") as f:
                    f.write(f"epoch {epoch} loss 0.{10 - epoch}\n".encode())
            with log.open("ab") as f:
                f.write("done ✓".encode())  # the last line has no line break
            served.h.exit(job.id, 0)

        worker = threading.Thread(target=train)
        worker.start()
        lines = list(corral.follow(job.id))
        worker.join()
        assert lines == ["epoch 1 loss 0.9", "epoch 2 loss 0.8", "epoch 3 loss 0.7", "done ✓"]
        done = corral.wait(job.id, timeout=10)
        assert done.state is JobState.SUCCEEDED and done.exit_code == 0 and done.succeeded
        assert list(corral.follow(job.id))[-1] == "done ✓"  # an ended job's log, at once


class Proxy:
    """A TCP proxy in front of the API whose connections can be cut (a dropped network)."""

    def __init__(self, port: int) -> None:
        self.upstream = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                down, _ = self.listener.accept()
            except OSError:
                return
            up = socket.create_connection(("127.0.0.1", self.upstream))
            self.conns += [down, up]
            for a, b in ((down, up), (up, down)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def drop(self) -> None:
        for s in self.conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        self.conns = []

    def close(self) -> None:
        self.listener.close()
        self.drop()


def test_follow_resumes_from_the_offset_after_a_dropped_connection(served: Served) -> None:
    proxy = Proxy(served.server.port)
    try:
        with Client(f"http://127.0.0.1:{proxy.port}", served.h.secrets["a"]) as corral:
            job = corral.submit(BODY)
            served.h.start(job.id)
            log = served.h.log_dir / f"{job.id}.log"
            log.write_bytes(b"one\ntw")
            lines = corral.follow(job.id)
            assert next(lines) == "one"
            until(lambda: len(proxy.conns) >= 2, "the followed stream")
            proxy.drop()  # mid-line: "tw" was read, "o" is not written yet
            with log.open("ab") as f:
                f.write(b"o\nthree\n")
            served.h.exit(job.id, 0)
            assert list(lines) == ["two", "three"]  # nothing lost, nothing twice
    finally:
        proxy.close()


def test_cancel(served: Served) -> None:
    with client(served) as corral:
        job = corral.submit(BODY)
        served.h.start(job.id)
        asked = corral.cancel(job.id, grace_s=0)
        assert asked.cancel_requested
        until(lambda: bool(served.h.backend.stops_of(job.id)), "the stop")
        served.h.exit(job.id, 143)
        assert corral.wait(job.id, timeout=10).state is JobState.CANCELLED


def test_jobs_pages_through_the_cursor(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "PAGE_SIZE", 2)  # 5 jobs: three pages of the real API
    with client(served) as corral:
        ids = [corral.submit({**BODY, "name": f"p{i}"}).id for i in range(5)]
        served.h.finish(ids[0], JobState.CANCELLED)
        assert [j.id for j in corral.jobs(all=True)] == ids
        assert [j.id for j in corral.jobs(all=True, limit=3)] == ids[:3]
        assert [j.id for j in corral.jobs()] == ids[1:]  # unfinished only
        assert [j.id for j in corral.jobs(state="cancelled")] == ids[:1]
        assert corral.jobs(queue="ml-b") == []
        assert client(served, "b").jobs(all=True) == []  # another team sees none of them


def test_queues_and_nodes(served: Served) -> None:
    with client(served) as corral:
        queues = {q.name: q for q in corral.queues()}
        assert set(queues) == {"ml-a", "ml-b", "default"} and queues["ml-a"].quota == {"H100": 16, "A100": 8}
        nodes = corral.nodes()
        assert len(nodes) == 5 and all(n.gpus == 8 for n in nodes)
        assert {n.region for n in nodes} == {"cn-north", "eu-west"}


def test_every_typed_error(served: Served) -> None:
    corral = client(served)
    theirs = client(served, "b").submit({**BODY, "queue": "ml-b"})
    with pytest.raises(NotFound) as found:
        corral.get(theirs.id)  # another team's job is not found, never forbidden
    assert found.value.status == 404
    with pytest.raises(NotFound):
        corral.cancel("999999")
    with pytest.raises(NotFound):
        corral.logs("../tokens")  # percent-encoded: no other route is reachable
    with pytest.raises(PermissionDenied) as denied:
        Client(served.server.url, "corral_not-a-token").jobs()
    assert denied.value.status == 401
    with pytest.raises(PermissionDenied):
        client(served, "revoked").jobs()
    with pytest.raises(PermissionDenied) as admin_only:
        corral.request("GET", "/v1/tokens")
    assert admin_only.value.status == 403
    with pytest.raises(PermissionDenied, match="line break"):
        Client(served.server.url, "abc\ndef")  # never sent
    with pytest.raises(InvalidSpec) as zero:
        corral.submit(BODY, gpus=0)
    assert zero.value.field == "gpus" and "at least 1 GPU" in str(zero.value)
    with pytest.raises(InvalidSpec) as odd:
        corral.submit(command="true", queue="ml-a", gpus=12)  # not a whole number of 8-GPU nodes
    assert odd.value.field == "gpus" and "--nodes 2 --gpus-per-node 8" in str(odd.value)
    with pytest.raises(InvalidSpec) as queue:
        corral.submit(BODY, queue="no-such-queue")  # checked by the server
    assert (queue.value.status, queue.value.field) == (400, "queue")
    assert "unknown queue 'no-such-queue'" in str(queue.value)
    with pytest.raises(PermissionDenied) as limited:
        client(served, "limited").submit(BODY, gpus=16)  # more than the token may ask for
    assert limited.value.status == 403 and "up to 8 GPUs per job" in str(limited.value)
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(Unreachable, match="cannot reach the Corral API"):
        Client(dead, "x").jobs()
    for error in (NotFound, PermissionDenied, InvalidSpec, Unreachable):
        assert issubclass(error, CorralError)


def test_a_dead_url_falls_back_to_the_next(served: Served) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with Client([dead, served.server.url], served.h.secrets["a"]) as corral:
        assert corral.submit(BODY).gpus == 1
        assert corral.api_url == served.server.url


def test_503_is_retried_after_retry_after_then_unreachable(tmp_path: Path) -> None:
    """A controller that has not seen the cluster yet answers 503 + Retry-After: 1. The client waits
    what the server asked (more than its first backoff, 0.5 s), and gives up after its retries."""
    h = Harness(tmp_path)  # not opened: the controller has made no cycle
    try:
        with Server(h.app) as server:
            corral = Client(server.url, h.secrets["admin"], retries=1)
            began = time.monotonic()
            with pytest.raises(Unreachable, match="has not seen the cluster yet") as gave_up:
                corral.submit(BODY, data_region="cn-north")
            assert gave_up.value.status == 503
            assert 1.0 <= time.monotonic() - began < 30  # one retry, after Retry-After (1 s)
            assert h.store.jobs() == []

            opened = threading.Timer(0.2, h.open)  # its first cycle comes while the client waits
            opened.start()
            began = time.monotonic()
            job = Client(server.url, h.secrets["admin"]).submit(BODY, data_region="cn-north")
            waited = time.monotonic() - began
            opened.join()
            assert 1.0 <= waited < 30, waited  # Retry-After honoured, not the 0.5 s backoff
            assert [j.id for j in h.store.jobs()] == [job.id]  # retried: still one job
    finally:
        h.close()


def test_client_finds_the_api_in_the_environment_then_the_context_file(
    served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "corral-home"
    monkeypatch.setenv("CORRAL_HOME", str(home))
    monkeypatch.delenv("CORRAL_API_URL", raising=False)
    monkeypatch.delenv("CORRAL_TOKEN", raising=False)
    save_context(Context(api_url=served.server.url, token=served.h.secrets["b"]))
    assert Client().whoami()["team"] == "ml-b"  # the context file
    monkeypatch.setenv("CORRAL_TOKEN", served.h.secrets["a"])
    assert Client().whoami()["team"] == "ml-a"  # the environment wins
    monkeypatch.setenv("CORRAL_API_URL", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(Unreachable):
        Client(retries=0).jobs()
    assert Client(served.server.url, served.h.secrets["vision"]).whoami()["team"] == "vision"  # args win


def test_the_readme_example_runs(
    served: Served, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's notebook-style example, as written, against the live API: a sweep of three jobs
    that the backend runs (each writes a log line and exits 0)."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("### Python client") :]
    example = section[section.index("```python\n") + 10 : section.index("\n```\n")]
    monkeypatch.setenv("CORRAL_API_URL", served.server.url)
    monkeypatch.setenv("CORRAL_TOKEN", served.h.secrets["a"])
    stop = threading.Event()

    def backend() -> None:
        done: set[str] = set()
        while not stop.is_set():
            for record in served.h.store.jobs():
                if record.job.id not in done:
                    served.h.start(record.job.id)
                    (served.h.log_dir / f"{record.job.id}.log").write_text(f"{record.job.spec.name}: ok\n")
                    served.h.exit(record.job.id, 0)
                    done.add(record.job.id)
            time.sleep(0.05)

    worker = threading.Thread(target=backend, daemon=True)
    worker.start()
    try:
        exec(compile(example, "README.md", "exec"), {})
    finally:
        stop.set()
        worker.join(30)
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[:3] for line in out[:3]] == [
        ["lr-0.0001", "SUCCEEDED", "0"],
        ["lr-0.0003", "SUCCEEDED", "0"],
        ["lr-0.001", "SUCCEEDED", "0"],
    ]
    assert out[3:] == ["lr-0.0001: ok", "lr-0.001: ok"]


def test_explicit_url_and_token_need_no_context_file(
    served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "broken-home"
    home.mkdir()
    (home / "context.yaml").write_text("[not: a mapping")
    monkeypatch.setenv("CORRAL_HOME", str(home))
    assert client(served).whoami()["team"] == "ml-a"
    from scheduler.client import ContextError

    with pytest.raises(ContextError, match="not valid YAML"):
        Client(served.server.url)  # the token would come from the broken file
