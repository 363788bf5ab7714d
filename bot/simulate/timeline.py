"""The timeline of a run: one line per thing that happened (a user's action, a send, a drop,
a refusal by Meta, a flow's note), gathered from the actions as played, the bot's send log and
flow notes, and the simulator's own log.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiosqlite

from bot.clock import from_ms
from bot.simulate.scenario import Action, ScenarioAccount
from bot.simulator import LogEntry
from bot.store.outbox import Outcome

__all__ = ["Timeline", "TimelineLine"]

TEXT_EXCERPT = 60
_NOT_SCHEDULED = " not scheduled: "  # the engine's note for a follow-up no basis could carry


@dataclass(frozen=True, slots=True)
class TimelineLine:
    """One thing that happened: a user action, a send, a drop, a refusal, or a flow note."""

    at: datetime
    kind: str  # action | sent | dropped | refused | note
    account: str
    user: str | None
    what: str  # the action, the basis, the drop's reason, the refusal's reason
    text: str = ""
    fields: Mapping[str, Any] = field(default_factory=dict)
    rank: tuple[int, int] = (0, 0)


def _excerpt(text: str, n: int = TEXT_EXCERPT) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= n else flat[: n - 1] + "…"


def _message_text(message: Any) -> str:
    """What a person would read: the text, a template's text or an opt-in request's title."""
    if not isinstance(message, Mapping):
        return ""
    if message.get("text"):
        return str(message["text"])
    att = message.get("attachment")
    if isinstance(att, Mapping):
        payload = att.get("payload")
        if isinstance(payload, Mapping):
            for key in ("text", "title", "url"):
                if payload.get(key):
                    return str(payload[key])
        return f"[{att.get('type', 'attachment')}]"
    return ""


def _labels(accounts: Sequence[ScenarioAccount]) -> dict[str, str]:
    """How the timeline names an account: its platform, unless two share one."""
    per = Counter(a.platform for a in accounts)
    return {a.id: a.platform.value if per[a.platform] == 1 else a.name or a.id for a in accounts}


class Timeline:
    """The lines of one run, in the order they were gathered; `collect` adds what the bot and
    the simulator recorded and sorts them by time."""

    def __init__(self, accounts: Sequence[ScenarioAccount]) -> None:
        self.names: dict[str, str] = {}  # user id -> scenario name
        self.labels = _labels(accounts)
        self.platforms = {a.id: a.platform.value for a in accounts}
        self.lines: list[TimelineLine] = []
        self._seq = 0

    def record_action(self, a: Action) -> None:
        """The action as played, in words: `alice  comment  on reel1: "PRICING"`."""
        g = a.args.get
        desc = {
            "comment": f'on {g("media", "reel1")}: "{g("text", "")}"',
            "live_comment": f'on live {g("media", "live1")}: "{g("text", "")}"',
            "live_stop": f"live video {g('media', 'live1')} ends",
            "dm": f'"{g("text", "")}"',
            "story_reply": f'to story {g("story", "story1")}: "{g("text", "")}"',
            "story_mention": "mentions the account in a story",
            "quick_reply": f'taps {g("payload")} "{g("text", g("payload"))}"',
            "postback": f"taps button {g('payload')}",
            "referral": f"opens a link with ref={g('ref')}",
            "optin": f"opts in: {g('kind', 'marketing')} {g('topic')} {g('frequency', '')}",
            "stop": f"stops {g('topic')}",
            "resume": f"resumes {g('topic')}",
            "agent_reply": f'{g("author", "human")} agent writes: "{g("text", "")}"',
            "notify": f'operator notifies on {g("topic")}: "{g("text", "")}"',
            "handoff": f"a human takes the conversation over {g('reason', '')}",
            "release": "the human hands the conversation back",
        }[a.name]
        fields = {"action": a.name, "line": a.line, "args": dict(a.args)}
        self.add(
            a.at, "action", self.labels[a.account.id], a.user, a.name, desc.strip(), fields, 0
        )

    def add(
        self,
        at: datetime,
        kind: str,
        account: str,
        user: str | None,
        what: str,
        text: str,
        fields: Mapping[str, Any],
        rank: int,
    ) -> None:
        """One line; `rank` orders lines of one instant (action, note, send, refusal), then
        the order they were added."""
        self._seq += 1
        self.lines.append(
            TimelineLine(at, kind, account, user, what, text, dict(fields), (rank, self._seq))
        )

    async def collect(
        self, reader: aiosqlite.Connection, sim_log: Iterable[LogEntry], notes: bool
    ) -> list[TimelineLine]:
        """The timeline: actions as played, the bot's send log and notes, Meta's refusals."""
        async with reader.execute(
            "SELECT id, at, account_id, user_id, flow_id, note FROM flow_notes ORDER BY id"
        ) as cur:
            note_rows = list(await cur.fetchall())
        by_moment: dict[tuple[str, str | None, int], list[tuple[str | None, str]]] = {}
        for _, at, acct, uid, flow_id, note in note_rows:
            by_moment.setdefault((acct, uid, at), []).append((flow_id, note))
        async with reader.execute(
            "SELECT s.at, s.outcome, s.account_id, s.user_id, s.kind, s.basis, s.reason,"
            " s.detail, s.error_code, s.error_subcode, s.comment_id, s.message_id,"
            " o.body, o.source FROM send_log s LEFT JOIN outbox o ON o.id = s.outbox_id"
            " ORDER BY s.id"
        ) as cur:
            for row in await cur.fetchall():
                self._send_row(row, by_moment)
        for e in sim_log:
            if not e.accepted:
                self._refused(e)
        for _, at, acct, uid, flow_id, note in note_rows:
            fields = {"flow": flow_id, "account_id": acct, "note": note}
            if _NOT_SCHEDULED in note:
                # A follow-up no basis could carry is never queued: the engine says so only
                # in its notes, so the timeline shows it as a drop.
                step, _, why = note.partition(": ")
                source = f"{flow_id}/{step.removeprefix('step ')}" if flow_id else None
                self.add(
                    from_ms(at),
                    "dropped",
                    self.labels.get(acct, acct),
                    self._name(uid),
                    "followup_not_scheduled",
                    why,
                    fields | {"outcome": "dropped", "source": source},
                    2,
                )
            elif notes:
                self.add(
                    from_ms(at),
                    "note",
                    self.labels.get(acct, acct),
                    self._name(uid),
                    flow_id or "",
                    f"{flow_id}: {note}" if flow_id else note,
                    fields,
                    1,
                )
        self.lines.sort(key=lambda x: (x.at, x.rank))
        return self.lines

    def _send_row(
        self,
        row: Sequence[Any],
        notes: Mapping[tuple[str, str | None, int], list[tuple[str | None, str]]],
    ) -> None:
        at, outcome, acct, uid, kind, basis, reason, detail = row[:8]
        code, subcode, comment_id, message_id, body, source = row[8:]
        full = _message_text(json.loads(body) if body else {})
        text = _excerpt(full)
        if source is None and detail:
            # Refused when queued, so no outbox row: the flow's note names the step.
            for flow_id, note in notes.get((acct, uid, at), []):
                if note.endswith(detail) and note.startswith("step "):
                    source = f"{flow_id}/{note[5:].partition(':')[0]}"
        fields: dict[str, Any] = {
            "send_kind": kind,
            "message_text": full,
            "source": source,
            "account_id": acct,
            "platform": self.platforms.get(acct),
            "user_id": uid,
            "comment_id": comment_id,
        }
        label, who = self.labels.get(acct, acct), self._name(uid)
        if outcome == Outcome.SENT:
            fields |= {"basis": basis, "message_id": message_id}
            self.add(from_ms(at), "sent", label, who, basis or "?", text, fields, 2)
            return
        fields |= {
            "outcome": outcome,
            "reason": reason,
            "detail": detail,
            "error_code": code,
            "error_subcode": subcode,
        }
        shown = " ".join(str(detail or "").split())
        if text:
            shown = f'{shown} ["{text}"]' if shown else f'"{text}"'
        self.add(from_ms(at), "dropped", label, who, reason or outcome, shown, fields, 2)

    def _refused(self, e: LogEntry) -> None:
        recipient = dict(e.recipient)
        uid = e.user_id or recipient.get("id")
        full = _message_text(e.body.get("message")) or str(e.body.get("message", ""))
        text = _excerpt(full)
        fields = {
            "message_text": full,
            "reason": e.reason.value if e.reason else None,
            "code": e.code,
            "subcode": e.subcode,
            "detail": e.detail,
            "endpoint": e.endpoint,
            "recipient": recipient,
            "account_id": e.account_id,
            "platform": self.platforms.get(e.account_id),
            "fault": e.fault,
        }
        what = e.reason.value if e.reason else "refused"
        self.add(
            e.time,
            "refused",
            self.labels.get(e.account_id, e.account_id),
            self._name(uid),
            what,
            text,
            fields,
            3,
        )

    def _name(self, uid: str | None) -> str | None:
        if uid is None:
            return None
        return self.names.get(uid, uid)
