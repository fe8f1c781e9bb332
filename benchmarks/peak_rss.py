"""Peak memory of a process tree, from /proc: the survey benchmark's subprocesses load this file by its path,
so it imports nothing but the standard library (the code under test may be another checkout's)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path


def _pss(pid: int) -> int:
    """Proportional set size: each shared page (a library, the object store) split among the processes
    mapping it, so a sum over processes counts it once (summed RSS counts it in each)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class PeakRss:
    """Peak summed RSS and peak summed PSS of this process and all its descendants (Ray's raylet,
    workers), from /proc."""

    def __init__(self, every_s: float = 0.5):
        self.peak, self.peak_pss, self._stop, self.every_s = 0, 0, threading.Event(), every_s

    def _tree(self) -> dict[int, int]:
        """pid -> RSS of this process and its descendants."""
        parents, rss = {}, {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                status = Path(f"/proc/{entry}/status").read_text()
            except OSError:
                continue
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            parents[int(entry)] = int(fields["PPid"])
            rss[int(entry)] = int(fields.get("VmRSS", "0 kB").split()[0]) * 1024
        tree, frontier = {os.getpid()}, [os.getpid()]
        while frontier:
            pid = frontier.pop()
            for child, parent in parents.items():
                if parent == pid and child not in tree:
                    tree.add(child)
                    frontier.append(child)
        return {p: rss.get(p, 0) for p in tree}

    def _run(self):
        while not self._stop.is_set():
            tree = self._tree()
            self.peak = max(self.peak, sum(tree.values()))
            self.peak_pss = max(self.peak_pss, sum(_pss(p) for p in tree))
            time.sleep(self.every_s)

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
