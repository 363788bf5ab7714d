"""The conversation runtime, pure: an event starts a flow (`start`), the user's answer moves a
waiting run (`on_event`), time moves it (`on_due`). Each returns an `Outcome`: the run's new
state, effects for the engine, and notes explaining what happened. No I/O, no clock: `now`
and the contact's history are given (DESIGN.md "The data path").

The engine routes a user's message to `on_event` when one of the contact's runs waits for a
reply, and to `start` otherwise; it calls `on_due` when a `Schedule` effect's time comes.
"""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import datetime

from bot.events import Comment, Event, Message, Postback, Referral
from bot.flows.execute import Executor
from bot.flows.flowset import FlowSet
from bot.flows.match import Candidate
from bot.flows.model import Collect, Flow, FollowUp, WaitReply
from bot.flows.run import ContactView, GuardHistory, Outcome, RunState, Waiting
from bot.policy import format_duration

__all__ = ["blocked_by", "explain_start", "on_due", "on_event", "start"]


def _trigger(event: Event) -> dict[str, str]:
    info: dict[str, str | None]
    if isinstance(event, Comment):
        info = {
            "kind": "comment",
            "comment_id": event.comment_id,
            "media_id": event.media_id,
            "text": event.text,
        }
    elif isinstance(event, Message):
        info = {"kind": "message", "text": event.text, "payload": event.quick_reply_payload}
    elif isinstance(event, Postback):
        info = {"kind": "postback", "text": event.title, "payload": event.payload}
    elif isinstance(event, Referral):
        info = {"kind": "referral", "payload": event.ref}
    else:
        info = {"kind": type(event).__name__.lower()}
    return {k: v for k, v in info.items() if v is not None}


def blocked_by(
    flow: Flow, event: Event, contact: ContactView, history: GuardHistory, now: datetime
) -> str | None:
    """Why `flow` may not start for this event now, or None. Handling a comment once is always
    on; cooldown and daily cap are per user, so they can't apply without a user id."""
    if contact.handoff:
        return "a human has this conversation; automation waits until it is handed back"
    if isinstance(event, Comment) and event.comment_id in history.handled_comments:
        return f"comment {event.comment_id} was already handled"
    if contact.user_id is None:
        return None
    g = flow.guards
    last = history.last_started.get(flow.id)
    if g.cooldown is not None and last is not None and now - last < g.cooldown:
        return (
            f"cooldown: flow {flow.id} started for this user at {last.isoformat()}, less than "
            f"{format_duration(g.cooldown)} ago"
        )
    starts = history.starts_today.get(flow.id, 0)
    if g.daily_cap is not None and starts >= g.daily_cap:
        return f"daily cap: flow {flow.id} already started {starts} times for this user today"
    return None


def explain_start(
    flowset: FlowSet,
    event: Event,
    contact: ContactView,
    now: datetime,
    history: GuardHistory | None = None,
) -> tuple[Candidate | None, str | None]:
    """The flow the event matches and why it would not start (None: it would start)."""
    cand = flowset.match(event)
    if cand is None:
        return None, "no enabled flow matches this event"
    return cand, blocked_by(cand.flow, event, contact, history or GuardHistory(), now)


def start(
    flowset: FlowSet,
    event: Event,
    contact: ContactView,
    now: datetime,
    rng: random.Random | None = None,
    history: GuardHistory | None = None,
) -> Outcome | None:
    """Start the one flow `event` matches, or None when none matches or a guard blocks it.

    `rng` picks public-reply variants; without one (the engine's way), the choice is a stable
    digest of the comment id, flow and step (`pick_variant`), so a retried webhook or a
    replayed scenario picks the same text.
    """
    cand, blocked = explain_start(flowset, event, contact, now, history)
    if cand is None or blocked is not None:
        return None
    flow = cand.flow
    trigger = _trigger(event)
    run = RunState(
        flow_id=flow.id,
        step_id=flow.steps[0].id,
        started_at=now,
        trigger=trigger,
        replied=trigger["kind"] != "comment",
        last_text=trigger.get("text"),
        last_payload=trigger.get("payload"),
    )
    ex = Executor(flowset, flow, run, contact, now, rng)
    matched = f" on {cand.keyword!r}" if cand.keyword is not None else ""
    ex.notes.append(f"flow {flow.id} started by a {trigger['kind']}{matched}")
    if contact.user_id is None and (flow.guards.cooldown or flow.guards.daily_cap):
        ex.notes.append("the sender's id is missing, so per-user guards could not apply")
    return ex.advance(run.step_id)


