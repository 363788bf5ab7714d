"""The referee's decision on one Send API call, rule by rule from POLICY.md §1, §3 and §4.

Pure functions over the `Model`; `decide` judges, `commit` uses up what an accepted send
consumed (the comment's one private reply, a one-time token, a marketing period, a cap slot).
"""

from __future__ import annotations

from collections import deque
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from bot.events import OptInKind, Platform
from bot.simulator.rules import Accepted, Basis, Reason, Refused, Verdict, refuse
from bot.simulator.state import Contact, OptinSent, SimAccount
from bot.simulator.validate import RecipientKind, SendRequest, check_message

if TYPE_CHECKING:
    from bot.simulator.model import Model

__all__ = ["commit", "decide"]

_HOUR = timedelta(hours=1)
_SECOND = timedelta(seconds=1)
_DAY = timedelta(days=1)


def decide(m: Model, account: SimAccount, req: SendRequest, now: datetime) -> Verdict:
    """Shape first (error 100), then the recipient's basis, then the caps."""
    if account.id in m.restricted:
        return refuse(Reason.ACCOUNT_RESTRICTED, "The account is temporarily restricted.")
    private = req.recipient_kind in (RecipientKind.COMMENT, RecipientKind.POST)
    if req.sender_action is None:
        bad = check_message(account.platform, req.message, m.rules, private_reply=private)
        if bad:
            return bad
    if private:
        return _private_reply(m, account, req, now)
    if req.recipient_kind is RecipientKind.ID:
        return _to_user(m, account, req, now)
    return _with_token(m, account, req, now)


def _reachable(m: Model, user_id: str) -> Refused | None:
    if user_id in m.unavailable:
        return refuse(
            Reason.UNAVAILABLE, "This person isn't available right now.", user_id=user_id
        )
    if user_id in m.not_receiving:
        return refuse(
            Reason.NOT_RECEIVING,
            "This person isn't receiving messages from you right now.",
            user_id=user_id,
        )
    return None


def _private_reply(m: Model, account: SimAccount, req: SendRequest, now: datetime) -> Verdict:
    if req.recipient_kind is RecipientKind.POST and account.platform is not Platform.MESSENGER:
        return refuse(Reason.BAD_PARAMETER, "(#100) recipient.post_id is for Facebook Pages")
    comment = m.comments.get(req.recipient)
    if comment is None or comment.account_id != account.id:
        return refuse(Reason.UNKNOWN_OBJECT, f"Object with ID '{req.recipient}' does not exist")
    user = comment.user_id
    if user == account.id or req.sender_action is not None:
        return refuse(Reason.BAD_PARAMETER, "(#100) invalid private reply", user_id=user)
    if (unreachable := _reachable(m, user)) is not None:
        return unreachable
    if comment.private_replied_at is not None:
        return refuse(
            Reason.PRIVATE_REPLY_USED,
            "This comment already has a private reply; only one is allowed.",
            user_id=user,
        )
    if comment.live and not m.live.get((account.id, comment.media_id), False):
        return refuse(
            Reason.LIVE_ENDED,
            "Live comments can be answered privately only while the broadcast runs.",
            user_id=user,
        )
    if now - comment.created_at >= m.rules.private_reply_window:
        return refuse(
            Reason.PRIVATE_REPLY_EXPIRED,
            "The comment is older than 7 days; the private reply window has closed.",
            user_id=user,
        )
    if req.optin is not None:
        return refuse(
            Reason.OPTIN_OUTSIDE_WINDOW,
            "Opt-in requests need an open standard window, not a private reply.",
            user_id=user,
        )
    if comment.live:
        return _cap(
            m,
            m.live_pr_sends,
            account,
            now,
            _SECOND,
            m.rules.live_private_replies_per_second,
            Reason.PRIVATE_REPLY_CAP,
        ) or Accepted(Basis.PRIVATE_REPLY, user, note=comment.id)
    return _cap(
        m,
        m.pr_sends,
        account,
        now,
        _HOUR,
        m.rules.private_replies_per_hour,
        Reason.PRIVATE_REPLY_CAP,
    ) or Accepted(Basis.PRIVATE_REPLY, user, note=comment.id)


