"""PendingShapes keeps, beside each group's sort keys, their first parts as floats (the group walk
compares those): both must stay in step through any adds and removes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.builders import snapshot
from tests.policy.walks import CONFIG, NODES, QUEUES, pending_job, pending_jobs, shapes_of


@settings(max_examples=100, deadline=None)
@given(st.lists(pending_job, min_size=1, max_size=60), st.data())
def test_each_groups_first_parts_follow_its_keys_through_adds_and_removes(
    rows: list[tuple[str, int, int, str, float, float, float | None]], data: st.DataObject
) -> None:
    pending = pending_jobs(rows)
    snap = snapshot(NODES, pending, [], queues=QUEUES, config=CONFIG)
    shapes = shapes_of(snap, pending, CONFIG)
    gone = data.draw(st.lists(st.sampled_from(pending), unique_by=lambda j: j.id))
    for j in gone:
        shapes.remove(j)
    left = {j.id for j in pending} - {j.id for j in gone}
    assert sorted(
        j.id for groups in shapes.groups.values() for g in groups.values() for j in g.jobs
    ) == sorted(left)
    for groups in shapes.groups.values():
        for group in groups.values():
            assert group.keys == sorted(group.keys)
            assert group.firsts == [float(k[0]) for k in group.keys]
            assert len(group.firsts) == len(group.jobs) == group.count
