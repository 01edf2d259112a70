"""Step 2, admit: nominal quota, borrowing from a cohort's idle quota, borrowing and lending limits."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.model.queue import Queue
from scheduler.policy.quota import QuotaLedger
from tests.builders import queue


def ledger(queues: list[Queue], **usage: dict[str, int]) -> QuotaLedger:
    return QuotaLedger({q.name: q for q in queues}, usage)


def test_nominal_quota_without_cohort() -> None:
    q = queue("q").quota(H100=16).build()
    led = ledger([q])
    assert led.admit("q", "H100", 16).ok
    assert not led.admit("q", "H100", 17).ok
    led.charge("q", "H100", 8)
    assert led.admit("q", "H100", 8).ok
    denied = led.admit("q", "H100", 9)
    assert not denied.ok
    assert denied.detail == "queue q uses 8/16 H100, no cohort"
    # No quota for a GPU type: nothing of it.
    assert not led.admit("q", "A100", 1).ok
    assert led.admit("q", "H100", 8).borrowed == 0


def test_borrowing_from_the_cohorts_idle_quota() -> None:
    a = queue("a").quota(H100=16).cohort("c").build()
    b = queue("b").quota(H100=16).cohort("c").build()
    led = ledger([a, b], b={"H100": 4})  # b leaves 12 idle
    ok = led.admit("a", "H100", 28)
    assert ok.ok and ok.borrowed == 12
    denied = led.admit("a", "H100", 29)
    assert not denied.ok
    # The job's own queue by name; the others only as 'its cohort'.
    assert denied.detail == "queue a uses 0/16 H100; needs 13 more, its cohort lends 12"
    led.charge("a", "H100", 28)
    assert led.borrowed("a") == 12
    assert led.borrowers("c", "H100") == 12


def test_a_borrower_cannot_borrow_the_same_idle_quota_twice() -> None:
    """b lends its 12 idle GPUs; a borrows all 12. A further GPU for a must be refused.

    cohort_idle() leaves a's own borrowing out ('what nobody else borrows'), and _admit compares
    only the new borrowing with it, so a may borrow the same 12 GPUs again and again.
    """
    a = queue("a").quota(H100=16).cohort("c").build()
    b = queue("b").quota(H100=16).cohort("c").build()
    led = ledger([a, b], b={"H100": 4})
    led.charge("a", "H100", 28)
    assert not led.admit("a", "H100", 1).ok
    # The same from a ledger built at once from that usage (as each cycle builds it).
    assert not ledger([a, b], a={"H100": 28}, b={"H100": 4}).admit("a", "H100", 12).ok


def test_two_borrowers_share_one_lender() -> None:
    a = queue("a").quota(H100=8).cohort("c").build()
    b = queue("b").quota(H100=8).cohort("c").build()
    lender = queue("l").quota(H100=16).cohort("c").build()
    led = ledger([a, b, lender], b={"H100": 18})  # b borrows 10 of l's 16
    assert led.cohort_idle(a, "H100") == 6
    assert led.admit("a", "H100", 14).ok
    assert not led.admit("a", "H100", 15).ok


def test_borrowing_limit() -> None:
    a = queue("a").quota(H100=16).cohort("c").borrowing_limit(8).build()
    b = queue("b").quota(H100=32).cohort("c").build()
    led = ledger([a, b])
    assert led.admit("a", "H100", 24).borrowed == 8
    denied = led.admit("a", "H100", 25)
    assert not denied.ok
    assert denied.detail == "queue a would borrow 9 GPUs, limit 8"


def test_borrowing_limit_counts_all_gpu_types_together() -> None:
    a = queue("a").quota(H100=8, A100=8).cohort("c").borrowing_limit(6).build()
    b = queue("b").quota(H100=32, A100=32).cohort("c").build()
    led = ledger([a, b], a={"H100": 12})  # borrows 4 H100
    assert led.borrowed("a") == 4
    assert led.admit("a", "A100", 10).borrowed == 2  # 4 + 2 = 6
    assert not led.admit("a", "A100", 11).ok  # 4 + 3 = 7 > 6


def test_lending_limit() -> None:
    a = queue("a").quota(H100=8).cohort("c").build()
    b = queue("b").quota(H100=16).cohort("c").lending_limit(5).build()
    led = ledger([a, b])
    assert led.admit("a", "H100", 13).borrowed == 5
    assert not led.admit("a", "H100", 14).ok
    # The lending limit caps what b lends, not what b itself may use.
    assert led.admit("b", "H100", 16).ok
    # When b uses 14 of 16, only 2 are idle, below the lending limit.
    led.charge("b", "H100", 14)
    assert led.admit("a", "H100", 10).ok
    assert not led.admit("a", "H100", 11).ok


def test_no_cohort_never_borrows_even_when_others_idle() -> None:
    a = queue("a").quota(H100=8).build()
    b = queue("b").quota(H100=64).build()
    led = ledger([a, b])
    assert not led.admit("a", "H100", 9).ok


def test_owner_cannot_use_quota_it_has_lent_out_without_reclaiming_it() -> None:
    """b (no quota) borrows 1 of a's 8 idle GPUs; a then asks for all 8 of its nominal quota.

    Admitting it would make the cohort use 9 GPUs on a quota of 8 (the simulator's invariant check
    raises 'cohort c uses 9 A100 > its quota 8'). a must first reclaim its lent GPU by preemption
    (preempt.py's reclaim path); until then at most 7 are admissible.
    """
    a = queue("a").quota(A100=8).cohort("c").build()
    b = queue("b").cohort("c").build()
    led = ledger([a, b], b={"A100": 1})
    assert led.admit("a", "A100", 7).ok
    assert not led.admit("a", "A100", 8).ok


def test_unknown_queue_is_not_admitted() -> None:
    led = ledger([queue("a").quota(H100=8).build()])
    denied = led.admit("nope", "H100", 1)
    assert not denied.ok and "does not exist" in denied.detail


def test_refund_undoes_charge() -> None:
    a = queue("a").quota(H100=8).cohort("c").borrowing_limit(4).build()
    b = queue("b").quota(H100=8).cohort("c").build()
    led = ledger([a, b])
    before = [led.admit("a", "H100", n).ok for n in range(14)]
    led.charge("a", "H100", 11)
    led.refund("a", "H100", 11)
    assert [led.admit("a", "H100", n).ok for n in range(14)] == before
    assert before == [True] * 13 + [False]


# --- the incremental cohort totals agree with a brute-force recount -----------------------------
QUEUE = st.builds(
    lambda quota, cohort, borrow, lend: (quota, cohort, borrow, lend),
    st.dictionaries(st.sampled_from(["H100", "A100"]), st.integers(0, 16), max_size=2),
    st.sampled_from([None, "c1", "c2"]),
    st.one_of(st.none(), st.integers(0, 12)),
    st.one_of(st.none(), st.integers(0, 12)),
)


def brute_admit(
    queues: dict[str, Queue], usage: dict[str, dict[str, int]], name: str, t: str, gpus: int
) -> bool:
    """Admit iff afterwards every GPU used above a quota in the cohort is covered by idle quota its
    owner lends (Kueue's rule), and new borrowing stays within the queue's borrowing limit."""
    q = queues[name]
    used = usage.get(name, {}).get(t, 0)
    over = max(0, used + gpus - q.nominal(t)) - max(0, used - q.nominal(t))
    if q.cohort is None:
        return over == 0
    lend = borrow = 0
    for o in queues.values():
        if o.cohort != q.cohort:
            continue
        o_used = usage.get(o.name, {}).get(t, 0) + (gpus if o.name == name else 0)
        idle = max(0, o.nominal(t) - o_used)
        lend += idle if o.lending_limit is None else min(idle, o.lending_limit)
        borrow += max(0, o_used - o.nominal(t))
    if borrow > lend:
        return False
    borrowed = sum(max(0, g - q.nominal(tt)) for tt, g in usage.get(name, {}).items())
    return over == 0 or q.borrowing_limit is None or borrowed + over <= q.borrowing_limit


@settings(max_examples=80, deadline=None)
@given(
    specs=st.lists(QUEUE, min_size=1, max_size=4),
    ops=st.lists(
        st.tuples(st.integers(0, 3), st.sampled_from(["H100", "A100"]), st.integers(-8, 12)),
        max_size=25,
    ),
)
def test_ledger_matches_brute_force(
    specs: list[tuple[dict[str, int], str | None, int | None, int | None]],
    ops: list[tuple[int, str, int]],
) -> None:
    queues = {
        f"q{i}": Queue(name=f"q{i}", quota=quota, cohort=cohort, borrowing_limit=b, lending_limit=lend)
        for i, (quota, cohort, b, lend) in enumerate(specs)
    }
    names = sorted(queues)
    usage: dict[str, dict[str, int]] = {}
    led = QuotaLedger(queues, {})
    for which, t, delta in ops:
        name = names[which % len(names)]
        current = usage.get(name, {}).get(t, 0)
        delta = max(delta, -current)  # usage never goes below zero
        if delta > 0 and not brute_admit(queues, usage, name, t, delta):
            continue  # only admitted work starts: the cohort stays consistent
        led.charge(name, t, delta)
        usage.setdefault(name, {})[t] = current + delta
        fresh = QuotaLedger(queues, usage)  # built from the usage at once, as each cycle does
        for probe in names:
            for pt in ("H100", "A100"):
                for gpus in (1, 4, 8, 16):
                    expected = brute_admit(queues, usage, probe, pt, gpus)
                    assert led.admit(probe, pt, gpus).ok == expected, (probe, pt, gpus, usage)
                    assert fresh.admit(probe, pt, gpus).ok == expected, (probe, pt, gpus, usage)
                    assert led.admits_after(probe, pt, gpus, {}) == expected, (probe, pt, gpus, usage)


@settings(max_examples=150, deadline=None)
@given(
    specs=st.lists(QUEUE, min_size=1, max_size=4),
    used=st.lists(st.tuples(st.integers(0, 24), st.integers(0, 24)), min_size=4, max_size=4),
    refunded=st.lists(st.tuples(st.integers(0, 24), st.integers(0, 24)), min_size=4, max_size=4),
)
def test_admission_after_refunds_is_admission_on_the_usage_without_them(
    specs: list[tuple[dict[str, int], str | None, int | None, int | None]],
    used: list[tuple[int, int]],
    refunded: list[tuple[int, int]],
) -> None:
    """admit_after(..., refunds) answers as a ledger whose usage already lacks the refunds (the
    GPUs of leaving or chosen victims) — the queue's own refund included, counted once."""
    queues = {
        f"q{i}": Queue(name=f"q{i}", quota=quota, cohort=cohort, borrowing_limit=b, lending_limit=lend)
        for i, (quota, cohort, b, lend) in enumerate(specs)
    }
    names = sorted(queues)
    usage = {n: {"H100": used[i][0], "A100": used[i][1]} for i, n in enumerate(names)}
    led = QuotaLedger(queues, usage)
    for t, k in (("H100", 0), ("A100", 1)):
        refunds = {n: min(refunded[i][k], usage[n][t]) for i, n in enumerate(names)}
        after = {n: {**u, t: u[t] - refunds[n]} for n, u in usage.items()}
        fresh = QuotaLedger(queues, after)
        for probe in names:
            for gpus in (1, 4, 8, 16):
                # admits_after: the same answer, without the words
                assert led.admits_after(probe, t, gpus, refunds) == fresh.admit(probe, t, gpus).ok
                assert led.admit_after(probe, t, gpus, refunds).ok == fresh.admit(probe, t, gpus).ok, (
                    probe,
                    t,
                    gpus,
                    usage,
                    refunds,
                )


@settings(max_examples=150, deadline=None)
@given(
    quotas=st.lists(st.integers(0, 12), min_size=2, max_size=4),
    lending=st.one_of(st.none(), st.integers(0, 6)),
    used=st.lists(st.integers(0, 16), min_size=4, max_size=4),
    refunded=st.lists(st.integers(0, 4), min_size=4, max_size=4),
    charges=st.lists(st.tuples(st.integers(0, 3), st.integers(-4, 8)), min_size=1, max_size=12),
)
def test_one_refunds_mapping_stays_right_as_the_cycle_charges(
    quotas: list[int],
    lending: int | None,
    used: list[int],
    refunded: list[int],
    charges: list[tuple[int, int]],
) -> None:
    """A cycle passes the same refunds mapping (its leaving jobs' GPUs) to admit_after again and
    again while it charges placements: what the ledger keeps of it must follow every charge."""
    queues = {
        f"q{i}": Queue(name=f"q{i}", quota={"H100": quota}, cohort="c", lending_limit=lending)
        for i, quota in enumerate(quotas)
    }
    names = sorted(queues)
    usage = {n: {"H100": used[i]} for i, n in enumerate(names)}
    refunds = {n: min(refunded[i], used[i]) for i, n in enumerate(names)}
    led = QuotaLedger(queues, usage)
    for which, delta in charges:
        name = names[which % len(names)]
        delta = max(delta, refunds[name] - usage[name]["H100"])  # what is leaving stays held
        led.charge(name, "H100", delta)
        usage[name]["H100"] += delta
        fresh = QuotaLedger(queues, {n: {"H100": u["H100"] - refunds[n]} for n, u in usage.items()})
        for probe in names:
            for gpus in (1, 2, 4, 8):
                assert led.admit_after(probe, "H100", gpus, refunds).ok == fresh.admit(probe, "H100", gpus).ok


@settings(max_examples=150, deadline=None)
@given(
    quotas=st.lists(st.integers(0, 12), min_size=2, max_size=4),
    used=st.lists(st.integers(0, 16), min_size=4, max_size=4),
    steps=st.lists(st.tuples(st.booleans(), st.integers(0, 3), st.integers(-4, 8)), min_size=1, max_size=14),
)
def test_kept_admissions_follow_charges_and_claims(
    quotas: list[int], used: list[int], steps: list[tuple[bool, int, int]]
) -> None:
    """admit() keeps its answers while its stamp (the charges and claims that can change them)
    holds: at every step of a cycle's charges and claims it must answer as a ledger built afresh
    with that usage and those claims."""
    queues = {f"q{i}": Queue(name=f"q{i}", quota={"H100": q}, cohort="c") for i, q in enumerate(quotas)}
    names = sorted(queues)
    usage = {n: {"H100": used[i]} for i, n in enumerate(names)}
    led = QuotaLedger(queues, usage)
    claims: list[tuple[str, int]] = []
    for is_claim, which, gpus in steps:
        name = names[which % len(names)]
        if is_claim:
            led.claim(name, "H100", abs(gpus) + 1)
            claims.append((name, abs(gpus) + 1))
        else:
            gpus = max(gpus, -usage[name]["H100"])
            led.charge(name, "H100", gpus)
            usage[name]["H100"] += gpus
        fresh = QuotaLedger(queues, usage)
        for claimer, n in claims:
            fresh.claim(claimer, "H100", n)
        for probe in names:
            for want in (1, 2, 4, 8):
                assert led.admit(probe, "H100", want) == fresh.admit_after(probe, "H100", want, {})


def test_a_queues_own_refund_is_counted_once() -> None:
    """Queue a borrows 2 of b's idle H100 (12 of its 10) and 4 of its own GPUs are leaving: with
    them gone it uses 8 and b lends nothing more, so 4 more GPUs are 2 over its quota with nothing
    left to borrow. Counting its own refund twice made up 2 idle GPUs and admitted it."""
    a = queue("a").quota(H100=10).cohort("c").build()
    b = queue("b").quota(H100=2).cohort("c").build()
    led = ledger([a, b], a={"H100": 12}, b={"H100": 0})
    assert not led.admit_after("a", "H100", 4 + 2, {"a": 4}).ok
    assert led.admit_after("a", "H100", 4, {"a": 4}).ok
