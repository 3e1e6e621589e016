"""Per-partition completion tracking -> committable offsets.

Records of a partition finish in any order. For each assigned partition we keep the offsets
consumed and not yet finished in consumption order; the committable offset is the first
unfinished one (or one past the last consumed), i.e. the highest offset below which every
record is finished. The steps, per record:

1. `track(offset)` when consumed (offsets must increase within one assignment);
2. `finish(offset)` once its output or dead letter is acknowledged by the broker;
3. `committable` moves past every contiguous finished offset; those records wait in
   `awaiting_commit` until `committed(offset)` confirms a commit covering them.

A record counts against `max_in_flight` from `track` until a confirmed commit covers it.
A partition's state object is dropped on revoke; completions that arrive for a dropped state
never reach a commit (the owner of the new state is another assignment or another process).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Container


class OffsetOrderError(ValueError):
    """An offset was tracked out of order: a bug, or a seek we did not make."""


class PartitionOffsets:
    __slots__ = (
        "_awaiting_commit",
        "_done",
        "_last_tracked",
        "_pending",
        "commit_requested",
        "committable",
        "committed",
        "moved_at",
        "partition",
        "revoked",
        "topic",
    )

    def __init__(self, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition
        self._pending: deque[int] = deque()
        self._done: set[int] = set()
        self._awaiting_commit: deque[int] = deque()
        self._last_tracked = -1
        self.committable: int | None = None  # next offset to commit; None until one finishes
        self.committed: int | None = None  # last offset a commit confirmed
        self.commit_requested: int | None = None
        self.revoked = False
        self.moved_at = time.monotonic()  # when the committable offset last moved

    def track(self, offset: int) -> None:
        if offset <= self._last_tracked:
            raise OffsetOrderError(
                f"{self.topic}/{self.partition}: offset {offset} after {self._last_tracked}"
            )
        self._last_tracked = offset
        self._pending.append(offset)

    def finish(self, offset: int) -> bool:
        """Mark one record finished; True when the committable offset moved."""
        pending = self._pending
        if pending and pending[0] == offset:
            pending.popleft()
            self._awaiting_commit.append(offset)
            last = offset
            done = self._done
            while pending and pending[0] in done:
                last = pending.popleft()
                done.discard(last)
                self._awaiting_commit.append(last)
            self.committable = last + 1
            self.moved_at = time.monotonic()
            return True
        self._done.add(offset)
        return False

    def ready_prefix(self, ready: Container[int]) -> list[int]:
        """The unfinished offsets, from the oldest, as long as each is in `ready`.

        Exactly-once mode emits a partition's records in offset order: only this prefix may
        go into the next transaction.
        """
        prefix = []
        for offset in self._pending:
            if offset not in ready:
                break
            prefix.append(offset)
        return prefix

    def needs_commit(self) -> bool:
        return self.committable is not None and self.committable != self.commit_requested

    def committed_to(self, offset: int) -> int:
        """A commit of `offset` was confirmed; returns how many records it released."""
        if self.committed is None or offset > self.committed:
            self.committed = offset
        released = 0
        waiting = self._awaiting_commit
        while waiting and waiting[0] < offset:
            waiting.popleft()
            released += 1
        return released

    @property
    def next_offset(self) -> int | None:
        """One past the last offset consumed in this assignment (None before the first)."""
        return self._last_tracked + 1 if self._last_tracked >= 0 else None

    @property
    def unfinished(self) -> int:
        return len(self._pending)

    @property
    def holding(self) -> int:
        """Records counted against max_in_flight: unfinished or awaiting a commit."""
        return len(self._pending) + len(self._awaiting_commit)

    @property
    def oldest_unfinished(self) -> int | None:
        return self._pending[0] if self._pending else None