def _to_user(m: Model, account: SimAccount, req: SendRequest, now: datetime) -> Verdict:
    user = req.recipient
    c = m.contacts.get((account.id, user))
    if c is None:
        return refuse(Reason.UNKNOWN_USER, "No matching user found", user_id=user)
    if (unreachable := _reachable(m, user)) is not None:
        return unreachable
    if c.awaiting_reply(now, m.rules.standard_window, m.rules.private_reply_strict):
        return refuse(
            Reason.AWAITING_USER_REPLY,
            "After a private reply nothing else may be sent until the user writes back.",
            user_id=user,
        )
    since = now - c.last_user_message if c.last_user_message else None
    window_open = since is not None and since < m.rules.standard_window
    if req.optin is not None:
        return _optin_request(m, account, req, c, window_open, user, now)
    if req.messaging_type == "MESSAGE_TAG":
        return _tagged(m, account, req.tag or "", since, user, now)
    if not window_open:
        return refuse(
            Reason.WINDOW_CLOSED,
            "This message is sent outside of allowed window.",
            user_id=user,
        )
    if req.sender_action is not None:
        return Accepted(Basis.STANDARD_WINDOW, user, note=req.sender_action)
    return _dm_cap(m, account, now) or Accepted(Basis.STANDARD_WINDOW, user)


def _tagged(
    m: Model, account: SimAccount, tag: str, since: timedelta | None, user: str, now: datetime
) -> Verdict:
    if tag == "HUMAN_AGENT":
        if not m.rules.human_agent_feature:
            return refuse(
                Reason.HUMAN_AGENT_NOT_GRANTED,
                "(#200) The Human Agent feature is not granted to this app.",
                user_id=user,
            )
        if since is None or since >= m.rules.human_agent_window:
            return refuse(
                Reason.HUMAN_AGENT_EXPIRED,
                "HUMAN_AGENT is allowed only within 7 days of the user's last message.",
                user_id=user,
            )
        # HUMAN_AGENT sends are outside the automated-DM cap (§4).
        return Accepted(Basis.HUMAN_AGENT, user)
    if account.platform is not Platform.MESSENGER or tag not in m.rules.messenger_tags:
        return refuse(
            Reason.TAG_NOT_ALLOWED,
            f"(#100) tag {tag} is not supported on {account.platform}",
            user_id=user,
        )
    if since is None or since >= m.rules.message_tag_window:
        return refuse(
            Reason.TAG_EXPIRED,
            f"tag {tag} is allowed only within 7 days of the user's last message.",
            user_id=user,
        )
    return _dm_cap(m, account, now) or Accepted(Basis.MESSAGE_TAG, user, note=tag)


def _optin_request(
    m: Model,
    account: SimAccount,
    req: SendRequest,
    c: Contact,
    window_open: bool,
    user: str,
    now: datetime,
) -> Verdict:
    optin = req.optin
    assert optin is not None
    kind = OptInKind(optin.kind)
    enabled = (
        m.rules.one_time_platforms if kind is OptInKind.ONE_TIME else m.rules.marketing_platforms
    )
    if account.platform not in enabled:
        return refuse(
            Reason.KIND_DISABLED, f"(#100) {kind} is not available on {account.platform}"
        )
    if not window_open:
        return refuse(
            Reason.OPTIN_OUTSIDE_WINDOW,
            "Opt-in requests can be sent only inside the standard messaging window.",
            user_id=user,
        )
    week = [r for r in c.optin_requests if now - r.at < m.rules.optin_duplicate_window]
    for r in week:
        if r.kind == optin.kind and (
            r.topic == optin.topic or (optin.title and r.title == optin.title)
        ):
            return refuse(
                Reason.OPTIN_DUPLICATE,
                f"An opt-in request for topic {optin.topic!r} was sent in the last 7 days.",
                user_id=user,
            )
    if account.platform is Platform.INSTAGRAM and (
        len(week) >= m.rules.ig_optin_requests_per_week
        or sum(now - r.at < _DAY for r in week) >= m.rules.ig_optin_requests_per_day
    ):
        return refuse(
            Reason.OPTIN_LIMIT,
            "Too many opt-in requests to this user (10 per 7 days, 5 per day).",
            user_id=user,
        )
    return _dm_cap(m, account, now) or Accepted(
        Basis.STANDARD_WINDOW, user, note=f"optin:{optin.topic}"
    )


