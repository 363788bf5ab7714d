"""Drains the outbox: within each account's caps, earliest deadline first, asking the policy
core once more at the moment of sending (POLICY.md §1: a queued or scheduled message must
still have a basis when it goes), then records the outcome in the send log.

Each `SendClass` is its own queue under its own hourly cap (private replies, DMs; public
replies have none), so one class's backlog never holds back another's: a public "check your
DMs" reply under a post goes when due, not behind a day of DMs waiting for the 200/h cap.
The calls-per-second cap is the account's, shared by every class.

The Graph API call happens outside any transaction: a row is leased ('sending') before the
call and settled after it. A crash in between leaves it 'sending'; on restart such rows are
settled by the `delivery` setting: at-most-once (default) marks them unknown, never resends.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import aiosqlite

from bot.clock import Clock, from_ms, to_ms
from bot.config import Account, Config
from bot.graph import ErrorClass, GraphClient, GraphError, build_send_body
from bot.metrics import Metrics
from bot.policy import (
    Allowed,
    ConversationState,
    PlatformProfile,
    PolicyProfile,
    Refused,
    decide,
    mark_unreachable,
    record_meta_refusal,
    record_send,
)
from bot.store.conversations import (
    load_comment,
    load_state,
    mark_comment_replied,
    save_state,
)
from bot.store.db import Database, fetch_one
from bot.store.outbox import (
    OutboxItem,
    Outcome,
    SendClass,
    SendKind,
    any_past_deadline,
    claim_due,
    finish,
    in_flight,
    log_send,
    mark_sending,
    next_due_at,
    pending_past_deadline,
    queue_status,
    release,
    release_leases,
    unclaim,
)

__all__ = ["Sender", "SenderSettings"]

log = logging.getLogger(__name__)
HOUR = timedelta(hours=1)
SECOND = timedelta(seconds=1)


def hourly_cap(rules: PlatformProfile, send_class: SendClass) -> int | None:
    """The class's sends allowed per rolling hour (POLICY.md §4); None: no hourly cap."""
    if send_class is SendClass.PRIVATE_REPLY:
        return rules.private_replies_per_hour
    if send_class is SendClass.DM:
        return rules.automated_dms_per_hour
    return None  # public comment replies: POLICY.md §4 gives no figure


@dataclass(frozen=True, slots=True)
class SenderSettings:
    # at_most_once: a send whose outcome is unknown is never repeated (a DM twice is worse
    # than one lost); at_least_once: repeated, and reconciled with the echo where one comes.
    delivery: str = "at_most_once"
    max_attempts: int = 8
    backoff_base: timedelta = timedelta(seconds=2)
    backoff_max: timedelta = timedelta(minutes=10)
    lease: timedelta = timedelta(minutes=2)


