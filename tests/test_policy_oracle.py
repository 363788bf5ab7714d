"""A second, deliberately plain model of POLICY.md §1 that shares no code with `bot.policy`.

It recomputes everything from the raw events that have arrived and the sends made so far, and
predicts exactly whether an intent may go. The property tests hold `decide` to it. (No tests
live here; the module name only keeps it among the policy test files.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from bot.events import Comment, Event, Message, OptIn, OptInKind, OptInStatus, Postback, Referral
from bot.policy import Allowed, Author, BasisKind, Content, Intent, PlatformProfile

DAY = timedelta(days=1)
YEAR = timedelta(days=365)
PERIODS = {"DAILY": DAY, "WEEKLY": 7 * DAY}  # anything else: monthly


def user_initiated(e: Event) -> bool:
    """POLICY.md §1: DMs, story replies and mentions, quick replies, postbacks, referrals."""
    if isinstance(e, Message):
        return not e.is_echo and not e.is_deleted
    return isinstance(e, Postback | Referral)


@dataclass
class Oracle:
    rules: PlatformProfile
    events: list[Event] = field(default_factory=list)
    sends: list[tuple[datetime, Allowed]] = field(default_factory=list)
    unreachable: datetime | None = None
    handoff: datetime | None = None
    # Sends Meta refused as outside their window (POLICY.md §5): (when, what was sent on).
    refused_by_meta: list[tuple[datetime, Allowed]] = field(default_factory=list)

    # --- facts ---------------------------------------------------------------------------------

    def last_user(self) -> datetime | None:
        return max((e.timestamp for e in self.events if user_initiated(e)), default=None)

    def before_close(self, until: datetime, now: datetime) -> bool:
        """Open at `now`: the bot stops `send_margin` before a basis closes."""
        return now < until - self.rules.send_margin

    def meta_shut(
        self, kind: BasisKind, *, comment_id: str | None = None, token: str | None = None
    ) -> bool:
        last = self.last_user()
        for at, a in self.refused_by_meta:
            if a.basis is not kind:
                continue
            if comment_id is not None or token is not None:
                if (kind is BasisKind.PRIVATE_REPLY and a.comment_id == comment_id) or (
                    token is not None and a.token == token
                ):
                    return True
            elif last is None or last <= at:
                return True
        return False

    def open_until(
        self, length: timedelta, now: datetime, kind: BasisKind | None = None
    ) -> datetime | None:
        last = self.last_user()
        if kind is not None and self.meta_shut(kind):
            return None
        return (
            last + length if last is not None and self.before_close(last + length, now) else None
        )

    def awaiting(self, now: datetime) -> bool:
        replies = [t for t, a in self.sends if a.basis is BasisKind.PRIVATE_REPLY]
        last = self.last_user()
        if not replies or (last is not None and last > max(replies)):
            return False
        # A message from before the private reply keeps its 24 h window (POLICY.md §1).
        return (
            last is None
            or self.rules.private_reply_strict
            or not self.before_close(last + self.rules.standard_window, now)
        )

    def reachable(self) -> bool:
        last = self.last_user()
        return self.unreachable is None or (last is not None and last > self.unreachable)

    def comment_until(self, comment_id: str, now: datetime) -> datetime | None:
        mine = [
            e
            for e in self.events
            if isinstance(e, Comment) and e.comment_id == comment_id and e.user_id != e.account_id
        ]
        if not mine or any(a.comment_id == comment_id for _, a in self.sends):
            return None
        if self.meta_shut(BasisKind.PRIVATE_REPLY, comment_id=comment_id):
            return None
        created = min(e.timestamp for e in mine)
        live = any(e.live for e in mine)
        r = self.rules
        window = r.live_comment_window if live else r.private_reply_window - r.comment_time_margin
        return created + window if self.before_close(created + window, now) else None

    def optins(self, kind: OptInKind, topic: str | None) -> list[OptIn]:
        seen = {
            e.token: e
            for e in self.events
            if isinstance(e, OptIn) and e.status is None and e.kind is kind and e.topic == topic
        }
        return [e for token, e in seen.items() if token is not None and topic is not None]

    def optin_event(self, token: str | None) -> OptIn | None:
        optins = (e for e in self.events if isinstance(e, OptIn) and e.status is None)
        return next((e for e in optins if e.token == token), None)

    def expiry(self, token: OptIn) -> datetime:
        return token.token_expiry or token.timestamp + self.rules.token_max_age

    def stopped(self, token: OptIn) -> bool:
        def hits(e: OptIn) -> bool:
            if e.token is not None:
                return e.token == token.token
            return e.topic is None or e.topic == token.topic

        changes = [
            (e.timestamp, e.status is OptInStatus.STOP)
            for e in self.events
            if isinstance(e, OptIn) and e.status is not None and hits(e)
            if e.timestamp >= token.timestamp
        ]
        return bool(changes) and max(changes)[1]

    def requests(self, now: datetime, period: timedelta, intent: Intent | None = None) -> int:
        return sum(
            1
            for t, a in self.sends
            if a.optin is not None and now - t < period
            if intent is None or (a.optin, a.topic) == (intent.optin, intent.topic)
        )

    # --- bases ---------------------------------------------------------------------------------

    def one_time_usable(self, topic: str | None, now: datetime) -> bool:
        used = {a.token for _, a in self.sends}
        shut = BasisKind.ONE_TIME_NOTIFICATION
        return self.rules.one_time_notifications and any(
            t.token not in used
            and self.before_close(self.expiry(t), now)
            and not self.meta_shut(shut, token=t.token)
            for t in self.optins(OptInKind.ONE_TIME, topic)
        )

    def marketing_usable(self, topic: str | None, now: datetime) -> bool:
        tokens = self.optins(OptInKind.MARKETING, topic)
        active = [
            t
            for t in tokens
            if self.before_close(self.expiry(t), now)
            and not self.stopped(t)
            and not self.meta_shut(BasisKind.MARKETING_MESSAGE, token=t.token)
        ]
        if not self.rules.marketing_messages or not active:
            return False
        # One per period per topic; several opt-ins for a topic: the longest period holds.
        period = max(PERIODS.get(t.frequency or "", 30 * DAY) for t in tokens)
        marketing = BasisKind.MARKETING_MESSAGE
        sent = [t for t, a in self.sends if a.basis is marketing and a.topic == topic]
        return all(now - t >= period for t in sent)

    def ad_usable(self, now: datetime) -> bool:
        ads = [e.timestamp for e in self.events if isinstance(e, Referral) and e.source == "ADS"]
        window = self.rules.ad_referral_window
        if window is None or not ads:
            return False
        return (
            self.before_close(max(ads) + window, now)
            and not any(t >= max(ads) for t, _ in self.sends)
            and not self.meta_shut(BasisKind.AD_REFERRAL_WINDOW)
        )

    def human_agent_usable(self, intent: Intent, now: datetime) -> bool:
        return (
            intent.author is Author.HUMAN
            and intent.content is Content.SUPPORT
            and self.rules.human_agent_enabled
            and self.open_until(self.rules.human_agent_window, now, BasisKind.HUMAN_AGENT)
            is not None
        )

    def tag_usable(self, intent: Intent, now: datetime) -> bool:
        return (
            intent.tag in self.rules.message_tags
            and intent.content is not Content.PROMOTIONAL
            and self.open_until(self.rules.tag_window, now, BasisKind.MESSAGE_TAG) is not None
        )

    def optin_request_ok(self, intent: Intent, now: datetime) -> bool:
        r = self.rules
        assert intent.optin is not None
        enabled = (
            r.one_time_notifications
            if intent.optin is OptInKind.ONE_TIME
            else r.marketing_messages
        )
        return (
            enabled
            and self.open_until(r.standard_window, now, BasisKind.STANDARD_WINDOW) is not None
            and self.requests(now, r.optin_request_cooldown, intent) == 0
            and (
                r.optin_requests_per_day is None
                or self.requests(now, DAY) < r.optin_requests_per_day
            )
            and (
                r.optin_requests_per_week is None
                or self.requests(now, 7 * DAY) < r.optin_requests_per_week
            )
        )

    # --- the prediction ------------------------------------------------------------------------

    def allows(self, intent: Intent, now: datetime) -> bool:
        """Whether POLICY.md §1 lets this intent go now."""
        automation = intent.author is Author.AUTOMATION
        handed_over = automation and self.handoff is not None and not intent.handover
        if not self.reachable() or handed_over:
            return False
        if automation and intent.tag == "HUMAN_AGENT":
            return False
        if intent.comment_id is not None:
            return self.comment_until(intent.comment_id, now) is not None
        if self.awaiting(now):
            return False
        if intent.optin is not None:
            return self.optin_request_ok(intent, now)
        if intent.via_token is OptInKind.ONE_TIME:
            return self.one_time_usable(intent.topic, now)
        if intent.via_token is OptInKind.MARKETING:
            return self.marketing_usable(intent.topic, now)
        return (
            self.open_until(self.rules.standard_window, now, BasisKind.STANDARD_WINDOW) is not None
            or self.ad_usable(now)
            or self.marketing_usable(intent.topic, now)
            or self.one_time_usable(intent.topic, now)
            or self.human_agent_usable(intent, now)
            or self.tag_usable(intent, now)
        )

    def check_allowed(self, d: Allowed, intent: Intent, now: datetime) -> None:
        """The basis named is really open, for this author and content, until `d.until`."""
        r = self.rules
        assert d.until - r.send_margin > now
        if intent.author is Author.AUTOMATION:
            assert d.basis is not BasisKind.HUMAN_AGENT
        if intent.optin is not None:
            assert d.basis is BasisKind.STANDARD_WINDOW and d.optin is intent.optin
        if d.basis is BasisKind.PRIVATE_REPLY:
            assert intent.comment_id == d.comment_id == d.recipient_value
            assert d.until == self.comment_until(d.comment_id or "", now)
        elif d.basis is BasisKind.STANDARD_WINDOW:
            assert d.until == self.open_until(r.standard_window, now, BasisKind.STANDARD_WINDOW)
        elif d.basis is BasisKind.HUMAN_AGENT:
            assert self.human_agent_usable(intent, now)
            assert d.until == self.open_until(r.human_agent_window, now, BasisKind.HUMAN_AGENT)
        elif d.basis is BasisKind.MESSAGE_TAG:
            assert self.tag_usable(intent, now) and d.tag == intent.tag
            assert d.until == self.open_until(r.tag_window, now, BasisKind.MESSAGE_TAG)
        elif d.basis is BasisKind.AD_REFERRAL_WINDOW:
            assert self.ad_usable(now)
        else:
            token = self.optin_event(d.token)
            assert token is not None and token.topic == intent.topic == d.topic
            assert d.until == self.expiry(token)
            if d.basis is BasisKind.ONE_TIME_NOTIFICATION:
                assert token.kind is OptInKind.ONE_TIME
                assert self.one_time_usable(intent.topic, now)
                assert not any(a.token == d.token for _, a in self.sends)
            else:
                assert d.basis is BasisKind.MARKETING_MESSAGE
                assert token.kind is OptInKind.MARKETING and not self.stopped(token)
                assert self.marketing_usable(intent.topic, now)
