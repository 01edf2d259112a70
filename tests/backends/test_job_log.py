"""The job log's cap and its pump, on real files and pipes (no Ray)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from scheduler.backends.job_log import MAX_LINE, JobLog, pump, truncation_line


def test_ranks_sharing_a_log_stop_exactly_at_the_cap_with_one_truncation_line(tmp_path: Path) -> None:
    path, cap = str(tmp_path / "job.log"), 8 * 1024
    ranks = [JobLog.open(path, cap, f"[rank {r}] ".encode()) for r in range(4)]

    def chatter(rank: int) -> None:
        for i in range(2000):
            ranks[rank].write_line(f"line {i} of rank {rank}\n".encode())

    threads = [threading.Thread(target=chatter, args=(r,)) for r in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    data = Path(path).read_bytes()
    marker = truncation_line(cap)
    assert len(data) == cap + len(marker) and data.endswith(marker) and data.count(marker) == 1
    *whole, cut, end = data[:cap].split(b"\n")  # lines never interleave; the last one was cut
    assert end == b"" and all(line.startswith(b"[rank ") and b" of rank " in line for line in whole)
    assert len(cut) < len(b"[rank 0] line 1999 of rank 0")
    assert not any(r.writing for r in ranks)


def test_a_line_that_would_cross_the_cap_is_cut_at_the_cap(tmp_path: Path) -> None:
    path = str(tmp_path / "job.log")
    job_log = JobLog.open(path, 100)
    job_log.write_line(b"a" * 60)
    job_log.write_line(b"b" * 60)  # 61 + 61 > 100: cut to fill exactly 100 bytes, then the marker
    job_log.write_line(b"c")
    assert Path(path).read_bytes() == b"a" * 60 + b"\n" + b"b" * 38 + b"\n" + truncation_line(100)


def test_a_full_disk_never_raises_and_the_pump_drains_the_pipe(tmp_path: Path) -> None:
    read_fd, write_fd = os.pipe()
    job_log = JobLog.open("/dev/full", 1 << 30)  # every write fails with ENOSPC
    reader = threading.Thread(target=pump, args=(os.fdopen(read_fd, "rb"), job_log))
    reader.start()
    t0 = time.monotonic()
    chunk = b"x" * 1000 + b"\n"
    for _ in range(2000):  # 2 MB through a 64 KiB pipe: blocks unless drained
        os.write(write_fd, chunk)
    os.close(write_fd)
    reader.join(timeout=10)
    assert not reader.is_alive() and time.monotonic() - t0 < 10
    assert not job_log.writing


def test_a_line_without_newline_is_split_not_buffered_without_end(tmp_path: Path) -> None:
    read_fd, write_fd = os.pipe()
    path = tmp_path / "job.log"
    reader = threading.Thread(target=pump, args=(os.fdopen(read_fd, "rb"), JobLog.open(str(path), 1 << 30)))
    reader.start()
    with os.fdopen(write_fd, "wb") as out:
        out.write(b"y" * (MAX_LINE * 2 + 10))
    reader.join(timeout=10)
    assert [len(line) for line in path.read_bytes().split(b"\n")] == [MAX_LINE, MAX_LINE, 10, 0]
    assert path.stat().st_mode & 0o777 == 0o600  # jobs (as another user) cannot read logs
