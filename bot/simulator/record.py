"""The simulator's send log: every message it accepted or refused, with the basis or the error.

This is the referee's notebook: a test asserts on it instead of trusting the bot's own log.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bot.simulator.rules import Accepted, Basis, Reason, Refused, Verdict

__all__ = ["LogEntry", "SendLog"]


@dataclass(frozen=True, slots=True)
class LogEntry:
    seq: int
    time: datetime
    endpoint: str  # messages | replies | comments
    account_id: str
    recipient: Mapping[str, Any]
    body: Mapping[str, Any]
    accepted: bool
    user_id: str | None = None
    basis: Basis | None = None
    message_id: str | None = None
    code: int | None = None
    subcode: int | None = None
    reason: Reason | None = None
    detail: str = ""
    fault: str | None = None
    http_status: int = 200

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "time": self.time.isoformat(),
            "endpoint": self.endpoint,
            "account_id": self.account_id,
            "recipient": dict(self.recipient),
            "body": dict(self.body),
            "accepted": self.accepted,
            "user_id": self.user_id,
            "basis": self.basis.value if self.basis else None,
            "message_id": self.message_id,
            "code": self.code,
            "subcode": self.subcode,
            "reason": self.reason.value if self.reason else None,
            "detail": self.detail,
            "fault": self.fault,
            "http_status": self.http_status,
        }


@dataclass(slots=True)
class SendLog:
    entries: list[LogEntry] = field(default_factory=list)

    def add(
        self,
        *,
        time: datetime,
        endpoint: str,
        account_id: str,
        body: Mapping[str, Any],
        verdict: Verdict,
        message_id: str | None = None,
        fault: str | None = None,
        http_status: int | None = None,
    ) -> LogEntry:
        recipient = body.get("recipient")
        common: dict[str, Any] = {
            "seq": len(self.entries) + 1,
            "time": time,
            "endpoint": endpoint,
            "account_id": account_id,
            "recipient": recipient if isinstance(recipient, Mapping) else {},
            "body": body,
            "fault": fault,
        }
        if isinstance(verdict, Accepted):
            entry = LogEntry(
                **common,
                accepted=True,
                user_id=verdict.user_id,
                basis=verdict.basis,
                message_id=message_id,
                detail=verdict.note,
                http_status=http_status or 200,
            )
        else:
            entry = _refused(common, verdict, http_status)
        self.entries.append(entry)
        return entry

    def __iter__(self) -> Iterator[LogEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> LogEntry:
        return self.entries[i]

    def to_json(self) -> list[dict[str, Any]]:
        return [e.to_dict() for e in self.entries]


def _refused(common: dict[str, Any], r: Refused, http_status: int | None) -> LogEntry:
    return LogEntry(
        **common,
        accepted=False,
        user_id=r.user_id,
        code=r.code,
        subcode=r.subcode,
        reason=r.reason,
        detail=r.message,
        http_status=http_status or r.http_status,
    )
