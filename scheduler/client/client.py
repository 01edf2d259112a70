"""`Client`: the Corral API from Python (the CLI's own transport underneath, scheduler.client.transport).

    from scheduler import Client
    corral = Client()                       # CORRAL_API_URL / CORRAL_TOKEN, else `corral up`'s context
    job = corral.submit(command="python train.py", gpus=8, queue="ml-a")
    job = corral.wait(job.id)               # a Job: state, exit_code, allocation, ...
    print(corral.logs(job.id)[-2000:])

Every failure is a typed error (scheduler.client.errors): NotFound, PermissionDenied, InvalidSpec
(`.field`), Unreachable (after retrying 429/503 with backoff, honouring Retry-After) or ServerError,
all CorralError.
"""

from __future__ import annotations

import codecs
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote

from scheduler.client.context import load_context
from scheduler.client.errors import InvalidSpec, Unreachable
from scheduler.client.models import Job, JobArray, Node, Queue
from scheduler.client.spec import build_spec
from scheduler.client.transport import RETRIES, TIMEOUT_S, Transport
from scheduler.model.job import JobSpec, JobState

__all__ = ["Client"]

NEXT_CURSOR = "X-Next-Cursor"
PAGE_SIZE = 1000  # the API's largest page
WAIT_POLL_S = (0.2, 5.0)  # wait(): first and longest pause between polls
FOLLOW_RECONNECTS = 5  # follow(): reconnections in a row without new bytes before giving up


def job_path(job_id: str | int, suffix: str = "") -> str:
    """The URL path of a job: the id percent-encoded, so no argument can reach another route."""
    return f"/v1/jobs/{quote(str(job_id), safe='')}{suffix}"


def array_path(array_id: str | int, suffix: str = "") -> str:
    return f"/v1/arrays/{quote(str(array_id), safe='')}{suffix}"


