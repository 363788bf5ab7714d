"""The clock's one time resolution: what is stored and what is read compare equal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from bot.clock import VirtualClock, from_ms, to_ms, to_resolution, utc

TIMES = st.datetimes(
    min_value=datetime(2001, 1, 1),  # noqa: DTZ001 (hypothesis wants naive bounds)
    max_value=datetime(2200, 1, 1),  # noqa: DTZ001
    timezones=st.just(UTC),
)


@given(st.integers(min_value=0, max_value=7_258_118_400_000))
def test_milliseconds_survive_a_round_trip_exactly(ms: int) -> None:
    assert to_ms(from_ms(ms)) == ms


@given(TIMES)
def test_a_stored_time_is_never_later_than_the_instant_it_records(t: datetime) -> None:
    stored = from_ms(to_ms(t))
    assert stored <= t < stored + timedelta(milliseconds=1)
    assert stored == to_resolution(t)


def test_the_virtual_clock_reads_whole_milliseconds_like_the_system_clock() -> None:
    clock = VirtualClock(utc(2026, 3, 2, 11, 0, 0, 618_734))
    assert clock.now() == utc(2026, 3, 2, 11, 0, 0, 618_000)
    assert from_ms(to_ms(clock.now())) == clock.now()
    clock.advance(timedelta(microseconds=500))
    assert clock.now().microsecond == 619_000
