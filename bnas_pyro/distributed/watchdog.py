"""Which rank was lost: heartbeats and progress marks in the rendezvous store.

Every rank runs a :class:`Heartbeat` thread that increments its counter ``heartbeat/RANK`` in
the store every ``interval`` seconds, and the search marks its outer step in ``step/RANK``.  When a
collective fails (a peer's connection closed, or the process group's timeout passed), the ranks
still alive call :meth:`Heartbeat.diagnose`: a rank that reported its own error names it
(``failed/RANK``); a rank whose counter does not move for ``stale`` seconds is lost (killed,
stopped or its machine gone); a rank whose counter moves but whose step lags the others hangs in
its own code.  Counters, not clocks, so machines need not agree on the time.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import torch.distributed as dist

PREFIX = "bnas_pyro/"


class RankLostError(RuntimeError):
    """A peer rank died, hung or failed: the search cannot go on with the ranks left."""

    def __init__(self, message: str, lost: list[int]):
        super().__init__(message)
        self.lost = list(lost)


class Heartbeat:
    """A daemon thread that keeps this rank's counter moving in the rendezvous store.

    Args:
        host, port: the rendezvous store (``MASTER_ADDR``, ``MASTER_PORT``).
        rank, world_size: this process and the number of processes.
        interval: seconds between two beats.
        stale: a counter that has not moved for this long belongs to a lost rank.
    """

    def __init__(self, host: str, port: int, rank: int, world_size: int,
                 interval: float = 0.5, stale: float = 5.0):
        self.host, self.port = host, int(port)
        self.rank, self.world_size = int(rank), int(world_size)
        self.interval, self.stale = float(interval), float(stale)
        self._store = self._connect()
        self._count = 0
        self._waits: dict[str, int] = {}
        self._stop = threading.Event()
        self._store.set(f"heartbeat/{self.rank}", "0")
        self._thread = threading.Thread(target=self._beat, name=f"bnas-pyro-heartbeat-{rank}",
                                        daemon=True)
        self._thread.start()

    def _connect(self):
        store = dist.TCPStore(self.host, self.port, is_master=False,
                              timeout=timedelta(seconds=max(self.stale, 2.0)),
                              wait_for_workers=False)
        return dist.PrefixStore(PREFIX, store)

    def _beat(self) -> None:
        store = self._connect()   # a connection of its own: the main thread may be using one
        while not self._stop.wait(self.interval):
            self._count += 1
            try:
                store.set(f"heartbeat/{self.rank}", str(self._count))
            except Exception:  # the store's host is gone; diagnose() says so
                return

    def mark_step(self, step: int) -> None:
        """Record that this rank has reached outer step ``step``."""
        try:
            self._store.set(f"step/{self.rank}", str(int(step)))
        except Exception:
            pass

    def report_failure(self, message: str) -> None:
        """Tell the other ranks why this one stops."""
        try:
            self._store.set(f"failed/{self.rank}", message[:2000])
        except Exception:
            pass

    def wait_for_all(self, name: str, poll: float = 0.1) -> None:
        """Block until every rank has called ``wait_for_all(name)`` (the n-th call of a name
        meets the n-th call of the others); a rank whose counter stops for ``stale`` seconds
        meanwhile ends the wait with a :class:`RankLostError`."""
        self._waits[name] = self._waits.get(name, 0) + 1
        key = f"wait/{name}/{self._waits[name]}"
        self._store.set(f"{key}/{self.rank}", "1")
        others = [r for r in range(self.world_size) if r != self.rank]
        last = {r: self._read(f"heartbeat/{r}") for r in others}
        moved_at = {r: time.monotonic() for r in others}
        while True:
            waiting = [r for r in others if not self._store.check([f"{key}/{r}"])]
            if not waiting:
                return
            now = time.monotonic()
            for r in waiting:
                beat = self._read(f"heartbeat/{r}")
                if beat != last[r]:
                    last[r], moved_at[r] = beat, now
                elif now - moved_at[r] > self.stale:
                    failed = self._read(f"failed/{r}")
                    why = (f"rank {r} failed: {failed}" if failed is not None else
                           f"lost rank {r} of {self.world_size} (no heartbeat for {self.stale:g} s: "
                           "the process died, was stopped or its machine is unreachable)")
                    raise RankLostError(f"distributed search stopped on rank {self.rank}: {why}",
                                        [r])
            time.sleep(poll)

    def close(self) -> None:
        self._stop.set()

    def _read(self, key: str) -> str | None:
        if not self._store.check([key]):
            return None
        return self._store.get(key).decode()

    def diagnose(self, error: BaseException) -> RankLostError:
        """The error that names the lost rank(s), after a collective failed with ``error``."""
        others = [r for r in range(self.world_size) if r != self.rank]
        where = f"{self.host}:{self.port}"
        try:
            failed = {r: self._read(f"failed/{r}") for r in others}
            failed = {r: m for r, m in failed.items() if m is not None}
            if failed:
                parts = "; ".join(f"rank {r} failed: {m}" for r, m in sorted(failed.items()))
                return RankLostError(f"distributed search stopped on rank {self.rank}: {parts}",
                                     sorted(failed))
            before = {r: self._read(f"heartbeat/{r}") for r in others}
            deadline = time.monotonic() + self.stale
            moved: set[int] = set()
            while time.monotonic() < deadline and len(moved) < len(others):
                time.sleep(self.interval)
                for r in others:
                    if r not in moved and self._read(f"heartbeat/{r}") != before[r]:
                        moved.add(r)
            lost = [r for r in others if r not in moved]
            if lost:
                names = ", ".join(f"rank {r}" for r in lost)
                return RankLostError(
                    f"distributed search stopped on rank {self.rank}: lost {names} of "
                    f"{self.world_size} (no heartbeat for {self.stale:g} s: the process died, was "
                    f"stopped or its machine is unreachable); first error: {error}", lost)
            steps = {r: self._read(f"step/{r}") for r in range(self.world_size)}
            known = {r: int(s) for r, s in steps.items() if s is not None}
            if known:
                ahead = max(known.values())
                behind = [r for r, s in known.items() if s < ahead]
                if behind:
                    names = ", ".join(f"rank {r} (step {known[r]})" for r in behind)
                    return RankLostError(
                        f"distributed search stopped on rank {self.rank}: {names} did not reach "
                        f"step {ahead} within the timeout (it hangs or is too slow); first "
                        f"error: {error}", behind)
            return RankLostError(f"distributed search stopped on rank {self.rank}: a collective "
                                 f"failed while every rank is alive: {error}", [])
        except RankLostError:
            raise
        except Exception as store_error:
            return RankLostError(
                f"distributed search stopped on rank {self.rank}: lost rank 0 of {self.world_size} "
                f"(its rendezvous store at {where} does not answer: {store_error}; rank 0 hosts it "
                f"when the processes were not started by torchrun); first error: {error}", [0])


__all__ = ["Heartbeat", "RankLostError"]