class Client:
    """The Corral API for one token.

    `api_url` (one URL, several separated by commas, or a list: replicated controllers, tried in
    turn) and `token` default to CORRAL_API_URL and CORRAL_TOKEN, else to the context file that
    `corral up` writes (`$CORRAL_HOME/context.yaml`). ContextError if that file is broken."""

    def __init__(
        self,
        api_url: str | Sequence[str] | None = None,
        token: str | None = None,
        *,
        timeout_s: float = TIMEOUT_S,
        retries: int = RETRIES,
    ) -> None:
        given = api_url.split(",") if isinstance(api_url, str) else list(api_url or [])
        urls = [u.strip().rstrip("/") for u in given if u and u.strip()]
        source = "token"
        if not urls or not token:  # only then is the environment or the context file read
            ctx = load_context()
            urls = urls or list(ctx.api_urls)
            token, source = (token, source) if token else (ctx.token, ctx.token_source)
        self._http = Transport(urls, token, timeout_s=timeout_s, retries=retries, token_source=source)

    @property
    def api_url(self) -> str:
        """The API URL in use (with replicated controllers: the one that last answered)."""
        return self._http.url

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- jobs ---------------------------------------------------------------------------------------

    def submit(
        self, spec: JobSpec | Mapping[str, Any] | None = None, /, *, idempotency_key: str | None = None,
        **fields: Any,
    ) -> Job:  # fmt: skip
        """Submit a job: a JobSpec, a mapping of its fields, and/or the fields themselves (`command`,
        `gpus`, `nodes`, `gpus_per_node`, `gpu_type`, `queue`, `priority`, `data_region`,
        `time_limit_s`, `name`, `env`, `checkpoint_dir`, ...; fields win over `spec`). `gpus` is a
        total as for `corral submit --gpus`: ≤ 8 on one node, else whole 8-GPU nodes (or split over
        `nodes`, or nodes of `gpus_per_node`). Each submission carries an Idempotency-Key (yours, or
        a fresh one), so a retried or re-routed submission never makes two jobs; submitting again
        with the same key returns the first job. A job array goes through submit_array()."""
        body = build_spec(spec, fields)
        if body.get("array") is not None:
            raise InvalidSpec(
                "array: submit a job array with submit_array(..., array=...), which returns every task",
                field="array",
            )
        return Job.model_validate(self._post_spec(body, idempotency_key).json())

    def submit_array(
        self, spec: JobSpec | Mapping[str, Any] | None = None, /, *, array: str | int | None = None,
        idempotency_key: str | None = None, **fields: Any,
    ) -> JobArray:  # fmt: skip
        """Submit a job array: one job per index of `array` (Slurm's syntax: "0-15", "1,3,5-9:2",
        "0-99%8" for at most 8 running at once), each with CORRAL_ARRAY_INDEX and
        CORRAL_ARRAY_JOB_ID set, all created in one transaction or none. The rest as submit()."""
        given = {**fields, "array": str(array)} if array is not None else fields
        body = build_spec(spec, given)
        if body.get("array") is None:
            raise InvalidSpec(
                "array: give the indices, e.g. submit_array(..., array='0-15%4')", field="array"
            )
        return JobArray.model_validate(self._post_spec(body, idempotency_key).json())

    def _post_spec(self, body: dict[str, Any], idempotency_key: str | None) -> Any:
        key = idempotency_key or body.get("idempotency_key") or f"py-{uuid.uuid4().hex}"
        return self._http.request("POST", "/v1/jobs", json=body, headers={"Idempotency-Key": key})

    def array(self, array_id: str | int) -> JobArray:
        """The array and every task (NotFound if there is none, or it is another team's)."""
        return JobArray.model_validate(self._http.request("GET", array_path(array_id)).json())

    def cancel_array(self, array_id: str | int, grace_s: float | None = None) -> JobArray:
        """Ask every unfinished task of the array to stop (as cancel() does for one job)."""
        response = self._http.request("POST", array_path(array_id, "/cancel"), json={"grace_s": grace_s})
        return JobArray.model_validate(response.json())

    def wait_array(self, array_id: str | int, timeout: float | None = None) -> JobArray:
        """Poll until every task of the array has ended, as wait() does for one job."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = WAIT_POLL_S[0]
        while True:
            found = self.array(array_id)
            if found.terminal:
                return found
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    running = sum(not t.terminal for t in found.tasks)
                    raise TimeoutError(
                        f"array {found.id}: {running} tasks still unfinished after {timeout:g} s"
                    )
                pause = min(pause, left)
            time.sleep(pause)
            pause = min(WAIT_POLL_S[1], pause * 2)

    def get(self, job_id: str | int) -> Job:
        """The job (NotFound if there is none, or it is another team's)."""
        return Job.model_validate(self._http.request("GET", job_path(job_id)).json())

    def jobs(
        self,
        state: str | JobState | Sequence[str | JobState] | None = None,
        queue: str | None = None,
        all: bool = False,
        limit: int = 1000,
        array: str | int | None = None,
    ) -> list[Job]:
        """Your jobs by id (unfinished ones unless `all` or `state` says otherwise; only the tasks of
        `array` if given), up to `limit`, following the API's pages."""
        states = [state] if isinstance(state, str | JobState) else list(state or [])
        names = [s.value if isinstance(s, JobState) else str(s).upper() for s in states]
        out: list[Job] = []
        cursor: str | None = None
        while len(out) < limit:
            params: dict[str, Any] = {"limit": min(PAGE_SIZE, limit - len(out))}
            if names:
                params["state"] = names
            if queue is not None:
                params["queue"] = queue
            if array is not None:
                params["array"] = str(array)
            if all:
                params["all"] = "true"
            if cursor is not None:
                params["after"] = cursor
            response = self._http.request("GET", "/v1/jobs", params=params)
            out += [Job.model_validate(j) for j in response.json()]
            cursor = response.headers.get(NEXT_CURSOR)
            if cursor is None:
                break
        return out

    def wait(self, job_id: str | int, timeout: float | None = None) -> Job:
        """Poll until the job ends (SUCCEEDED, FAILED, CANCELLED or TIMEOUT) and return it; the pause
        between polls grows from 0.2 s to 5 s. TimeoutError if `timeout` seconds pass first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = WAIT_POLL_S[0]
        while True:
            job = self.get(job_id)
            if job.terminal:
                return job
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"job {job.id} is still {job.state.value} after {timeout:g} s")
                pause = min(pause, left)
            time.sleep(pause)
            pause = min(WAIT_POLL_S[1], pause * 2)

    def logs(self, job_id: str | int) -> str:
        """The job's log so far (stdout and stderr of all its ranks), as text."""
        data = b"".join(self._http.stream(job_path(job_id, "/logs"), follow="false"))
        return data.decode("utf-8", errors="replace")

    def follow(self, job_id: str | int) -> Iterator[str]:
        """The job's log line by line (without the line break) as it is written, until the job ends.
        A dropped connection is resumed from the byte where it broke (Unreachable after
        FOLLOW_RECONNECTS tries in a row that bring nothing new)."""
        offset = 0
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""
        failures = 0
        while True:
            dropped: Unreachable | None = None
            try:
                for chunk in self._http.stream(job_path(job_id, "/logs"), follow="true", offset=offset):
                    if chunk:
                        failures = 0
                    offset += len(chunk)
                    pending += decoder.decode(chunk)
                    *lines, pending = pending.split("\n")
                    yield from lines
            except Unreachable as exc:
                dropped = exc
            if dropped is None and self.get(job_id).terminal:
                break  # the stream ended because the job did (a terminal job's log is complete)
            failures += 1
            if failures > FOLLOW_RECONNECTS:
                raise dropped or Unreachable(f"logs of job {job_id}: the stream keeps ending early")
            time.sleep(min(5.0, 0.2 * 2.0**failures))
        pending += decoder.decode(b"", final=True)
        if pending:
            yield pending

    def cancel(self, job_id: str | int, grace_s: float | None = None) -> Job:
        """Ask the job to stop (SIGTERM, `grace_s` or the job's grace period, then SIGKILL); the job
        as it is now (wait() for it to end)."""
        response = self._http.request("POST", job_path(job_id, "/cancel"), json={"grace_s": grace_s})
        return Job.model_validate(response.json())

    # --- the cluster ----------------------------------------------------------------------------

    def queues(self) -> list[Queue]:
        return [Queue.model_validate(q) for q in self._http.request("GET", "/v1/queues").json()]

    def nodes(self) -> list[Node]:
        return [Node.model_validate(n) for n in self._http.request("GET", "/v1/nodes").json()]

    def whoami(self) -> dict[str, Any]:
        """This token's team, whether it is an admin's, and its limits."""
        answer: dict[str, Any] = self._http.request("GET", "/v1/whoami").json()
        return answer

    def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                json: Any = None) -> Any:  # fmt: skip
        """Any other route of the API (see the README's table), its JSON answer; typed errors."""
        return self._http.request(method, path, params=params, json=json).json()
