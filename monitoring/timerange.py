"""Time ranges and the error type of every monitoring query (dashboard, VOC, report).

One check for every range a person or a device can ask for (:meth:`TimeRange.of`): not empty, at most
:data:`MAX_SPAN` (a year: 2062 for 2026 is a typo, not a question), not before 2000, not more than a
day in the future. Open-ended filters (a VOC inbox "since …") use :func:`check_range`, the same rules
for whichever ends are given.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from collection.models import aware, utcnow

MAX_SPAN = timedelta(days=366)
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
DEFAULT_SPAN = timedelta(days=1)
MAX_FUTURE = timedelta(days=1)
RELATIVE = re.compile(r"^(\d{1,6})\s*(m|h|d|w)$")
UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}


class MonitoringError(ValueError):
    """A monitoring request that cannot be done; ``code`` (not_found / forbidden / conflict / invalid) picks
    the HTTP status in the routes (``serving.api.deps.ERROR_STATUS``); the message names what was wrong
    and the valid options."""

    CODES = ("not_found", "forbidden", "conflict", "invalid")

    def __init__(self, code: str, message: str):
        if code not in self.CODES:
            raise ValueError(f"unknown MonitoringError code {code!r}; valid: {list(self.CODES)}")
        super().__init__(message)
        self.code = code


def as_utc(dt: datetime) -> datetime:
    """An aware UTC datetime (a naive one is taken as UTC, as the catalog stores)."""
    return aware(dt).astimezone(UTC)


def parse_time(text: str, now: datetime) -> datetime:
    """``now``, a duration back from now (``90m``, ``24h``, ``7d``, ``2w``) or an ISO 8601 date or time
    (``2026-11-30``, ``2026-11-30T09:00``, ``…+09:00``; no zone = UTC). Returns aware UTC."""
    text = text.strip()
    if text == "now":
        return now
    if m := RELATIVE.match(text):
        return now - int(m.group(1)) * UNITS[m.group(2)]
    try:
        return as_utc(datetime.fromisoformat(text))
    except ValueError as e:
        raise MonitoringError("invalid", f"cannot read the time {text!r}: give 'now', a duration back from now "
                                         "(90m, 24h, 7d, 2w) or an ISO 8601 date/time (2026-11-30T09:00Z)") from e


@dataclass(frozen=True)
class TimeRange:
    """[since, until), aware UTC."""

    since: datetime
    until: datetime

    @classmethod
    def parse(cls, since: str | None = None, until: str | None = None, *, now: datetime | None = None,
              default: timedelta = DEFAULT_SPAN) -> TimeRange:
        """From the query's text (see :func:`parse_time`); defaults: until now, since ``default`` before."""
        now = as_utc(now or utcnow())
        end = parse_time(until, now) if until else now
        start = parse_time(since, now) if since else end - default
        return cls.of(start, end, now=now)

    @classmethod
    def of(cls, since: datetime, until: datetime, *, now: datetime | None = None) -> TimeRange:
        """Refuses a range that is empty, longer than :data:`MAX_SPAN`, starts before 2000 or ends more than
        a day in the future (MonitoringError ``invalid``)."""
        check_range(since, until, now=now)
        return cls(as_utc(since), as_utc(until))

    @property
    def span(self) -> timedelta:
        return self.until - self.since


def check_range(since: datetime | None, until: datetime | None, *,
                now: datetime | None = None) -> tuple[datetime | None, datetime | None]:
    """``(since, until)`` in UTC, either end may be open; the rules of :meth:`TimeRange.of` for the ends given."""
    since = as_utc(since) if since is not None else None
    until = as_utc(until) if until is not None else None
    if since is not None and until is not None:
        if until <= since:
            raise MonitoringError("invalid", f"since ({since:%Y-%m-%d %H:%M}) must be before until "
                                             f"({until:%Y-%m-%d %H:%M})")
    if until is not None and until > as_utc(now or utcnow()) + MAX_FUTURE:
        raise MonitoringError("invalid", f"until ({until:%Y-%m-%d %H:%M}) is more than a day in the future")
    if since is not None and since < EARLIEST:
        raise MonitoringError("invalid", f"since ({since:%Y-%m-%d}) is before {EARLIEST:%Y-%m-%d}: a typo?")
    if since is not None and until is not None and until - since > MAX_SPAN:
        raise MonitoringError("invalid", f"the range {since:%Y-%m-%d} … {until:%Y-%m-%d} spans "
                                         f"{(until - since).days} days; at most {MAX_SPAN.days} days at once")
    return since, until