def _resume(
    flowset: FlowSet, run: RunState, contact: ContactView, now: datetime
) -> Executor | Outcome:
    flow = flowset.get(run.flow_id)
    if flow is None:
        note = f"flow {run.flow_id} is no longer loaded; the run ended"
        return Outcome(run.flow_id, None, (), (note,))
    if flow.step(run.step_id) is None:
        note = f"step {run.step_id!r} is no longer in flow {flow.id}; the run ended"
        return Outcome(run.flow_id, None, (), (note,))
    return Executor(flowset, flow, run, contact, now)


def _reply(event: Event) -> tuple[str | None, str | None] | None:
    if isinstance(event, Message) and not event.is_echo and not event.is_deleted:
        return event.text, event.quick_reply_payload
    if isinstance(event, Postback):
        return event.title, event.payload
    return None


def on_event(
    flowset: FlowSet, run: RunState, event: Event, contact: ContactView, now: datetime
) -> Outcome:
    """The user wrote while `run` waits for a reply: save the answer, or validate what a
    `collect` step asked for, and run on."""
    ex = _resume(flowset, run, contact, now)
    if isinstance(ex, Outcome):
        return replace(ex, consumed=False)
    if contact.handoff:
        return Outcome(run.flow_id, run, (), ("a human has this conversation; the run waits",))
    reply = _reply(event)
    if run.waiting_for is not Waiting.REPLY or reply is None:
        note = f"run of {run.flow_id} is not waiting for this event"
        return Outcome(run.flow_id, run, (), (note,), consumed=False)
    text, payload = reply
    step = ex.flow.step(run.step_id)
    if not isinstance(step, WaitReply | Collect):
        # A reload turned the step this run waited on into one that doesn't wait: the run
        # can't take the answer, and left waiting it would swallow every message for days.
        note = (
            f"step {run.step_id!r} of flow {run.flow_id} no longer waits for a reply (the "
            "flows were reloaded); the run ended and the message was matched as new"
        )
        return Outcome(run.flow_id, None, (), (note,), consumed=False)
    ex.run = replace(
        run, replied=True, last_text=text, last_payload=payload, waiting_for=None, wait_until=None
    )
    after = ex.flow.following(step) if step is not None else None
    if isinstance(step, WaitReply):
        answer = text if text is not None else payload or ""
        ex.run = replace(ex.run, answers={**run.answers, step.answer_name: answer})
        return ex.advance(after)
    return _collect(ex, step, text, after)


def _collect(ex: Executor, step: Collect, text: str | None, after: str | None) -> Outcome:
    value = ex.collected(step, text)
    if value is not None:
        ex.run = replace(ex.run, answers={**ex.run.answers, step.field_name: value}, attempts=0)
        ex.set_field(step.field_name, value)
        ex.notes.append(f"step {step.id}: {step.kind} collected")
        return ex.advance(after)
    attempts = ex.run.attempts + 1
    if attempts >= step.max_attempts:
        ex.notes.append(f"step {step.id}: no valid {step.kind} after {attempts} tries")
        return ex.advance(step.on_fail)
    ex.notes.append(f"step {step.id}: not a valid {step.kind}; asked again ({attempts})")
    return ex.ask_again(step, attempts)


def on_due(flowset: FlowSet, run: RunState, contact: ContactView, now: datetime) -> Outcome:
    """A wait timed out or a follow-up is due; a wake-up for a run not (or no longer) due
    changes nothing, so stale schedules are harmless."""
    if run.waiting_for is None or run.wait_until is None or now < run.wait_until:
        return Outcome(run.flow_id, run, (), (f"run of {run.flow_id} has nothing due",))
    ex = _resume(flowset, run, contact, now)
    if isinstance(ex, Outcome):
        return ex
    step = ex.flow.step(run.step_id)
    ex.run = replace(run, waiting_for=None, wait_until=None)
    if contact.handoff:
        ex.notes.append(f"step {run.step_id}: a human has this conversation; the run ended")
        return ex.outcome(None)
    if isinstance(step, FollowUp):
        return ex.fire_followup(step)
    if isinstance(step, WaitReply | Collect):
        wait = format_duration(step.timeout) if step.timeout else "the timeout"
        ex.notes.append(f"step {step.id}: no reply within {wait}")
        return ex.advance(step.on_timeout)
    return ex.outcome(replace(run, waiting_for=None, wait_until=None))
