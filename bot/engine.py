"""Events to state changes and sends, in the inbox worker's transaction.

A crash leaves either the whole batch applied (state, flow runs and outbox rows together, the
transactional outbox) and its deliveries marked processed, or none of it. State is loaded and
saved a batch at a time, because each aiosqlite call is a thread hop and per-event round trips
starved webhook acks in bench/ingest.py.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

import aiosqlite

from bot.clock import Clock
from bot.config import Account, Config
from bot.events import Comment, CommentVerb, Event, Message, Postback, Referral, Unknown
from bot.flows import runtime
from bot.flows.effects import (
    Handoff,
    RenderFailed,
    Schedule,
    Send,
    SetField,
    Tag,
)
from bot.flows.effects import SendKind as FlowSendKind
from bot.flows.flowset import FlowSet
from bot.flows.model import FollowUp
from bot.flows.run import Outcome, Waiting
from bot.metrics import Metrics
from bot.policy import (
    ConversationState,
    Intent,
    PolicyProfile,
    Refused,
    apply_event,
    decide,
    set_handoff,
)
from bot.store import flows as runs
from bot.store.conversations import (
    ContactKey,
    load_comment,
    load_states,
    record_comments,
    save_states,
    upsert_contacts,
)
from bot.store.db import Database
from bot.store.outbox import Outcome as LogOutcome
from bot.store.outbox import SendKind, enqueue, log_send, reconcile_echo
from bot.template_budget import timed_by

__all__ = ["Engine"]

log = logging.getLogger(__name__)


class Engine:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        profile: PolicyProfile,
        metrics: Metrics,
        config: Config,
        flowset: FlowSet | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        self._profile = profile
        self._metrics = metrics
        self._config = config
        self._platforms = {a.id: a.platform for a in config.accounts}
        self.flowset = flowset

    def use_config(self, config: Config) -> None:
        """The same accounts with secrets read again (bot.app.reload_secrets)."""
        self._config = config

    # --- events --------------------------------------------------------------------------

    async def handle(self, conn: aiosqlite.Connection, events: Sequence[Event]) -> None:
        usable = [ev for ev in events if self._usable(ev)]
        comments = [ev for ev in usable if isinstance(ev, Comment)]
        if comments:
            await record_comments(conn, comments)
        by_contact: dict[ContactKey, list[Event]] = {}
        for ev in usable:
            if ev.user_id is not None and ev.user_id != ev.account_id:
                by_contact.setdefault((ev.account_id, ev.user_id), []).append(ev)
        if by_contact:
            await upsert_contacts(
                conn,
                [
                    (a, u, ev.timestamp, ev.username if isinstance(ev, Comment) else None)
                    for (a, u), evs in by_contact.items()
                    for ev in evs
                ],
            )
        states = await load_states(conn, list(by_contact), self._platforms)
        before = dict(states)
        for key, evs in by_contact.items():
            profile = self._profile.for_platform(states[key].platform)
            for ev in evs:
                states[key] = apply_event(states[key], ev, profile)
        for ev in usable:
            if isinstance(ev, Message) and ev.is_echo and ev.user_id is not None:
                settled = await reconcile_echo(
                    conn, ev.account_id, ev.user_id, ev.mid, ev.metadata, ev.timestamp
                )
                if settled is not None:
                    self._metrics.inc("sends_reconciled", help="unknown sends shown sent by echo")
                    log.info("outbox %d: Meta's echo shows it was delivered", settled)
            elif self.flowset is not None and _starts_or_answers(ev):
                await self._flow_event(conn, ev, states)
        changed = {k: s for k, s in states.items() if s != before.get(k)}
        await save_states(conn, changed, self._clock.now())

    def _usable(self, ev: Event) -> bool:
        if isinstance(ev, Unknown):
            return False
        platform = self._platforms.get(ev.account_id)
        if platform is None:
            self._metrics.inc("events_ignored", reason="unknown_account", help="events not used")
            log.warning("event for account %s, which this bot does not serve", ev.account_id)
            return False
        if platform is not ev.platform:
            self._metrics.inc("events_ignored", reason="wrong_platform", help="events not used")
            log.warning("%s event for %s account %s", ev.platform, platform, ev.account_id)
            return False
        if isinstance(ev, Comment) and ev.is_own:
            # The account's own public replies come back as comments: never answer them.
            self._metrics.inc("events_ignored", reason="own_comment", help="events not used")
            return False
        return True

    async def _flow_event(
        self, conn: aiosqlite.Connection, ev: Event, states: dict[ContactKey, ConversationState]
    ) -> None:
        assert self.flowset is not None
        account = self._config.account(ev.account_id)
        assert account is not None
        now = self._clock.now()
        user = ev.user_id
        key = (ev.account_id, user) if user is not None else None
        state = states[key] if key else await self._comment_state(conn, account, ev)
        contact = await runs.contact_view(
            conn, account.id, account.name, user, account.platform, state.handoff_since is not None
        )
        outcome: Outcome | None = None
        if user is not None and isinstance(ev, Message | Postback):
            waiting = [
                r
                for r in (await runs.load_runs(conn, account.id, user)).values()
                if r.waiting_for is Waiting.REPLY
            ]
            if waiting:
                run = max(waiting, key=lambda r: r.started_at)
                with timed_by(self._clock.thread_time):
                    outcome = runtime.on_event(self.flowset, run, ev, contact, now)
                if not outcome.consumed:
                    # The run could not take it (a reload changed its flow): it ends or
                    # stays as it was, and the event starts whatever it matches.
                    state = await self.apply(conn, account, user, state, outcome, now)
                    outcome = None
        if outcome is None:
            comment_id = ev.comment_id if isinstance(ev, Comment) else None
            history = (
                await runs.guard_history(conn, account.id, user, now, comment_id)
                if user is not None
                else None
            )
            # No rng: reply variants come from a stable digest of the comment, flow and step,
            # so a retried webhook or a replayed `bot simulate` scenario picks the same text.
            with timed_by(self._clock.thread_time):
                outcome = runtime.start(self.flowset, ev, contact, now, history=history)
            if outcome is None:
                return
            if user is not None:
                await runs.record_start(conn, account.id, user, outcome.flow_id, now, comment_id)
            self._metrics.inc("flows_started", flow=outcome.flow_id, help="flow runs started")
        state = await self.apply(conn, account, user, state, outcome, now)
        if key:
            states[key] = state

    async def _comment_state(
        self, conn: aiosqlite.Connection, account: Account, ev: Event
    ) -> ConversationState:
        """A comment whose author Meta left out: its own private-reply basis is all there is."""
        basis = (
            await load_comment(conn, account.id, ev.comment_id)
            if isinstance(ev, Comment)
            else None
        )
        return ConversationState(platform=account.platform, comments=(basis,) if basis else ())

    # --- due runs (follow-ups, reply timeouts) -------------------------------------------

    async def run_due(self) -> int:
        """Fire every flow run whose wait is over; each in its own transaction."""
        if self.flowset is None:
            return 0
        now = self._clock.now()
        if not await runs.any_run_due(self._db.reader, now):
            return 0  # most ticks: a read, not a write transaction that finds nothing
        async with self._db.transaction() as conn:
            due = await runs.due_runs(conn, now)
        for account_id, user_id, run in due:
            account = self._config.account(account_id)
            if account is None:
                continue
            async with self._db.transaction() as conn:
                key = (account_id, user_id)
                state = (await load_states(conn, [key], self._platforms))[key]
                contact = await runs.contact_view(
                    conn,
                    account_id,
                    account.name,
                    user_id,
                    account.platform,
                    state.handoff_since is not None,
                )
                with timed_by(self._clock.thread_time):
                    outcome = runtime.on_due(self.flowset, run, contact, now)
                new = await self.apply(conn, account, user_id, state, outcome, now)
                if new != state:
                    await save_states(conn, {key: new}, now)
        return len(due)

    async def next_due(self) -> datetime | None:
        return await runs.next_run_due(self._db.reader)

    # --- effects -------------------------------------------------------------------------

    async def apply(
        self,
        conn: aiosqlite.Connection,
        account: Account,
        user: str | None,
        state: ConversationState,
        outcome: Outcome,
        now: datetime,
    ) -> ConversationState:
        """Carry out a flow's effects in this transaction; return the contact's new state."""
        notes = list(outcome.notes)
        run = outcome.run
        flow_id = outcome.flow_id
        # The messages of a run that hands the contact over ("connecting you to a person")
        # are the hand-over's own: marked, they still go once a human has the contact.
        handover = any(isinstance(eff, Handoff) for eff in outcome.effects)
        for eff in outcome.effects:
            if isinstance(eff, Send):
                if handover and eff.kind is not FlowSendKind.PUBLIC_REPLY:
                    eff = replace(eff, intent=replace(eff.intent, handover=True))
                notes.append(await self._enqueue(conn, account, user, state, eff, now))
            elif isinstance(eff, Schedule) and run is not None:
                refusal = self._followup_refusal(state, eff, outcome)
                if refusal is not None:
                    notes.append(
                        f"step {eff.step_id}: follow-up at {eff.at:%Y-%m-%d %H:%M} not scheduled:"
                        f" no basis will be open then ({refusal.detail})"
                    )
                    self._metrics.inc("followups_not_scheduled", help="follow-ups never legal")
                    run = None
            elif isinstance(eff, Tag) and user is not None:
                await runs.update_contact(
                    conn, account.id, user, add_tags=eff.add, remove_tags=eff.remove
                )
            elif isinstance(eff, SetField) and user is not None:
                await runs.update_contact(conn, account.id, user, fields={eff.name: eff.value})
            elif isinstance(eff, Handoff):
                state = set_handoff(state, now)
                notes.append(f"handed to a human: {eff.reason}")
            elif isinstance(eff, RenderFailed):
                self._metrics.inc("templates_failed", help="messages not sent: template failed")
                await log_send(
                    conn,
                    at=now,
                    outcome=LogOutcome.DROPPED,
                    account_id=account.id,
                    user_id=user,
                    kind=None,
                    reason="template_failed",
                    detail=f"{eff.template}: {eff.reason}",
                )
        if user is not None:
            if run is not None:
                await runs.save_run(conn, account.id, user, run, now)
            else:
                # Finished, with or without effects: a run left behind would stay due and
                # fire again at every dispatcher tick.
                await runs.delete_run(conn, account.id, user, flow_id)
        if notes:
            await runs.add_notes(conn, account.id, user, flow_id, now, notes)
            for note in notes:
                log.info("flow %s, %s: %s", flow_id, user, note)
        return state

    async def _enqueue(
        self,
        conn: aiosqlite.Connection,
        account: Account,
        user: str | None,
        state: ConversationState,
        eff: Send,
        now: datetime,
    ) -> str:
        kind = SendKind(eff.kind.value)
        due = now + eff.delay
        deadline = None
        once_key = None
        if eff.kind is FlowSendKind.PUBLIC_REPLY:
            # A public comment reply is no message: no messaging basis, once per step.
            once_key = f"public_reply:{account.id}:{eff.comment_id}:{eff.flow_id}:{eff.step_id}"
        else:
            decision = decide(state, eff.intent, due, self._profile)
            if isinstance(decision, Refused):
                await log_send(
                    conn,
                    at=now,
                    outcome=LogOutcome.DROPPED,
                    account_id=account.id,
                    user_id=user,
                    kind=kind,
                    comment_id=eff.comment_id,
                    reason=str(decision.reason),
                    detail=decision.detail,
                )
                self._metrics.inc(
                    "sends_dropped",
                    outcome="dropped",
                    reason=str(decision.reason),
                    help="queued messages not sent, by reason",
                )
                return f"step {eff.step_id}: not sent: {decision.detail}"
            deadline = decision.until
            if eff.kind is FlowSendKind.PRIVATE_REPLY:
                once_key = f"private_reply:{account.id}:{eff.intent.comment_id}"
        queued = await enqueue(
            conn,
            account_id=account.id,
            user_id=user,
            kind=kind,
            intent=eff.intent,
            message=dict(eff.message),
            due_at=due,
            deadline=deadline,
            now=now,
            priority=1 if eff.followup else 0,
            source=f"{eff.flow_id}/{eff.step_id}",
            once_key=once_key,
            comment_id=eff.comment_id,
        )
        if queued is None:
            return f"step {eff.step_id}: already queued once for this comment; not again"
        return f"step {eff.step_id}: queued {eff.kind} (outbox {queued})"

    def _followup_refusal(
        self, state: ConversationState, eff: Schedule, outcome: Outcome
    ) -> Refused | None:
        """Follow-ups are scheduled only when they will still be legal when they fire.

        One exception keeps the seeds' flow working: a follow-up on a topic whose opt-in
        request goes out in this same outcome (or went out within the cooldown) may become
        legal when the user taps it; it is scheduled and, like every send, re-checked when due.
        """
        assert self.flowset is not None
        flow = self.flowset.get(eff.flow_id)
        step = flow.step(eff.step_id) if flow else None
        if not isinstance(step, FollowUp):
            return None  # a reply timeout: nothing is sent by waking
        probe = Intent(content=step.content, topic=step.topic)
        decision = decide(state, probe, eff.at, self._profile)
        if not isinstance(decision, Refused):
            return None
        if step.topic is not None:
            asked = any(
                isinstance(e, Send) and e.intent.optin is not None and e.intent.topic == step.topic
                for e in outcome.effects
            ) or any(r.topic == step.topic for r in state.optin_requests)
            if asked:
                return None
        return decision


def _starts_or_answers(ev: Event) -> bool:
    """Events a flow can start on or a waiting run can take as the user's answer."""
    if ev.standby:
        return False  # another app owns the thread: record, never answer
    if ev.user_id is not None and ev.user_id == ev.account_id:
        return False  # the account itself is no contact: the bot never talks to itself
    if isinstance(ev, Comment):
        return ev.verb is CommentVerb.ADD
    if isinstance(ev, Message):
        return not ev.is_echo and not ev.is_deleted
    return isinstance(ev, Postback | Referral)
