"""Memory and CPU of a process tree, sampled in a thread: what `scripts/bench.py` and
`batchrun compare` report as peak RSS (the driver, its Ray workers, the whole tree) and
CPU seconds by kind of process.

RSS counts shared pages (Ray's object store) once per process that maps them, so sums
over Ray's processes are upper bounds. A process's last few milliseconds between two
samples can be missed.
"""

from __future__ import annotations

import threading
import time

import psutil

RAY_DAEMONS = ("gcs_server", "raylet", "dashboard/dashboard.py", "dashboard/agent.py",
               "monitor.py", "runtime_env", "DashboardAgent", "RuntimeEnvAgent")
"""Ray's own processes, by executable, script or process title; other processes under the
root are its workers (Ray's default_worker.py renames itself ray::<Actor>)."""


class TreeWatcher:
    """Samples the summed RSS of a process and all its descendants in a thread.

    `peak`: the whole tree (bytes); `peak_driver`: the root alone; `peak_workers`: the
    processes titled `ray::` (Ray's workers and actors). `cpu`: pid → (kind, latest user +
    system CPU seconds seen), kind being driver, ray_daemons or workers. `peak_one`: kind →
    the largest RSS one process of that kind reached (bytes): "worker RSS bounded" reads
    off the largest single worker, not off the sum of all of them; `peak_one_at`: when
    (time.time())."""

    def __init__(self, pid: int, interval: float) -> None:
        self.root = psutil.Process(pid)
        self.interval = interval
        self.seen: dict[int, psutil.Process] = {pid: self.root}
        self.peak = self.peak_driver = self.peak_workers = self.peak_run = 0
        """`peak_run`: the driver plus its `ray::` workers, summed in one sample."""
        self.cpu: dict[int, tuple[str, float]] = {}
        self.peak_one: dict[str, int] = {}
        self.peak_one_at: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> TreeWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.sample())
            self._stop.wait(self.interval)

    def sample(self) -> int:
        """One sample: the tree's summed RSS (bytes); the driver and worker peaks updated."""
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            procs = list(self.seen.values())
        total = workers = driver = 0
        for proc in procs:
            try:
                rss = proc.memory_info().rss
                total += rss
                if proc.pid == self.root.pid:
                    driver = rss
                    self.peak_driver = max(self.peak_driver, rss)
                self.seen.setdefault(proc.pid, proc)
                times = proc.cpu_times()
                kind = self._kind(proc)  # every time: a Ray worker renames itself
                self.cpu[proc.pid] = (kind, times.user + times.system)
                if rss > self.peak_one.get(kind, 0):
                    self.peak_one[kind], self.peak_one_at[kind] = rss, time.time()
                workers += rss if _titled_ray(proc) else 0
            except psutil.Error:
                continue
        self.peak_workers = max(self.peak_workers, workers)
        self.peak_run = max(self.peak_run, driver + workers)
        return total

    def _kind(self, proc: psutil.Process) -> str:
        if proc.pid == self.root.pid:
            return "driver"
        command = proc.cmdline() or [proc.name()]
        if command[0].startswith("ray::"):  # a process title: an agent, or a worker
            return "ray_daemons" if any(d in command[0] for d in RAY_DAEMONS) else "workers"
        if any("default_worker.py" in part for part in command):
            return "workers"
        if any(d in part for part in command[:2] for d in RAY_DAEMONS):
            return "ray_daemons"
        return "workers"

    def cpu_by_kind(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for kind, seconds in self.cpu.values():
            totals[kind] = round(totals.get(kind, 0.0) + seconds, 2)
        return totals

    def kill_tree(self) -> None:
        """Kill the root and every descendant ever seen (psutil guards against pid reuse)."""
        try:
            self.seen.update({p.pid: p for p in self.root.children(recursive=True)})
        except psutil.Error:
            pass
        for proc in self.seen.values():
            try:
                proc.kill()
            except psutil.Error:
                continue

    def leftovers(self) -> list[psutil.Process]:
        return [p for p in self.seen.values() if p.pid != self.root.pid and _alive(p)]


def _titled_ray(proc: psutil.Process) -> bool:
    """A process titled `ray::...`: one of Ray's workers or actors (as `compare` counts)."""
    return any("ray::" in part for part in proc.cmdline()[:1])


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
