"""Child process of test_durability: submits jobs and prints each id once submit() has returned."""

from __future__ import annotations

import sys

from scheduler.store.store import Store
from tests.store.helpers import spec


def main(url: str, count: int) -> None:
    store = Store.open(url)
    print("ready", flush=True)
    for i in range(count):
        record, _ = store.submit(spec(name=f"durable-{i}"), "team-a", float(i))
        print(record.id, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
