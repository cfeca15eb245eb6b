"""Where a reconnecting listener resumes from: behind the newest seq, by the settle time.

Events of concurrent transactions can commit in another order than their seq; resuming from
the newest seq seen could skip one that committed a moment later with a smaller seq.
"""

from __future__ import annotations

import pytest

from poolhub_client import AsyncPoolhubClient, aio


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(aio.time, "monotonic", lambda: now[0])
    return now


def listener(after: int | None) -> aio.Listener:
    return AsyncPoolhubClient("http://poolhub.test").listen(after=after)


def test_resume_lags_the_newest_seq_until_it_settled(clock: list[float]) -> None:
    listening = listener(after=50)
    listening._delivered(100)
    clock[0] += 20
    listening._delivered(105)
    assert listening.last_seq == 105
    assert listening.resume_seq == 50  # nothing is older than the settle time yet
    clock[0] += aio.SETTLE_SECONDS - 5
    assert listening.resume_seq == 100  # 100 settled; 105 may still have an earlier seq on its way
    clock[0] += 10
    assert listening.resume_seq == 105


def test_listening_from_now_on_replays_what_came_since_the_first_event(clock: list[float]) -> None:
    listening = listener(after=None)
    assert listening.resume_seq is None
    listening._delivered(300)
    listening._delivered(290)
    assert listening.resume_seq == 289


def test_repeats_of_a_replay_are_dropped_by_seq() -> None:
    listening = listener(after=None)
    assert listening._fresh(7) and not listening._fresh(7)
