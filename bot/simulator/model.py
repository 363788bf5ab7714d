"""The simulator's model of Meta's side: who wrote when, comments, tokens, opt-in requests.

Pure: no I/O and no clock reads; every call takes `now`. Windows are per account and user
(POLICY.md §1). `send` decides a Send API call and, when it is accepted, records what it used
up (the comment's one private reply, a one-time token, a marketing period, a cap slot).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from datetime import datetime

from bot.events import OptInKind
from bot.simulator.decide import commit, decide
from bot.simulator.rules import Accepted, Basis, Reason, Refused, SimulatorRules, Verdict, refuse
from bot.simulator.state import CommentRecord, Contact, OptinSent, Profile, SimAccount, Token
from bot.simulator.validate import SendRequest

__all__ = ["CommentRecord", "Contact", "Model", "OptinSent", "Profile", "SimAccount", "Token"]


class Model:
    def __init__(self, accounts: Iterable[SimAccount], rules: SimulatorRules) -> None:
        self.rules = rules
        self.accounts: dict[str, SimAccount] = {a.id: a for a in accounts}
        self.contacts: dict[tuple[str, str], Contact] = {}
        self.comments: dict[str, CommentRecord] = {}
        self.tokens: dict[str, Token] = {}
        self.profiles: dict[str, Profile] = {}
        self.live: dict[tuple[str, str], bool] = {}
        self.unavailable: set[str] = set()
        self.not_receiving: set[str] = set()
        self.restricted: set[str] = set()
        self.dm_sends: dict[str, deque[datetime]] = {}
        self.pr_sends: dict[str, deque[datetime]] = {}
        self.live_pr_sends: dict[str, deque[datetime]] = {}

    # -- what users do (called by the player) -----------------------------------------------

    def contact(self, account_id: str, user_id: str) -> Contact:
        return self.contacts.setdefault((account_id, user_id), Contact())

    def user_message(self, account_id: str, user_id: str, now: datetime) -> None:
        """A DM, story reply or mention, quick reply, postback or referral (§1)."""
        c = self.contact(account_id, user_id)
        c.first_user_message = c.first_user_message or now
        if c.last_user_message is None or now > c.last_user_message:
            c.last_user_message = now

    def add_comment(self, comment: CommentRecord) -> CommentRecord:
        if comment.user_id != comment.account_id:
            self.contact(comment.account_id, comment.user_id)
        self.comments[comment.id] = comment
        return comment

    def start_live(self, account_id: str, media_id: str) -> None:
        if self.live.get((account_id, media_id)) is False:
            raise ValueError(f"live video {media_id} has ended; a broadcast can't restart")
        self.live[(account_id, media_id)] = True

    def stop_live(self, account_id: str, media_id: str) -> None:
        self.live[(account_id, media_id)] = False

    def add_token(self, token: Token) -> Token:
        self.tokens[token.value] = token
        return token

    def set_stopped(self, account_id: str, user_id: str, topic: str, stopped: bool) -> list[Token]:
        """STOP / RESUME of marketing messages on a topic (§1)."""
        hit = [
            t
            for t in self.tokens.values()
            if t.kind is OptInKind.MARKETING
            and (t.account_id, t.user_id, t.topic) == (account_id, user_id, topic)
        ]
        for t in hit:
            t.stopped = stopped
        return hit

    # -- what the business asks for -------------------------------------------------------

    def authorize(self, account_id: str, token: str | None) -> SimAccount | Refused:
        if not token:
            return refuse(
                Reason.MISSING_TOKEN, "An access token is required to request this resource."
            )
        if account_id == "me":
            found = [a for a in self.accounts.values() if a.token == token]
            if found:
                return found[0]
        account = self.accounts.get(account_id)
        if account is None:
            if any(a.token == token for a in self.accounts.values()):
                return refuse(
                    Reason.UNKNOWN_OBJECT,
                    f"Unsupported post request. Object with ID '{account_id}' does not exist",
                )
            return refuse(Reason.BAD_TOKEN, "Error validating access token.")
        if account.token != token:
            return refuse(
                Reason.BAD_TOKEN, "Error validating access token: the session is invalid."
            )
        return account

    def send(self, account: SimAccount, req: SendRequest, now: datetime) -> Verdict:
        """Decide one Send API call; on acceptance, use up what it consumed."""
        verdict = decide(self, account, req, now)
        if isinstance(verdict, Accepted):
            commit(self, account, req, verdict, now)
        return verdict

    def public_reply(
        self, account: SimAccount, comment_id: str, reply_id: str, text: str, now: datetime
    ) -> Verdict:
        """A public answer under a comment: no messaging basis needed (§3)."""
        comment = self.comments.get(comment_id)
        if comment is None or comment.account_id != account.id:
            return refuse(Reason.UNKNOWN_OBJECT, f"Object with ID '{comment_id}' does not exist")
        if not text:
            return refuse(Reason.BAD_PARAMETER, "(#100) param message is required")
        if len(text) > self.rules.public_reply_chars:
            return refuse(Reason.TEXT_TOO_LONG, "(#100) the reply is too long")
        self.add_comment(
            CommentRecord(
                reply_id,
                account.id,
                account.id,
                comment.media_id,
                text,
                now,
                comment.live,
                comment.id,
            )
        )
        return Accepted(Basis.PUBLIC_REPLY, comment.user_id)

    def profile_consent(self, account: SimAccount, user_id: str) -> Refused | None:
        """Profiles need consent: a message or a tap, never a comment alone (§3)."""
        c = self.contacts.get((account.id, user_id))
        if c is None or c.first_user_message is None:
            return refuse(
                Reason.NO_CONSENT,
                "User consent is required to access user profile",
                user_id=user_id,
            )
        return None
