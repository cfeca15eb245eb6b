"""The event log without a global lock, on real PostgreSQL: appends to different streams do not
wait for each other, and a reader resuming "after seq N" sees every event exactly once, in
`seq` order, whatever order the writers commit in."""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.db import connection, transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from uploads.events import event_append
from uploads.models import Event
from uploads.selectors import events_committed

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="concurrency of the log is PostgreSQL's"),
]

WAIT = 30  # seconds a step may take before the test calls it stuck (a wait on a lock)


@dataclass
class _Stream:
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    version: int = 0


class _Writer:
    """A thread with its own connection and an open transaction, doing what it is told."""

    def __init__(self) -> None:
        self.commands: queue.Queue[Callable[[], Any] | None] = queue.Queue()
        self.results: queue.Queue[Any] = queue.Queue()
        self.atomic = transaction.atomic()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while (command := self.commands.get()) is not None:
                try:
                    self.results.put(command())
                except Exception as exc:  # handed to the test
                    self.results.put(exc)
        finally:
            connection.close()

    def do(self, command: Callable[[], Any]) -> Any:
        self.commands.put(command)
        result = self.results.get(timeout=WAIT)
        if isinstance(result, Exception):
            raise result
        return result

    def begin(self) -> None:
        self.do(self.atomic.__enter__)

    def append(self, stream: _Stream) -> int:
        return self.do(lambda: event_append(stream=stream, stream_type="test", type="test.appended").seq)

    def commit(self) -> None:
        self.do(lambda: self.atomic.__exit__(None, None, None))

    def stop(self) -> None:
        self.commands.put(None)
        self.thread.join(WAIT)


def _resume(*, after: int, streams: set[uuid.UUID]) -> list[Event]:
    """What a reader resuming after `after` gets now (the notifications' resume reads this way)."""
    return list(events_committed(Event.objects.filter(seq__gt=after, stream_id__in=streams)).order_by("seq"))


def _resume_all(*, after: int, streams: set[uuid.UUID], count: int) -> list[Event]:
    """Resume until `count` events came back: the horizon is cluster-wide, so a transaction of
    another database on the same server may hold it back for a moment."""
    deadline = time.monotonic() + WAIT
    seen = _resume(after=after, streams=streams)
    while len(seen) < count and time.monotonic() < deadline:
        time.sleep(0.05)
        seen += _resume(after=seen[-1].seq if seen else after, streams=streams)
    return seen


def test_appends_to_different_streams_do_not_wait_for_each_other() -> None:
    first, second = _Writer(), _Writer()
    a, b = _Stream(), _Stream()
    try:
        first.begin()
        first.append(a)  # first's transaction stays open
        second.begin()
        second.append(b)  # would time out waiting if appends shared a lock
        second.commit()
        # The reader does not get past the open transaction: what it would return later
        # could otherwise have a smaller seq than what it already returned.
        assert _resume(after=0, streams={a.id, b.id}) == []
        first.commit()
        seen = _resume_all(after=0, streams={a.id, b.id}, count=2)
        assert [e.stream_id for e in seen] == [a.id, b.id]
    finally:
        first.stop()
        second.stop()


# One step of a run: ("append", writer) or ("commit", writer), with the reader polling between.
_steps = st.lists(st.tuples(st.sampled_from(["append", "commit"]), st.integers(0, 5)), min_size=1, max_size=40)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=_steps, polls=st.lists(st.booleans(), min_size=40, max_size=40))
def test_a_polling_reader_sees_every_event_once_in_seq_order(steps: list[tuple[str, int]],
                                                              polls: list[bool]) -> None:
    writers = [_Writer() for _ in range(6)]
    streams = [_Stream() for _ in writers]
    ids = {s.id for s in streams}
    open_ = [False] * len(writers)
    appended: list[int] = []
    seen: list[int] = []
    cursor = 0

    def poll() -> None:
        nonlocal cursor
        for event in _resume(after=cursor, streams=ids):
            seen.append(event.seq)
            cursor = event.seq

    try:
        for (action, index), do_poll in zip(steps, polls, strict=False):
            writer = writers[index]
            if action == "append":
                if not open_[index]:
                    writer.begin()
                    open_[index] = True
                appended.append(writer.append(streams[index]))
            elif open_[index]:
                writer.commit()
                open_[index] = False
            if do_poll:
                poll()
        for index in reversed(range(len(writers))):  # the rest commit, last first
            if open_[index]:
                writers[index].commit()
            poll()
        seen.extend(e.seq for e in _resume_all(after=cursor, streams=ids, count=len(set(appended)) - len(seen)))
    finally:
        for writer in writers:
            writer.stop()
    assert seen == sorted(set(appended))
