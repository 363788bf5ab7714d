"""The webhook side of Meta: scripted user actions, delivered signed to the bot (POLICY.md §2).

Each action updates the simulator's model first (a DM opens the window whether or not the bot
answers 200), then POSTs the delivery and returns what it delivered and the bot's status.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import aiohttp

from bot.clock import to_ms
from bot.events import OptInKind, OptInStatus, Platform
from bot.simulator import payloads
from bot.simulator.model import CommentRecord, Token
from bot.simulator.rules import SimulatorError

if TYPE_CHECKING:
    from bot.simulator.core import Simulator

__all__ = ["Delivered", "Player"]


@dataclass(frozen=True, slots=True)
class Delivered:
    """One webhook POST: what was sent, its signature, and how the bot answered."""

    action: str
    account_id: str
    user_id: str | None
    payload: dict[str, Any]
    body: bytes = field(repr=False)
    signature: str
    status: int | None  # None: not delivered (no webhook URL, or the connection failed)
    ids: dict[str, str] = field(default_factory=dict)
    error: str | None = None

    @property
    def comment_id(self) -> str | None:
        return self.ids.get("comment_id")

    @property
    def mid(self) -> str | None:
        return self.ids.get("mid")

    @property
    def token(self) -> str | None:
        return self.ids.get("token")

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "account_id": self.account_id,
            "user_id": self.user_id,
            "status": self.status,
            "ids": self.ids,
            "error": self.error,
            "payload": self.payload,
        }


class Player:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    # -- delivery -----------------------------------------------------------------------

    async def deliver(
        self,
        action: str,
        account_id: str,
        user_id: str | None,
        payload: dict[str, Any],
        ids: dict[str, str] | None = None,
    ) -> Delivered:
        body = payloads.encode(payload)
        signature = payloads.sign(self.sim.app_secret, body)
        status, error = await self._post(body, signature)
        d = Delivered(
            action, account_id, user_id, payload, body, signature, status, ids or {}, error
        )
        self.sim.deliveries.append(d)
        return d

    async def redeliver(self, delivered: Delivered) -> Delivered:
        """Send the same bytes again: Meta duplicates deliveries (§2)."""
        status, error = await self._post(delivered.body, delivered.signature)
        d = replace(delivered, status=status, error=error, ids=dict(delivered.ids))
        self.sim.deliveries.append(d)
        return d

    async def _post(self, body: bytes, signature: str) -> tuple[int | None, str | None]:
        url = self.sim.webhook_url
        if not url:
            return None, None
        headers = {"Content-Type": "application/json", "X-Hub-Signature-256": signature}
        session = await self.sim.session()
        try:
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()
                return resp.status, None
        except (aiohttp.ClientError, TimeoutError) as exc:
            return None, f"{type(exc).__name__}: {exc}"

    def _who(self, account: str | None, user: str) -> tuple[str, Platform, str, datetime]:
        acct = self.sim.account(account)
        return acct.id, acct.platform, self.sim.user_id(user), self.sim.clock.now()

    async def _messaging(
        self,
        action: str,
        account: str | None,
        user: str,
        item: dict[str, Any],
        ids: dict[str, str],
        *,
        opens_window: bool,
    ) -> Delivered:
        aid, platform, uid, now = self._who(account, user)
        self.sim.model.contact(aid, uid)  # the account now knows this user
        if opens_window:
            self.sim.model.user_message(aid, uid, now)
        payload = payloads.messaging(platform, aid, sender=uid, recipient=aid, now=now, item=item)
        return await self.deliver(action, aid, uid, payload, ids)

    # -- comments (open a private-reply basis for themselves only) ------------------------

    async def comment(
        self,
        account: str | None,
        user: str,
        media: str,
        text: str,
        *,
        username: str | None = None,
        parent_id: str | None = None,
        ad_id: str | None = None,
        product_type: str | None = None,
        live: bool = False,
    ) -> Delivered:
        aid, platform, uid, now = self._who(account, user)
        if username:
            self.sim.set_profile(uid, username=username)
        name = username or self.sim.profile(uid).username
        if live:
            if self.sim.model.live.get((aid, media)) is False:
                raise SimulatorError(f"live video {media} has ended; start a new media id")
            self.sim.model.start_live(aid, media)
        if platform is Platform.INSTAGRAM:
            cid = self.sim.ids.comment()
            payload = payloads.ig_comment(
                aid,
                user_id=uid,
                username=name,
                comment_id=cid,
                media_id=media,
                text=text,
                now=now,
                live=live,
                parent_id=parent_id,
                ad_id=ad_id,
                product_type=product_type,
            )
            media_id = media
        else:
            media_id = media if "_" in media else f"{aid}_{media}"
            cid = f"{media_id.split('_', 1)[1]}_{self.sim.ids.fb_object()}"
            payload = payloads.fb_comment(
                aid,
                user_id=uid,
                name=self.sim.profile(uid).name,
                comment_id=cid,
                post_id=media_id,
                text=text,
                now=now,
                parent_id=parent_id,
            )
        self.sim.model.add_comment(
            CommentRecord(cid, aid, uid, media_id, text, now, live=live, parent_id=parent_id)
        )
        ids = {"comment_id": cid, "media_id": media_id}
        return await self.deliver("live_comment" if live else "comment", aid, uid, payload, ids)

    async def live_comment(
        self, account: str | None, user: str, media: str, text: str, *, username: str | None = None
    ) -> Delivered:
        """A comment on a live video: private replies only while the broadcast runs (§1)."""
        return await self.comment(account, user, media, text, username=username, live=True)

    async def own_comment(self, account_id: str, comment: CommentRecord) -> Delivered:
        """The account's own public reply, which Meta also delivers (from.id == entry.id, §2)."""
        acct = self.sim.account(account_id)
        now = self.sim.clock.now()
        if acct.platform is Platform.INSTAGRAM:
            payload = payloads.ig_comment(
                acct.id,
                user_id=acct.id,
                username=f"account{acct.id[-4:]}",
                comment_id=comment.id,
                media_id=comment.media_id,
                text=comment.text,
                now=now,
                live=comment.live,
                parent_id=comment.parent_id,
            )
        else:
            payload = payloads.fb_comment(
                acct.id,
                user_id=acct.id,
                name="Page",
                comment_id=comment.id,
                post_id=comment.media_id,
                text=comment.text,
                now=now,
                parent_id=comment.parent_id,
            )
        return await self.deliver(
            "own_comment", acct.id, acct.id, payload, {"comment_id": comment.id}
        )

    # -- user-initiated messages (open or reset the 24 h window, §1) ----------------------

    async def dm(self, account: str | None, user: str, text: str) -> Delivered:
        mid = self.sim.ids.mid()
        item = {"message": {"mid": mid, "text": text}}
        return await self._messaging("dm", account, user, item, {"mid": mid}, opens_window=True)

    async def story_reply(
        self, account: str | None, user: str, story_id: str, text: str
    ) -> Delivered:
        mid = self.sim.ids.mid()
        url = f"https://lookaside.fbsbx.com/ig_messaging_cdn/?asset_id={story_id}&signature=sim"
        story = {"story": {"id": story_id, "url": url}}
        item = {"message": {"mid": mid, "text": text, "reply_to": story}}
        return await self._messaging(
            "story_reply", account, user, item, {"mid": mid}, opens_window=True
        )

    async def story_mention(self, account: str | None, user: str, url: str) -> Delivered:
        mid = self.sim.ids.mid()
        att = [{"type": "story_mention", "payload": {"url": url}}]
        item = {"message": {"mid": mid, "attachments": att}}
        return await self._messaging(
            "story_mention", account, user, item, {"mid": mid}, opens_window=True
        )

    async def quick_reply(
        self, account: str | None, user: str, payload: str, text: str
    ) -> Delivered:
        mid = self.sim.ids.mid()
        item = {"message": {"mid": mid, "text": text, "quick_reply": {"payload": payload}}}
        return await self._messaging(
            "quick_reply", account, user, item, {"mid": mid}, opens_window=True
        )

    async def postback(
        self, account: str | None, user: str, payload: str, title: str
    ) -> Delivered:
        mid = self.sim.ids.mid()
        item = {"postback": {"mid": mid, "title": title, "payload": payload}}
        return await self._messaging(
            "postback", account, user, item, {"mid": mid}, opens_window=True
        )

    async def referral(
        self, account: str | None, user: str, ref: str, *, source: str | None = None
    ) -> Delivered:
        platform = self.sim.account(account).platform
        src = source or ("IGME" if platform is Platform.INSTAGRAM else "SHORTLINK")
        item = {"referral": {"ref": ref, "source": src, "type": "OPEN_THREAD"}}
        return await self._messaging("referral", account, user, item, {}, opens_window=True)

    # -- opt-ins (do not open the window, §1) -------------------------------------------

    async def optin(
        self,
        account: str | None,
        user: str,
        kind: str,
        topic: str,
        frequency: str | None = None,
        *,
        title: str | None = None,
    ) -> Delivered:
        """The user accepts an opt-in request: mints a token the simulator will accept."""
        aid, _, uid, now = self._who(account, user)
        okind = OptInKind(kind)
        one_time = okind is OptInKind.ONE_TIME
        ttl = self.sim.rules.one_time_token_ttl if one_time else self.sim.rules.marketing_token_ttl
        freq = None if one_time else (frequency or "DAILY").upper()
        if freq is not None and freq not in self.sim.rules.frequency_periods:
            raise SimulatorError(
                f"frequency must be one of {', '.join(self.sim.rules.frequency_periods)}"
            )
        token = self.sim.model.add_token(
            Token(self.sim.ids.token(), okind, aid, uid, topic, now, now + ttl, freq)
        )
        body: dict[str, Any] = {"type": okind.value, "payload": topic}
        if one_time:
            body["one_time_notif_token"] = token.value
        else:
            body |= {
                "notification_messages_token": token.value,
                "notification_messages_frequency": freq,
                "notification_messages_timezone": "Etc/UTC",
                "token_expiry_timestamp": to_ms(token.expires_at),
                "user_token_status": "NOT_REFRESHED",
            }
        if title:
            body["title"] = title
        ids = {"token": token.value}
        return await self._messaging(
            "optin", account, user, {"optin": body}, ids, opens_window=False
        )

    async def stop(self, account: str | None, user: str, topic: str) -> Delivered:
        return await self._status("stop", account, user, topic, OptInStatus.STOP)

    async def resume(self, account: str | None, user: str, topic: str) -> Delivered:
        return await self._status("resume", account, user, topic, OptInStatus.RESUME)

    async def _status(
        self, action: str, account: str | None, user: str, topic: str, status: OptInStatus
    ) -> Delivered:
        aid, _, uid, _ = self._who(account, user)
        tokens = self.sim.model.set_stopped(aid, uid, topic, status is OptInStatus.STOP)
        if not tokens:
            raise SimulatorError(f"{user} holds no marketing token for topic {topic!r} on {aid}")
        token = tokens[-1]
        body = {
            "type": OptInKind.MARKETING.value,
            "payload": topic,
            "notification_messages_token": token.value,
            "notification_messages_status": status.value,
            "notification_messages_frequency": token.frequency,
            "token_expiry_timestamp": to_ms(token.expires_at),
        }
        ids = {"token": token.value}
        return await self._messaging(
            action, account, user, {"optin": body}, ids, opens_window=False
        )

    # -- reads and reactions (never open a window, §1) -----------------------------------

    async def read(self, account: str | None, user: str, mid: str | None = None) -> Delivered:
        aid, platform, uid, now = self._who(account, user)
        mid = mid or self.sim.last_mid(aid, uid)
        if platform is Platform.MESSENGER:
            item: dict[str, Any] = {"read": {"watermark": to_ms(now)}}
        else:
            item = {"read": {"mid": mid}}
        ids = {"mid": mid} if mid else {}
        return await self._messaging("read", account, user, item, ids, opens_window=False)

    async def react(
        self,
        account: str | None,
        user: str,
        mid: str | None = None,
        emoji: str = "\u2764",
        action: str = "react",
    ) -> Delivered:
        aid, _, uid, _ = self._who(account, user)
        mid = mid or self.sim.last_mid(aid, uid)
        if mid is None:
            raise SimulatorError(f"{user} has no message from {aid} to react to; pass mid")
        reaction = {
            "mid": mid,
            "action": action,
            "reaction": "love" if emoji == "\u2764" else "other",
            "emoji": emoji,
        }
        return await self._messaging(
            "react", account, user, {"reaction": reaction}, {"mid": mid}, opens_window=False
        )

    # -- echoes of the account's own sends ----------------------------------------------

    async def echo(
        self, account_id: str, user_id: str, mid: str, message: Mapping[str, Any]
    ) -> Delivered:
        """`is_echo: true`, sender = the account: never opens or extends a window (§1)."""
        acct = self.sim.account(account_id)
        now = self.sim.clock.now()
        echoed: dict[str, Any] = {"mid": mid, "is_echo": True, "app_id": int(self.sim.app_id)}
        if message.get("text"):
            echoed["text"] = message["text"]
        if isinstance(message.get("metadata"), str):
            echoed["metadata"] = message["metadata"]  # Meta hands the sender's back
        att = message.get("attachment")
        if isinstance(att, Mapping):
            echoed["attachments"] = [{"type": att.get("type"), "payload": att.get("payload")}]
        payload = payloads.messaging(
            acct.platform,
            acct.id,
            sender=acct.id,
            recipient=user_id,
            now=now,
            item={"message": echoed},
        )
        return await self.deliver("echo", acct.id, user_id, payload, {"mid": mid})
