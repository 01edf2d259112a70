"""The Python client against a real `corral up` (API, controller, local Ray): a job runs for real,
its log is read and followed, another is cancelled, and each typed error comes from the real API."""

from __future__ import annotations

import pytest

from scheduler import Client, InvalidSpec, JobState, NotFound, PermissionDenied, Unreachable
from tests.api.harness import free_port
from tests.e2e.conftest import TEAM_A, TEAM_B, Corral

pytestmark = [pytest.mark.xdist_group("e2e"), pytest.mark.timeout(600)]

STEPS = "import time\nfor i in range(3): print('step', i, flush=True); time.sleep(0.5)"


def test_the_client_against_corral_up(corral: Corral, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_HOME", str(corral.home))  # the API URL from `corral up`'s context file
    monkeypatch.delenv("CORRAL_API_URL", raising=False)
    monkeypatch.setenv("CORRAL_TOKEN", corral.tokens[TEAM_A])
    here = str(corral.cwd)  # a directory the job user may enter
    with Client() as api:
        job = api.submit(
            command=[
                "python3",
                "-c",
                "import time\nfor i in range(3): print('step', i, flush=True); time.sleep(0.5)",
            ],
            gpus=1,
            working_dir=here,
            name="client-live",
        )
        # following a job that never starts would wait for ever: a bounded wait says why first
        corral.wait_for(job.id, ["RUNNING", "SUCCEEDED"], timeout=120, token=TEAM_A)
        assert [line for line in api.follow(job.id) if line.startswith("step")] == [
            "step 0",
            "step 1",
            "step 2",
        ]
        done = api.wait(job.id, timeout=120)
        assert done.state is JobState.SUCCEEDED and done.exit_code == 0
        assert "step 2" in api.logs(job.id)
        assert job.id in {j.id for j in api.jobs(all=True)}

        # the cluster as tests/e2e/cluster.yaml declares it: its queues, and Ray's nodes with their regions
        queues = {q.name: q for q in api.queues()}
        assert sorted(queues) == ["default", "nlp", "vision"]
        assert [(queues[q].cohort, queues[q].quota) for q in ("default", "vision", "nlp")] == [
            ("default", {"H100": 24}),
            ("default", {"H100": 8}),
            ("default", {"H100": 8}),
        ]
        nodes = {n.id: n for n in api.nodes()}
        assert {i: (n.region, n.rack, n.gpu_type, n.gpus) for i, n in nodes.items()} == {
            "cn-east-r1-n00": ("cn-east", "cn-east/r1", "H100", 8),
            "cn-north-r1-n00": ("cn-north", "cn-north/r1", "H100", 8),
            "cn-north-r1-n01": ("cn-north", "cn-north/r1", "H100", 8),
        }
        assert all(n.used + n.free == n.gpus and n.labels for n in nodes.values()), nodes

        sleeper = api.submit(command="sleep 600", gpus=8, data_region="cn-east", working_dir=here)
        api.cancel(sleeper.id, grace_s=1)
        assert api.wait(sleeper.id, timeout=120).state is JobState.CANCELLED

        with pytest.raises(NotFound):
            Client(token=corral.tokens[TEAM_B]).get(job.id)  # another team's job
        with pytest.raises(NotFound):
            api.get("987654321")
        with pytest.raises(PermissionDenied):
            Client(token="corral_not-a-token").jobs()
        with pytest.raises(PermissionDenied):
            api.request("GET", "/v1/tokens")  # an admin route
        with pytest.raises(InvalidSpec) as zero:
            api.submit(command="true", gpus=0, working_dir=here)
        assert zero.value.field == "gpus"
        with pytest.raises(InvalidSpec) as queue:
            api.submit(command="true", gpus=1, queue="no-such-queue", working_dir=here)
        assert queue.value.field == "queue"
    with pytest.raises(Unreachable):
        Client(f"http://127.0.0.1:{free_port()}", retries=0).jobs()
