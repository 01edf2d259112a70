"""Job arrays from the Python client against the live API and controller (scripted backend)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scheduler import Client, InvalidSpec, JobArray, JobState, NotFound
from scheduler.api import schemas
from tests.api.harness import Served


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with Served(tmp_path) as s:
        yield s


def client(served: Served, who: str = "a") -> Client:
    return Client(served.server.url, served.h.secrets[who])


def test_the_array_model_has_the_api_fields() -> None:
    assert set(JobArray.model_fields) == set(schemas.ArrayOut.model_fields)


def test_submit_read_list_and_cancel_an_array(served: Served) -> None:
    with client(served) as api:
        sweep = api.submit_array(command="python train.py", gpus=1, queue="ml-a", array="0-6:2%2", name="s")
        assert [t.array_index for t in sweep.tasks] == [0, 2, 4, 6] and sweep.max_running == 2
        assert sweep.id == sweep.tasks[0].id and all(t.array_id == sweep.id for t in sweep.tasks)
        assert sweep.task(4).id == sweep.tasks[2].id
        again = api.submit_array(
            command="python train.py", gpus=1, queue="ml-a", array="0-6:2%2", name="s", idempotency_key="x"
        )
        assert again.id != sweep.id  # a fresh key each call unless given: a new array
        assert [j.id for j in api.jobs(array=sweep.id)] == [t.id for t in sweep.tasks]
        assert api.array(sweep.id).tasks[1].id == sweep.tasks[1].id
        cancelled = api.cancel_array(sweep.id, grace_s=0)
        assert all(t.cancel_requested for t in cancelled.tasks)
        with pytest.raises(TimeoutError):
            api.wait_array(again.id, timeout=0.3)
        with pytest.raises(NotFound):
            client(served, "b").array(sweep.id)  # another team's


def test_bad_arrays_are_invalid_specs_and_nothing_is_sent(served: Served) -> None:
    with client(served) as api:
        with pytest.raises(InvalidSpec) as caught:
            api.submit_array(command="true", gpus=1, array="5-2")
        assert caught.value.field == "array" and "write 2-5" in str(caught.value)
        with pytest.raises(InvalidSpec) as caught:
            api.submit(command="true", gpus=1, array="0-3")
        assert caught.value.field == "array" and "submit_array" in str(caught.value)
        with pytest.raises(InvalidSpec):
            api.submit_array(command="true", gpus=1)
    assert served.h.store.jobs() == []


def test_the_readme_array_example_runs(
    served: Served, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's Job arrays example against the live API; the backend runs every task it is given."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("### Job arrays") :]
    example = section[
        section.index("```python\n") + 10 : section.index("\n```\n", section.index("```python"))
    ]
    monkeypatch.setenv("CORRAL_API_URL", served.server.url)
    monkeypatch.setenv("CORRAL_TOKEN", served.h.secrets["a"])
    stop = threading.Event()
    most = 0

    def backend() -> None:
        nonlocal most
        done: set[str] = set()
        while not stop.is_set():
            holding = [r for r in served.h.store.jobs() if r.state in (JobState.STARTING, JobState.RUNNING)]
            most = max(most, len(holding))
            for record in holding:
                if record.id not in done:
                    done.add(record.id)
                    served.h.start(record.id)
                    served.h.exit(record.id, 0)
            time.sleep(0.02)

    worker = threading.Thread(target=backend, daemon=True)
    worker.start()
    try:
        prelude = "from scheduler import Client\ncorral = Client()\n"
        exec(compile(prelude + example.replace("wait_array(sweep.id)", "wait_array(sweep.id, timeout=60)"),
                     "README.md", "exec"), {})  # fmt: skip
    finally:
        stop.set()
        worker.join(30)
    assert capsys.readouterr().out.strip() == str(["SUCCEEDED"] * 16)
    assert 1 <= most <= 4  # the %4 cap, as the controller placed them
