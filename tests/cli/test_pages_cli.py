"""The CLI follows the API's cursors up to its own --limit and says on stderr when more exist."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from scheduler.cli.client import ApiClient
from scheduler.cli.context import Context
from tests.api.harness import Served

JOBS = 7


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Served, list[str]]]:
    with Served(tmp_path) as s:
        cli = s.cli("a")
        ids = [cli("submit", "--queue", "ml-a", "-q", "--", "true").stdout.strip() for _ in range(JOBS)]
        for job in ids[:5]:
            s.h.finish(job)
        yield s, ids


def test_pages_are_followed_in_order_without_gaps(served: tuple[Served, list[str]]) -> None:
    s, ids = served
    api = ApiClient(Context(api_url=s.server.url, token=s.h.secrets["a"]))
    try:
        every, more = api.pages("/v1/jobs", limit=100, page_size=2, all="true")
        assert [j["id"] for j in every] == ids and more is False  # four pages of 2, 2, 2, 1
        first, more = api.pages("/v1/jobs", limit=3, page_size=2, all="true")
        assert [j["id"] for j in first] == ids[:3] and more is True
        newest, more = api.pages("/v1/history", limit=4, page_size=3)
        assert [j["id"] for j in newest] == ids[:5][::-1][:4] and more is True
    finally:
        api.close()


def test_jobs_and_history_say_when_more_exist(served: tuple[Served, list[str]]) -> None:
    s, ids = served
    cli = s.cli("a")
    cut = cli("jobs", "--all", "--limit", "3", "-o", "json")
    assert cut.returncode == 0 and [j["id"] for j in json.loads(cut.stdout)] == ids[:3]
    assert cut.stderr.startswith("showing the first 3 jobs; more exist")
    whole = cli("jobs", "--all", "-o", "json")
    assert [j["id"] for j in json.loads(whole.stdout)] == ids and whole.stderr == ""
    history = cli("history", "--limit", "2")
    assert history.returncode == 0 and "older ones exist" in history.stderr
    assert [line.split()[0] for line in history.stdout.splitlines()[1:]] == [ids[4], ids[3]]
    bad = cli("jobs", "--limit", "0")
    assert bad.returncode == 2 and "--limit: must be 1 to" in bad.stderr