class Sender:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        graph: GraphClient,
        profile: PolicyProfile,
        config: Config,
        metrics: Metrics,
        *,
        settings: SenderSettings | None = None,
        owner: str = "sender",
        rng: random.Random | None = None,
        before_send: Callable[[str, str | None], Awaitable[None]] | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        self._graph = graph
        self._profile = profile
        self._config = config
        self._metrics = metrics
        self._settings = settings or SenderSettings()
        self._owner = owner
        self._rng = rng or random.Random()
        # The inbox worker's `settle_contact`: what the contact sent that was acknowledged is
        # applied before anything goes to them (a STOP in the backlog stops marketing sends).
        self._before_send = before_send
        # Throttled accounts (code 4/17/32/613...): not before this time.
        self._backoff_until: dict[str, datetime] = {}
        self.next_wake: datetime | None = None

    # --- the loop body -------------------------------------------------------------------

    async def run_due(self) -> int:
        """Send everything due now that the caps allow; set `next_wake`; return sends tried."""
        now = self._clock.now()
        await self._expire(now)
        wakes: list[datetime] = []
        tried = 0
        for account in self._config.accounts:
            paused, until = await self._paused(account.id, now)
            if paused:
                if until is not None:
                    wakes.append(until)
                continue
            # The capped messaging classes first: they take at most their hourly share of
            # the calls-per-second budget, and public replies use what is left of it.
            for send_class in (SendClass.PRIVATE_REPLY, SendClass.DM, SendClass.PUBLIC_REPLY):
                n, wake = await self._run_class(account, send_class, now)
                tried += n
                if wake is not None:
                    wakes.append(wake)
        self.next_wake = max(min(wakes), now) if wakes else None
        return tried

    async def _run_class(
        self, account: Account, send_class: SendClass, now: datetime
    ) -> tuple[int, datetime | None]:
        """Send what is due in one class; return sends tried and when to look again."""
        throttled = self._backoff_until.get(account.id)
        if throttled is not None and throttled > now:
            return 0, throttled
        rules = self._profile.for_platform(account.platform)
        cap = hourly_cap(rules, send_class)
        reader = self._db.reader
        q = await queue_status(
            reader,
            account.id,
            send_class=send_class,
            now=now,
            second=now - SECOND,
            hour=None if cap is None else now - HOUR,
        )
        room = rules.calls_per_second - q.in_second
        hour_room: int | None = None
        if cap is not None:
            hour_room = cap - q.in_hour
            room = min(room, hour_room)
        if room > 0:
            if not q.due_now:
                # Nothing to claim: no write transaction; wake when the next row falls due.
                return 0, q.next_due
            async with self._db.transaction() as conn:
                items = await claim_due(
                    conn,
                    account.id,
                    send_class=send_class,
                    now=now,
                    limit=room,
                    owner=self._owner,
                    lease_until=now + self._settings.lease,
                )
            for i, item in enumerate(items):
                if not await self._send(account, item):
                    # Paused or throttled: the rest go back untouched, not hammered at Meta.
                    async with self._db.transaction() as conn:
                        await unclaim(conn, [x.id for x in items[i + 1 :]])
                    return i + 1, None
            if len(items) < room:
                # Everything due went: wake when the next row falls due.
                return len(items), await next_due_at(
                    reader, account.id, send_class=send_class, after=now
                )
            tried = len(items)
        else:
            tried = 0
        # Capacity ran out: wake when the rolling hour (or second) frees a slot.
        if hour_room is not None and hour_room - tried <= 0 and q.oldest_in_hour is not None:
            return tried, q.oldest_in_hour + HOUR
        return tried, (q.oldest_in_second or now) + SECOND

    # --- one send ------------------------------------------------------------------------

    async def _send(self, account: Account, item: OutboxItem) -> bool:
        """One send; False when the account must stop sending (paused or throttled)."""
        if item.kind is SendKind.PUBLIC_REPLY:
            return await self._public_reply(account, item, self._clock.now())
        if self._before_send is not None:
            await self._before_send(account.id, item.user_id)
        async with self._db.transaction() as conn:
            # Read once the write lock is held: a `now` read before it may be seconds old by
            # the time the call leaves, at a window's edge (`send_margin` covers the call).
            now = self._clock.now()
            state = await self._state(conn, account, item)
            decision = decide(state, item.intent, now, self._profile)
            if isinstance(decision, Refused):
                await self._drop(conn, item, Outcome.DROPPED, decision.reason, decision.detail)
                return True
            await mark_sending(conn, item.id)
        body = self._body(item, decision)
        try:
            result = await self._graph.send_message(account, body)
        except GraphError as exc:
            return await self._failed(account, item, decision, exc)
        async with self._db.transaction() as conn:
            state = await self._state(conn, account, item)
            await self._remember(conn, account, item, record_send(state, decision, now), now)
            await self._settle_sent(conn, item, decision.basis.value, result.message_id, now)
        log.info(
            "sent %s to %s on %s (outbox %d)",
            item.kind,
            item.user_id or item.comment_id,
            decision.basis,
            item.id,
        )
        return True

    def _body(self, item: OutboxItem, allowed: Allowed) -> dict[str, Any]:
        recipient = allowed.recipient_value or item.user_id
        assert recipient is not None, "the policy allows no user-id send without a user"
        # Meta's private-reply form carries no messaging_type (POLICY.md §3).
        messaging_type = (
            None if allowed.recipient_field == "comment_id" else allowed.messaging_type
        )
        return build_send_body(
            allowed.recipient_field, recipient, item.message, messaging_type, allowed.tag
        )

    async def _public_reply(self, account: Account, item: OutboxItem, now: datetime) -> bool:
        assert item.comment_id is not None
        async with self._db.transaction() as conn:
            await mark_sending(conn, item.id)
        try:
            reply_id = await self._graph.reply_to_comment(
                account, item.comment_id, str(item.message.get("text", ""))
            )
        except GraphError as exc:
            return await self._failed(account, item, None, exc)
        async with self._db.transaction() as conn:
            await self._settle_sent(conn, item, "public_comment", reply_id, now)
        return True

    async def _settle_sent(
        self,
        conn: aiosqlite.Connection,
        item: OutboxItem,
        basis: str,
        message_id: str | None,
        now: datetime,
    ) -> None:
        await finish(conn, item.id, "sent")
        await self._log(conn, item, Outcome.SENT, now, basis=basis, message_id=message_id)
        self._metrics.inc(
            "sends", kind=item.kind.value, basis=basis, help="messages Meta accepted"
        )

    async def _failed(
        self, account: Account, item: OutboxItem, allowed: Allowed | None, exc: GraphError
    ) -> bool:
        """Settle a failed send per POLICY.md §5; False when the account must stop for now."""
        now = self._clock.now()
        cls = exc.error_class
        self._metrics.inc("graph_errors", error_class=cls.value, help="Graph API errors")
        async with self._db.transaction() as conn:
            if cls in (ErrorClass.RETRY, ErrorClass.BACKOFF):
                if cls is ErrorClass.BACKOFF:
                    until = now + (exc.retry_after or timedelta(minutes=1))
                    self._backoff_until[account.id] = until
                    log.warning("account %s throttled by Meta until %s", account.id, until)
                retry_at = now + self._backoff(item.attempts, exc.retry_after)
                if item.attempts >= self._settings.max_attempts or (
                    item.deadline is not None and retry_at >= item.deadline
                ):
                    await self._drop(conn, item, Outcome.EXPIRED, "retries_exhausted", str(exc))
                    return cls is not ErrorClass.BACKOFF
                await release(conn, item.id, due_at=retry_at)
                await self._log_error(conn, item, Outcome.RETRYING, exc, now)
                return cls is not ErrorClass.BACKOFF
            if cls in (ErrorClass.ACCOUNT_RESTRICTED, ErrorClass.TOKEN_INVALID):
                await self._pause(conn, account.id, cls.value, str(exc), now)
                await release(conn, item.id, due_at=now)
                await self._log_error(conn, item, Outcome.HELD, exc, now)
                return False
            if cls is ErrorClass.UNKNOWN_OUTCOME:
                if self._settings.delivery == "at_least_once":
                    await release(conn, item.id, due_at=now + self._backoff(item.attempts, None))
                    await self._log_error(conn, item, Outcome.RETRYING, exc, now)
                    return True
                if allowed is not None:
                    # It may have gone: count it as sent for the rules (one private reply per
                    # comment, nothing after it until the user writes) and for the caps.
                    state = await self._state(conn, account, item)
                    await self._remember(
                        conn, account, item, record_send(state, allowed, now), now
                    )
                await finish(conn, item.id, "unknown")
                await self._log_error(conn, item, Outcome.UNKNOWN, exc, now)
                return True
            if cls is ErrorClass.UNREACHABLE and item.user_id is not None:
                state = await self._state(conn, account, item)
                await save_state(conn, account.id, item.user_id, mark_unreachable(state, now), now)
            if cls is ErrorClass.WINDOW_CLOSED:
                # The bot's own rules should have stopped this send: a policy bug to count.
                # Meta's verdict closes the basis in the contact's state, so the other sends
                # queued on it are dropped with the reason instead of refused one by one.
                self._metrics.inc("policy_bugs", help="sends Meta refused as outside a window")
                log.error("Meta refused outbox %d as outside the window: %s", item.id, exc)
                if allowed is not None:
                    state = await self._state(conn, account, item)
                    closed = record_meta_refusal(state, allowed, now, exc.code, exc.subcode)
                    await self._remember_state(conn, account, item, closed, now)
            await finish(conn, item.id, "dropped")
            await self._log_error(conn, item, Outcome.FAILED, exc, now)
        return True

    # --- helpers -------------------------------------------------------------------------

    def _backoff(self, attempts: int, retry_after: timedelta | None) -> timedelta:
        if retry_after is not None:
            return retry_after
        base = self._settings.backoff_base.total_seconds() * 2 ** max(attempts - 1, 0)
        capped = min(base, self._settings.backoff_max.total_seconds())
        return timedelta(seconds=self._rng.uniform(capped / 2, capped))  # jitter

    async def _state(
        self, conn: aiosqlite.Connection, account: Account, item: OutboxItem
    ) -> ConversationState:
        if item.user_id is not None:
            return await load_state(conn, account.id, item.user_id, account.platform)
        # A comment whose author Meta left out: its own basis is all there is.
        comment = (
            await load_comment(conn, account.id, item.comment_id) if item.comment_id else None
        )
        return ConversationState(platform=account.platform, comments=(comment,) if comment else ())

    async def _remember(
        self,
        conn: aiosqlite.Connection,
        account: Account,
        item: OutboxItem,
        state: ConversationState,
        now: datetime,
    ) -> None:
        await self._remember_state(conn, account, item, state, now)
        if item.kind is SendKind.PRIVATE_REPLY and item.comment_id:
            await mark_comment_replied(conn, account.id, item.comment_id, now)

    async def _remember_state(
        self,
        conn: aiosqlite.Connection,
        account: Account,
        item: OutboxItem,
        state: ConversationState,
        now: datetime,
    ) -> None:
        """The contact's new state; an authorless comment's basis lives on its comment row."""
        if item.user_id is not None:
            await save_state(conn, account.id, item.user_id, state, now)
        elif item.comment_id is not None and any(
            r.comment_id == item.comment_id for r in state.meta_refusals
        ):
            await mark_comment_replied(conn, account.id, item.comment_id, now)

    async def _drop(
        self,
        conn: aiosqlite.Connection,
        item: OutboxItem,
        outcome: Outcome,
        reason: str,
        detail: str,
    ) -> None:
        await finish(conn, item.id, "dropped")
        await self._log(conn, item, outcome, self._clock.now(), reason=str(reason), detail=detail)
        self._metrics.inc(
            "sends_dropped",
            outcome=outcome.value,
            reason=str(reason),
            help="queued messages not sent, by reason",
        )
        log.info("outbox %d %s: %s (%s)", item.id, outcome, reason, detail)

    async def _log_error(
        self,
        conn: aiosqlite.Connection,
        item: OutboxItem,
        outcome: Outcome,
        exc: GraphError,
        now: datetime,
    ) -> None:
        await self._log(
            conn,
            item,
            outcome,
            now,
            reason=exc.error_class.value,
            detail=exc.message,
            error_code=exc.code,
            error_subcode=exc.subcode,
        )

    async def _log(
        self,
        conn: aiosqlite.Connection,
        item: OutboxItem,
        outcome: Outcome,
        at: datetime,
        **fields: Any,
    ) -> None:
        """One send-log row about `item`: its identity, the outcome, and what else is known."""
        await log_send(
            conn,
            at=at,
            outcome=outcome,
            account_id=item.account_id,
            user_id=item.user_id,
            kind=item.kind,
            outbox_id=item.id,
            comment_id=item.comment_id,
            **fields,
        )

    async def _expire(self, now: datetime) -> None:
        """Rows whose stored deadline passed: re-decide (a user may have reopened the window)."""
        if not await any_past_deadline(self._db.reader, now):
            return  # most ticks: a read, not a write transaction that finds nothing
        async with self._db.transaction() as conn:
            for item in await pending_past_deadline(conn, now):
                account = self._config.account(item.account_id)
                if account is None:
                    await self._drop(conn, item, Outcome.DROPPED, "unknown_account", "")
                    continue
                state = await self._state(conn, account, item)
                decision = decide(state, item.intent, now, self._profile)
                if isinstance(decision, Allowed):
                    await release(conn, item.id, due_at=item.due_at, deadline=decision.until)
                else:
                    await self._drop(
                        conn,
                        item,
                        Outcome.EXPIRED,
                        "expired_in_queue",
                        f"its basis closed while it waited: {decision.detail}",
                    )

    async def _pause(
        self,
        conn: aiosqlite.Connection,
        account_id: str,
        reason: str,
        detail: str,
        now: datetime,
    ) -> None:
        await conn.execute(
            "INSERT INTO account_state (account_id, paused_reason, paused_at, paused_until)"
            " VALUES (?, ?, ?, NULL) ON CONFLICT (account_id) DO UPDATE SET"
            " paused_reason = excluded.paused_reason, paused_at = excluded.paused_at,"
            " paused_until = NULL",
            (account_id, f"{reason}: {detail}", to_ms(now)),
        )
        self._metrics.inc("accounts_paused", reason=reason, help="accounts paused by Meta errors")
        log.error(
            "account %s PAUSED (%s): %s; `bot resume` after fixing it", account_id, reason, detail
        )

    async def _paused(self, account_id: str, now: datetime) -> tuple[bool, datetime | None]:
        """Whether the account is paused, and until when (None: until an operator resumes)."""
        row = await fetch_one(
            self._db.reader,
            "SELECT paused_reason, paused_until FROM account_state WHERE account_id = ?",
            (account_id,),
        )
        if row is None or row[0] is None:
            return False, None
        if row[1] is None:
            return True, None
        until = from_ms(row[1])
        return until > now, until

    async def recover(self) -> int:
        """At start-up: settle rows a crash left 'sending' (see the module docstring)."""
        now = self._clock.now()
        async with self._db.transaction() as conn:
            rows = await in_flight(conn)
            await release_leases(conn)  # leased but never tried: simply back in the queue
            for item in rows:
                if self._settings.delivery == "at_least_once":
                    await release(conn, item.id, due_at=now)
                    continue
                account = self._config.account(item.account_id)
                if account is not None and item.kind is not SendKind.PUBLIC_REPLY:
                    # It may have reached Meta: count it as sent for the rules, as a live
                    # unknown outcome is (a private reply then blocks other sends until
                    # the user writes, exactly as Meta will).
                    state = await self._state(conn, account, item)
                    decision = decide(state, item.intent, now, self._profile)
                    if isinstance(decision, Allowed):
                        await self._remember(
                            conn, account, item, record_send(state, decision, now), now
                        )
                await finish(conn, item.id, "unknown")
                await self._log(
                    conn,
                    item,
                    Outcome.UNKNOWN,
                    now,
                    reason="in_flight_at_restart",
                    detail="the daemon stopped while this send was in flight; not resent",
                )
        if rows:
            log.warning(
                "%d sends were in flight at the last stop; settled as %s",
                len(rows),
                self._settings.delivery,
            )
        return len(rows)
