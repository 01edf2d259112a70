"""`corral sim --metrics-out`: the live exporter's families over virtual time, as OpenMetrics text."""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections import defaultdict
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from scheduler.cli.sim_cmd import sim
from scheduler.metrics import ClusterCollector, Metrics
from scheduler.policy.config import PolicyConfig
from scheduler.sim.metrics_out import MetricsWriter
from scheduler.sim.runner import SimOptions, Simulator
from scheduler.sim.traces import load_trace
from scheduler.view import ClusterView
from tests.builders import cluster, cluster_config, job

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "examples" / "cluster.yaml"
DEMO = ROOT / "examples" / "traces" / "demo.csv"
LIMIT = 40
LINE = re.compile(r"^(?P<name>[a-z_]+)\{(?P<labels>[^}]*)\} (?P<value>\S+) (?P<ts>\S+)$")


class _Empty:
    def view(self) -> ClusterView:
        return ClusterView(nodes=(), queues=(), priority_classes=(), time=0.0)


def _live_families() -> dict[str, str]:
    """Every corral family the live exporter defines → its type."""
    families = [*Metrics().registry.collect(), *ClusterCollector(_Empty()).collect()]
    return {f.name: f.type for f in families if f.name.startswith("corral_")}


def _labels(text: str) -> dict[str, str]:
    return dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', text))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, dict[str, float]]]:
    out = tmp_path_factory.mktemp("metrics") / "sim.om"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        sim(
            cluster=CLUSTER,
            trace=DEMO,
            policy="fifo,corral",
            output="json",
            limit=LIMIT,
            metrics_out=out,
            metrics_interval=300.0,
        )
    return out.read_text(), json.loads(stdout.getvalue())["policies"]


def _samples(text: str) -> list[tuple[str, dict[str, str], float, float]]:
    rows = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = LINE.match(line)
        assert m, line
        rows.append((m["name"], _labels(m["labels"]), float(m["value"]), float(m["ts"])))
    return rows


def test_every_live_family_appears_once_with_its_type(run: tuple[str, dict]) -> None:  # type: ignore[type-arg]
    text, _ = run
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    assert types == _live_families()
    assert len(re.findall(r"^# TYPE ", text, re.M)) == len(types)
    assert text.endswith("# EOF\n")
    names = {name for name, *_ in _samples(text)}
    for family in ("corral_gpus", "corral_jobs_finished_total", "corral_job_wait_seconds_bucket"):
        assert family in names


def test_the_parser_accepts_the_file(run: tuple[str, dict]) -> None:  # type: ignore[type-arg]
    text, _ = run
    # prometheus_client's parser drops all but the first bucket of a histogram's later points (it
    # takes them for duplicates), so histograms are checked one point at a time below; the other
    # families are parsed whole: grouping by series, time order, counter suffixes.
    sections = [s for s in re.split(r"(?m)^(?=# HELP )", text.removesuffix("# EOF\n")) if s]
    plain = [s for s in sections if not s.split("\n", 2)[1].endswith(" histogram")]
    parsed = {f.name: f for f in text_string_to_metric_families("".join(plain) + "# EOF\n")}
    assert set(parsed) == {n for n, t in _live_families().items() if t != "histogram"}
    for section in (s for s in sections if s not in plain):
        head = "\n".join(section.splitlines()[:2]) + "\n"
        by_point: dict[tuple[str, str], list[str]] = defaultdict(list)
        for line in section.splitlines()[2:]:
            m = LINE.match(line)
            assert m, line
            group = {k: v for k, v in _labels(m["labels"]).items() if k != "le"}
            by_point[(json.dumps(group, sort_keys=True), m["ts"])].append(line)
        last = list(by_point.values())[-1]
        list(text_string_to_metric_families(head + "\n".join(last) + "\n# EOF\n"))
        for lines in by_point.values():
            values = [float(LINE.match(x)["value"]) for x in lines if "_bucket" in x]  # type: ignore[index]
            assert values == sorted(values)
            assert values[-1] == float(LINE.match(lines[-2])["value"])  # type: ignore[index]  # +Inf == _count


def test_samples_are_consistent_over_virtual_time(run: tuple[str, dict]) -> None:  # type: ignore[type-arg]
    text, summaries = run
    rows = _samples(text)
    workload = load_trace(DEMO, limit=LIMIT)
    first_submit = min(j.submit_time for j in workload.jobs)
    assert {labels["policy"] for _, labels, _, _ in rows} == {"fifo", "corral"}

    series: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for name, labels, value, ts in rows:
        policy = labels["policy"]
        assert first_submit <= ts <= first_submit + summaries[policy]["makespan_s"], (name, ts)
        series[(name, json.dumps(labels, sort_keys=True))].append((ts, value))
        if name.endswith("_ratio"):
            assert 0.0 <= value <= 1.0
    for (name, _), points in series.items():
        times = [t for t, _ in points]
        assert times == sorted(times), name
        if name.endswith(("_total", "_bucket", "_count", "_sum")):
            values = [v for _, v in points]
            assert values == sorted(values), name

    gpus: dict[tuple[str, float], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for name, labels, value, ts in rows:
        if name == "corral_gpus":
            gpus[(labels["policy"], ts)][labels["state"]] += value
    assert gpus
    for counts in gpus.values():
        assert 0 <= counts["allocated"] <= counts["total"]
        assert counts["allocated"] + counts["free"] == counts["total"]
    assert any(c["allocated"] > 0 for c in gpus.values())

    for policy, summary in summaries.items():
        end = max(ts for _, labels, _, ts in rows if labels["policy"] == policy)
        finished = sum(
            v
            for name, labels, v, ts in rows
            if name == "corral_jobs_finished_total" and labels["policy"] == policy and ts == end
        )
        assert finished == summary["jobs"] + summary["rejected"] == LIMIT
        submitted = sum(
            v
            for name, labels, v, ts in rows
            if name == "corral_jobs_submitted_total" and labels["policy"] == policy and ts == end
        )
        assert submitted == LIMIT


def test_samples_fall_on_the_interval_grid_and_hold_the_state_there(tmp_path: Path) -> None:
    # One 8-GPU node; a 8-GPU job runs 0 → 250, a second one waits and runs 250 → 350.
    nodes = cluster(racks=1, nodes_per_rack=1)
    jobs = [job("a").gpus(8).submitted(0).trace(250), job("b").gpus(8).submitted(10).trace(100)]
    out = tmp_path / "m.om"
    with MetricsWriter(out, interval_s=100) as writer:
        Simulator(cluster_config(nodes), jobs, _policy(), SimOptions(), writer.recorder("fifo")).run()
    rows = _samples(out.read_text())
    allocated = {
        ts: v for name, labels, v, ts in rows if name == "corral_gpus" and labels["state"] == "allocated"
    }
    assert allocated == {0.0: 8, 100.0: 8, 200.0: 8, 300.0: 8, 350.0: 0}
    pending = {
        ts: v for name, labels, v, ts in rows if name == "corral_jobs" and labels["state"] == "PENDING" and v
    }
    assert pending == {100.0: 1, 200.0: 1}
    waits = {ts: v for name, _, v, ts in rows if name == "corral_job_wait_seconds_count"}
    assert waits[0.0] == 1 and waits[350.0] == 2


def test_nothing_is_recorded_without_an_observer() -> None:
    nodes = cluster(racks=1, nodes_per_rack=1)
    simulator = Simulator(cluster_config(nodes), [job("a").gpus(8).trace(10)], _policy())
    assert simulator.observer is None
    assert len(simulator.run().records) == 1


def _policy() -> PolicyConfig:
    return PolicyConfig(name="fifo")