def _with_token(m: Model, account: SimAccount, req: SendRequest, now: datetime) -> Verdict:
    kind = (
        OptInKind.ONE_TIME if req.recipient_kind is RecipientKind.ONE_TIME else OptInKind.MARKETING
    )
    t = m.tokens.get(req.recipient)
    if t is None or t.account_id != account.id or t.kind is not kind:
        return refuse(Reason.TOKEN_UNKNOWN, f"(#100) invalid {req.recipient_kind.value}")
    enabled = (
        m.rules.one_time_platforms if kind is OptInKind.ONE_TIME else m.rules.marketing_platforms
    )
    if account.platform not in enabled:
        return refuse(
            Reason.KIND_DISABLED, f"(#100) {kind} is not available on {account.platform}"
        )
    user = t.user_id
    if req.sender_action is not None or req.optin is not None:
        return refuse(
            Reason.BAD_PARAMETER, "(#100) a token send carries one message", user_id=user
        )
    if (unreachable := _reachable(m, user)) is not None:
        return unreachable
    c = m.contact(account.id, user)
    strict = m.rules.private_reply_strict
    if m.rules.private_reply_blocks_tokens and c.awaiting_reply(
        now, m.rules.standard_window, strict
    ):
        return refuse(
            Reason.AWAITING_USER_REPLY,
            "After a private reply nothing else may be sent until the user writes back.",
            user_id=user,
        )
    if now >= t.expires_at:
        return refuse(Reason.TOKEN_EXPIRED, "The token has expired.", user_id=user)
    if kind is OptInKind.ONE_TIME:
        if t.used_at is not None:
            return refuse(Reason.TOKEN_USED, "The one-time token was already used.", user_id=user)
        return _dm_cap(m, account, now) or Accepted(Basis.ONE_TIME, user, note=t.topic)
    if t.stopped:
        return refuse(Reason.STOPPED, "The user stopped these notifications.", user_id=user)
    period = m.rules.frequency_periods.get(t.frequency or "DAILY", _DAY)
    if t.last_sent is not None and now - t.last_sent < period:
        return refuse(
            Reason.FREQUENCY,
            f"Only one {t.frequency} message per period; next allowed at "
            f"{(t.last_sent + period).isoformat()}.",
            user_id=user,
        )
    return _dm_cap(m, account, now) or Accepted(Basis.MARKETING, user, note=t.topic)


# -- caps ----------------------------------------------------------------------------


def _dm_cap(m: Model, account: SimAccount, now: datetime) -> Refused | None:
    return _cap(m, m.dm_sends, account, now, _HOUR, m.rules.dm_cap_per_hour, Reason.DM_CAP)


def _cap(
    m: Model,
    table: dict[str, deque[datetime]],
    account: SimAccount,
    now: datetime,
    span: timedelta,
    limit: int,
    reason: Reason,
) -> Refused | None:
    """A rolling-window cap per account (§4); the answer says when a slot frees."""
    sent = table.setdefault(account.id, deque())
    while sent and now - sent[0] >= span:
        sent.popleft()
    if len(sent) < limit:
        return None
    return refuse(
        reason,
        "Calls to this api have exceeded the rate limit.",
        code=m.rules.cap_error_code,
        regain_after=sent[0] + span - now,
    )


def commit(m: Model, account: SimAccount, req: SendRequest, ok: Accepted, now: datetime) -> None:
    if ok.basis is Basis.PRIVATE_REPLY:
        comment = m.comments[req.recipient]
        comment.private_replied_at = now
        m.contact(account.id, ok.user_id).last_private_reply = now
        table = m.live_pr_sends if comment.live else m.pr_sends
        table.setdefault(account.id, deque()).append(now)
        return
    if req.sender_action is not None or ok.basis is Basis.HUMAN_AGENT:
        return
    if ok.basis is Basis.ONE_TIME:
        m.tokens[req.recipient].used_at = now
    elif ok.basis is Basis.MARKETING:
        m.tokens[req.recipient].last_sent = now
    elif req.optin is not None:
        m.contact(account.id, ok.user_id).optin_requests.append(
            OptinSent(req.optin.kind, req.optin.topic, req.optin.title, now)
        )
    m.dm_sends.setdefault(account.id, deque()).append(now)
