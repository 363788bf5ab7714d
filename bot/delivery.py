"""Turn one webhook delivery (Meta's raw POST body) into typed events (POLICY.md §2).

Hand-written readers keep only the fields the bot uses, so a new Meta field never breaks parsing
(DESIGN.md "House style"). One bad item becomes an `Unknown` event with a reason instead of
failing the whole delivery: a delivery holds up to 1000 events, and a crash here would either
drop the other 999 or, retried forever, block the inbox. Only a body that is not a JSON object
with an `entry` list is rejected, with `MalformedDelivery`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from bot.clock import from_ms
from bot.errors import BotError
from bot.events import (
    Attachment,
    Comment,
    CommentVerb,
    Event,
    Message,
    OptIn,
    OptInKind,
    OptInStatus,
    Platform,
    Postback,
    Reaction,
    Read,
    Referral,
    Unknown,
)

__all__ = ["NO_TIME", "MalformedDelivery", "ParsedDelivery", "contact_order", "parse_delivery"]

_log = logging.getLogger(__name__)
_T = TypeVar("_T")

# The timestamp of an `Unknown` that carried no usable time: events need one, and the epoch
# sorts such items first for their contact, where nothing depends on them.
NO_TIME = from_ms(0)

_PLATFORMS = {"instagram": Platform.INSTAGRAM, "page": Platform.MESSENGER}
_IG_COMMENT_FIELDS = {"comments": False, "live_comments": True}  # field -> live
_MS_THRESHOLD = 1e11  # above: milliseconds (year 1973 onwards); below: seconds (until 5138)
_MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the last time a datetime can hold
_MAX_ID = 2**63  # Meta ids fit in 64 bits; a bigger "id" is not an id
# Meta's ids are digits (users, accounts, comments, media) or base64-like message ids and
# tokens ("aWdfZAG1...", "mid.1457764197618:41d1..."): nothing else is an id, and nothing
# from outside that lands in a log line or a key may carry a newline or a control character.
_ID = re.compile(r"[A-Za-z0-9._:=+/-]{1,512}")


class MalformedDelivery(BotError):
    """The body is not a webhook delivery at all; store it for inspection, don't retry it."""


@dataclass(frozen=True, slots=True)
class ParsedDelivery:
    object: str
    events: tuple[Event, ...]
    problems: tuple[str, ...]  # one line per item that became `Unknown`


class _Bad(Exception):
    """One item can't be used; it becomes an `Unknown` with this reason. Never escapes."""


def parse_delivery(body: bytes | str | Mapping[str, Any]) -> ParsedDelivery:
    """Parse one delivery; raises only `MalformedDelivery`, and only for the whole body."""
    doc = _load(body)
    entries = doc.get("entry")
    if not isinstance(entries, list | tuple):
        raise MalformedDelivery(
            "delivery has no entry list"
            if entries is None
            else f"delivery's entry is {_kind(entries)}, not a list"
        )
    raw_object = doc.get("object")
    object_name = raw_object if isinstance(raw_object, str) else ""
    platform = _PLATFORMS.get(object_name)
    out = _Out()
    for i, entry in enumerate(entries):
        where = f"entry[{i}]"
        if platform is None:
            reason = f"unknown object {_short(object_name)}" if object_name else "no object"
            # Tagged MESSENGER only because events need a platform; the reason names the object.
            _Entry(Platform.MESSENGER, entry, where, out).unknown(entry, where, reason)
        else:
            _Entry(platform, entry, where, out).parse()
    return ParsedDelivery(object_name, tuple(out.events), tuple(out.problems))


def contact_order(events: Iterable[Event]) -> list[Event]:
    """Per-contact timestamp order: Meta delivers out of order, the engine must not (§2)."""
    return sorted(events, key=lambda e: (e.account_id, e.user_id or "", e.timestamp, e.key))


def _load(body: bytes | str | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(body, Mapping):
        doc: object = body
    else:
        if isinstance(body, bytes | bytearray):
            try:
                body = bytes(body).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise MalformedDelivery(f"body is not valid UTF-8 (byte {exc.start})") from None
        if not isinstance(body, str):
            raise MalformedDelivery(f"body is {_kind(body)}, not bytes, text or a mapping")
        try:
            doc = json.loads(body, parse_constant=_reject_constant)
        except json.JSONDecodeError as exc:
            raise MalformedDelivery(f"body is not valid JSON: {exc.msg} at {exc.pos}") from None
        except (ValueError, RecursionError) as exc:  # NaN, huge integers, absurd nesting
            raise MalformedDelivery(f"body is not valid JSON ({type(exc).__name__})") from None
    if not isinstance(doc, Mapping):
        raise MalformedDelivery(f"body is {_kind(doc)}, not a JSON object")
    return doc


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class _Out:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.problems: list[str] = []


class _Entry:
    """One `entry[]` element: its account, its fallback time, and where its events go."""

    def __init__(self, platform: Platform, entry: object, where: str, out: _Out) -> None:
        self.platform = platform
        self.entry = entry
        self.where = where
        self.out = out
        fields: Mapping[str, Any] = entry if isinstance(entry, Mapping) else {}
        self.account = _quiet(_opt_id, fields, "id", where)
        self.time_ms = _quiet(_opt_time, fields, "time", where)

    def parse(self) -> None:
        entry = self.entry
        if not isinstance(entry, Mapping):
            self.unknown(entry, self.where, f"entry is {_kind(entry)}, not an object")
            return
        found = False
        for name, standby in (("messaging", False), ("standby", True)):
            if entry.get(name) is not None:
                found = True
                self._each(entry, name, partial(self._messaging, standby=standby), standby)
        if entry.get("changes") is not None:
            found = True
            self._each(entry, "changes", self._change, False)
        elif "field" in entry:
            # Meta's Instagram-Login example puts field/value straight in the entry (§2).
            found = True
            self._item(entry, self.where, self._change, False)
        if not found:
            self.unknown(entry, self.where, "entry has no messaging, standby or changes")

    def _each(self, entry: Mapping[str, Any], name: str, parse: _Parser, standby: bool) -> None:
        items = entry[name]
        where = f"{self.where}.{name}"
        if not isinstance(items, list | tuple):
            self.unknown(items, where, f"{name} is {_kind(items)}, not a list", standby=standby)
            return
        for j, item in enumerate(items):
            self._item(item, f"{where}[{j}]", parse, standby)

    def _item(self, item: object, where: str, parse: _Parser, standby: bool) -> None:
        try:
            self.out.events.append(parse(item, where))
        except _Bad as exc:
            self.unknown(item, where, str(exc), standby=standby)
        except Exception as exc:  # a parser bug must cost one item, not the whole delivery
            _log.exception("parser bug at %s", where)
            self.unknown(item, where, f"parser bug: {type(exc).__name__}", standby=standby)

    def unknown(self, item: object, where: str, reason: str, *, standby: bool = False) -> None:
        """Record an item the bot can't use, with the best account, user and time it has."""
        fields: Mapping[str, Any] = item if isinstance(item, Mapping) else {}
        message = fields.get("message")
        echo = isinstance(message, Mapping) and message.get("is_echo") is True
        user_side, account_side = ("recipient", "sender") if echo else ("sender", "recipient")
        account = self.account or _quiet(_nested_id, fields, account_side, where) or ""
        ms = _quiet(_opt_time, fields, "timestamp", where) or self.time_ms
        field = fields.get("field")
        self.out.events.append(
            Unknown(
                platform=self.platform,
                account_id=account,
                user_id=_quiet(_nested_id, fields, user_side, where),
                timestamp=NO_TIME if ms is None else from_ms(ms),
                key=f"unknown:{account}:{_digest(item)}",
                standby=standby,
                reason=reason,
                field=field if isinstance(field, str) else None,
            )
        )
        self.out.problems.append(f"{where}: {reason}")

    def _messaging(self, item: object, where: str, *, standby: bool) -> Event:
        it = _obj(item, where)
        message = _opt_obj(it, "message", where)
        is_echo = message is not None and _flag(message, "is_echo", f"{where}.message")
        sender = _nested_id(it, "sender", where)
        recipient = _nested_id(it, "recipient", where)
        if message is not None and not is_echo and sender is not None and sender == self.account:
            # The account's own message without `is_echo` (seen in the wild): an echo all the
            # same, whose contact is the recipient; never a message from the account to itself.
            is_echo = True
        # Echoes are the account's own messages: the contact is the recipient (§2).
        user = recipient if is_echo else sender
        account = self.account or (sender if is_echo else recipient)
        if account is None:
            raise _Bad("no account id (entry.id missing, and no sender/recipient for it)")
        ms = _opt_time(it, "timestamp", where) or self.time_ms
        if ms is None:
            raise _Bad("no timestamp")
        env = _Env(self.platform, account, user, ms, standby, is_echo)
        if message is not None:
            return _message(env, message, f"{where}.message")
        for kind, parse in _MESSAGING_PARSERS.items():
            body = _opt_obj(it, kind, where)
            if body is not None:
                return parse(env, body, f"{where}.{kind}")
        keys = sorted(str(k) for k in it if k not in ("sender", "recipient", "timestamp"))
        raise _Bad(f"no known item (keys: {_short(', '.join(keys), quote=False)})")

    def _change(self, item: object, where: str) -> Event:
        change = _obj(item, where)
        field = _opt_str(change, "field", where)
        if field is None:
            raise _Bad("change has no field")
        handled = (self.platform is Platform.INSTAGRAM and field in _IG_COMMENT_FIELDS) or (
            self.platform is Platform.MESSENGER and field == "feed"
        )
        if not handled:
            raise _Bad(f"field {_short(field)} not handled")
        value = _opt_obj(change, "value", where)
        if value is None:
            raise _Bad(f"{field} change has no value")
        if self.account is None:
            raise _Bad("no account id (entry.id missing)")
        vw = f"{where}.value"
        if field != "feed":
            live = _IG_COMMENT_FIELDS[field]
            return _ig_comment(self.platform, self.account, self.time_ms, value, vw, live=live)
        item_kind = _opt_str(value, "item", vw)
        if item_kind != "comment":
            raise _Bad(f"feed item {_short(item_kind)} not handled")
        return _fb_comment(self.platform, self.account, self.time_ms, value, vw)


_Parser = Callable[[object, str], Event]


@dataclass(frozen=True, slots=True)
class _Env:
    """What every messaging event shares: who, for which account, and when."""

    platform: Platform
    account: str
    user: str | None
    ms: int
    standby: bool
    echo: bool = False

    def base(self, key: str) -> dict[str, Any]:
        return {
            "platform": self.platform,
            "account_id": self.account,
            "user_id": self.user,
            "timestamp": from_ms(self.ms),
            "standby": self.standby,
            "key": key,
        }


def _message(env: _Env, m: Mapping[str, Any], where: str) -> Message:
    mid = _req_id(m, "mid", where, "message without mid")
    is_echo = _flag(m, "is_echo", where) or env.echo
    is_deleted = _flag(m, "is_deleted", where)
    # A deleted notice repeats the original mid, and an echo's mid is the account's own:
    # each needs its own key so it is not dropped as a duplicate of the message.
    prefix = "deleted" if is_deleted else "echo" if is_echo else "mid"
    quick_reply = _opt_obj(m, "quick_reply", where)
    reply_to = _opt_obj(m, "reply_to", where)
    story = _opt_obj(reply_to, "story", f"{where}.reply_to") if reply_to else None
    referral = _opt_obj(m, "referral", where)
    attachments: list[Attachment] = []
    for i, raw in enumerate(_opt_list(m, "attachments", where) or ()):
        aw = f"{where}.attachments[{i}]"
        a = _obj(raw, aw)
        kind = _opt_str(a, "type", aw)
        if kind is None:
            raise _Bad(f"{aw} has no type")
        payload = _opt_obj(a, "payload", aw)
        url = _opt_str(payload, "url", f"{aw}.payload") if payload else None
        attachments.append(Attachment(kind, url))
    return Message(
        **env.base(f"{prefix}:{mid}"),
        mid=mid,
        text=_opt_str(m, "text", where),
        quick_reply_payload=(
            _opt_str(quick_reply, "payload", f"{where}.quick_reply") if quick_reply else None
        ),
        reply_to_story_id=_opt_id(story, "id", f"{where}.reply_to.story") if story else None,
        reply_to_story_url=_opt_str(story, "url", f"{where}.reply_to.story") if story else None,
        reply_to_mid=_opt_id(reply_to, "mid", f"{where}.reply_to") if reply_to else None,
        attachments=tuple(attachments),
        referral_ref=_opt_str(referral, "ref", f"{where}.referral") if referral else None,
        referral_ad_id=_opt_id(referral, "ad_id", f"{where}.referral") if referral else None,
        is_echo=is_echo,
        is_deleted=is_deleted,
        is_unsupported=_flag(m, "is_unsupported", where),
        metadata=_opt_str(m, "metadata", where) if is_echo else None,
    )


def _postback(env: _Env, p: Mapping[str, Any], where: str) -> Postback:
    payload = _opt_str(p, "payload", where)
    if payload is None:
        raise _Bad("postback without payload")
    mid = _opt_id(p, "mid", where)
    referral = _opt_obj(p, "referral", where)
    key = (
        f"postback:{mid}" if mid else f"postback:{env.account}:{env.user or ''}:{env.ms}:{payload}"
    )
    return Postback(
        **env.base(key),
        payload=payload,
        title=_opt_str(p, "title", where),
        mid=mid,
        referral_ref=_opt_str(referral, "ref", f"{where}.referral") if referral else None,
    )


def _referral(env: _Env, r: Mapping[str, Any], where: str) -> Referral:
    ref = _opt_str(r, "ref", where)
    return Referral(
        **env.base(f"referral:{env.account}:{env.user or ''}:{env.ms}:{ref or ''}"),
        ref=ref,
        source=_opt_str(r, "source", where),
        type=_opt_str(r, "type", where),
        ad_id=_opt_id(r, "ad_id", where),
    )


def _reaction(env: _Env, r: Mapping[str, Any], where: str) -> Reaction:
    mid = _req_id(r, "mid", where, "reaction without mid")
    action = _opt_str(r, "action", where)
    if not action:
        raise _Bad("reaction without action")
    return Reaction(
        **env.base(f"reaction:{mid}:{env.user or ''}:{action}:{env.ms}"),
        mid=mid,
        action=action,
        reaction=_opt_str(r, "reaction", where),
        emoji=_opt_str(r, "emoji", where),
    )


def _read(env: _Env, r: Mapping[str, Any], where: str) -> Read:
    mid = _opt_id(r, "mid", where)
    watermark = _opt_time(r, "watermark", where)
    if mid is None and watermark is None:
        raise _Bad("read without mid or watermark")
    return Read(
        **env.base(f"read:{env.account}:{env.user or ''}:{mid or watermark}"),
        mid=mid,
        watermark=None if watermark is None else from_ms(watermark),
    )


def _optin(env: _Env, o: Mapping[str, Any], where: str) -> OptIn:
    raw_kind = _opt_str(o, "type", where)
    try:
        kind = OptInKind(raw_kind or "")
    except ValueError:
        raise _Bad(f"optin type {_short(raw_kind)} not handled") from None
    raw_status = _opt_str(o, "notification_messages_status", where)
    try:
        status = None if raw_status is None else OptInStatus(raw_status)
    except ValueError:
        raise _Bad(f"notification_messages_status {_short(raw_status)} not handled") from None
    topic = _opt_str(o, "payload", where)
    token = _opt_str(o, "one_time_notif_token", where) or _opt_str(
        o, "notification_messages_token", where
    )
    expiry = _opt_time(o, "token_expiry_timestamp", where)
    status_part = status.value if status else "optin"
    return OptIn(
        **env.base(f"optin:{kind.value}:{token or topic or ''}:{status_part}:{env.ms}"),
        kind=kind,
        topic=topic,
        token=token,
        status=status,
        frequency=_opt_str(o, "notification_messages_frequency", where),
        token_expiry=None if expiry is None else from_ms(expiry),
        title=_opt_str(o, "title", where),
    )


_MESSAGING_PARSERS: dict[str, Callable[[_Env, Mapping[str, Any], str], Event]] = {
    "postback": _postback,
    "referral": _referral,
    "reaction": _reaction,
    "read": _read,
    "optin": _optin,
}


def _ig_comment(
    platform: Platform,
    account: str,
    entry_ms: int | None,
    v: Mapping[str, Any],
    where: str,
    *,
    live: bool,
) -> Comment:
    # `id` in real traffic, `comment_id` in some of Meta's examples (§2 [conflict]).
    comment_id = _opt_id(v, "id", where) or _opt_id(v, "comment_id", where)
    if comment_id is None:
        raise _Bad("comment without id")
    if entry_ms is None:
        raise _Bad("no timestamp")
    sender = _opt_obj(v, "from", where)
    media = _opt_obj(v, "media", where)
    mw = f"{where}.media"
    return Comment(
        platform=platform,
        account_id=account,
        # `from.id` has been seen missing (§2): the private reply needs only the comment id.
        user_id=_opt_id(sender, "id", f"{where}.from") if sender else None,
        timestamp=from_ms(entry_ms),
        key=f"comment:{comment_id}",
        comment_id=comment_id,
        text=_opt_str(v, "text", where) or "",
        media_id=_opt_id(media, "id", mw) if media else None,
        parent_id=_opt_id(v, "parent_id", where),
        live=live,
        username=_opt_str(sender, "username", f"{where}.from") if sender else None,
        media_product_type=_opt_str(media, "media_product_type", mw) if media else None,
        ad_id=_opt_id(media, "ad_id", mw) if media else None,
    )


def _fb_comment(
    platform: Platform, account: str, entry_ms: int | None, v: Mapping[str, Any], where: str
) -> Comment:
    comment_id = _req_id(v, "comment_id", where, "comment without comment_id")
    raw_verb = _opt_str(v, "verb", where)
    try:
        # No default: reading a `remove` as an `add` would answer a deleted comment.
        verb = CommentVerb(raw_verb or "")
    except ValueError:
        raise _Bad(f"feed comment verb {_short(raw_verb)} not handled") from None
    ms = _opt_time(v, "created_time", where) or entry_ms
    if ms is None:
        raise _Bad("no timestamp")
    post_id = _opt_id(v, "post_id", where)
    parent_id = _opt_id(v, "parent_id", where)
    sender = _opt_obj(v, "from", where)
    key = f"comment:{comment_id}"
    if verb is not CommentVerb.ADD:
        key = f"{key}:{verb.value}:{ms // 1000}"
    return Comment(
        platform=platform,
        account_id=account,
        user_id=_opt_id(sender, "id", f"{where}.from") if sender else None,
        timestamp=from_ms(ms),
        key=key,
        comment_id=comment_id,
        text=_opt_str(v, "message", where) or "",
        # A top-level Page comment names its post as parent; only a reply has a parent comment,
        # as on Instagram, so `parent_id` means the same on both platforms.
        parent_id=None if parent_id == post_id else parent_id,
        verb=verb,
        username=_opt_str(sender, "name", f"{where}.from") if sender else None,
        post_id=post_id,
    )


# -- field readers: each returns the value, None when absent or null, or raises _Bad ---------


def _obj(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _Bad(f"{where} is {_kind(value)}, not an object")
    return value


def _opt_obj(parent: Mapping[str, Any], name: str, where: str) -> Mapping[str, Any] | None:
    value = parent.get(name)
    return None if value is None else _obj(value, f"{where}.{name}")


def _opt_list(parent: Mapping[str, Any], name: str, where: str) -> Sequence[object] | None:
    value = parent.get(name)
    if value is None:
        return None
    if not isinstance(value, list | tuple):
        raise _Bad(f"{where}.{name} is {_kind(value)}, not a list")
    return value


def _opt_str(parent: Mapping[str, Any], name: str, where: str) -> str | None:
    value = parent.get(name)
    if value is None:
        return None
    if isinstance(value, str):
        return _valid_text(value)
    raise _Bad(f"{where}.{name} is {_kind(value)}, not a string")


def _valid_text(text: str) -> str:
    """The text as UTF-8 can carry it: a lone surrogate (JSON's "\ud800", which Python
    decodes but can't encode) becomes U+FFFD, so SQLite, the templates and the Send API all
    take it, and one odd character costs itself, not its delivery."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return text


def _flag(parent: Mapping[str, Any], name: str, where: str) -> bool:
    value = parent.get(name)
    if value is None or isinstance(value, bool):
        return bool(value)
    raise _Bad(f"{where}.{name} is {_kind(value)}, not true/false")


def _opt_id(parent: Mapping[str, Any], name: str, where: str) -> str | None:
    """Meta ids are strings; integers are accepted (as text) because some examples use them."""
    value = parent.get(name)
    if value is None:
        return None
    if isinstance(value, str):
        if not value:
            return None
        if _ID.fullmatch(value):
            return value
        raise _Bad(f"{where}.{name} is not an id (Meta's ids are digits or base64 letters)")
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < _MAX_ID:
        return str(value)
    raise _Bad(f"{where}.{name} is {_kind(value)}, not an id")


def _req_id(parent: Mapping[str, Any], name: str, where: str, missing: str) -> str:
    value = _opt_id(parent, name, where)
    if value is None:
        raise _Bad(missing)
    return value


def _nested_id(parent: Mapping[str, Any], name: str, where: str) -> str | None:
    """`sender.id` / `recipient.id`."""
    obj = _opt_obj(parent, name, where)
    return None if obj is None else _opt_id(obj, "id", f"{where}.{name}")


def _opt_time(parent: Mapping[str, Any], name: str, where: str) -> int | None:
    """Epoch milliseconds from seconds or milliseconds, told apart by magnitude (§2)."""
    value = parent.get(name)
    if value is None:
        return None
    number: float | int
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 16:
        number = int(value)  # a few public fixtures send the number as text
    elif isinstance(value, int | float) and not isinstance(value, bool):
        number = value
    else:
        raise _Bad(f"{where}.{name} is {_kind(value)}, not a timestamp")
    if not math.isfinite(number) or not 0 < number <= _MAX_MS:
        raise _Bad(f"{where}.{name} is out of range")
    ms = round(number) if number > _MS_THRESHOLD else round(number * 1000)
    if ms > _MAX_MS:
        raise _Bad(f"{where}.{name} is out of range")
    return ms


def _quiet(
    reader: Callable[[Mapping[str, Any], str, str], _T],
    parent: Mapping[str, Any],
    name: str,
    where: str,
) -> _T | None:
    """A reader that gives None instead of raising: the best effort for an Unknown's envelope."""
    try:
        return reader(parent, name, where)
    except _Bad:
        return None


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return f"a {type(value).__name__}"


def _short(text: str | None, limit: int = 40, *, quote: bool = True) -> str:
    """A value from the body for a message, never more than `limit` characters of it."""
    if text is None:
        return "(missing)"
    text = text if len(text) <= limit else text[:limit] + "..."
    return repr(text) if quote else text


def _digest(item: object) -> str:
    """A stable id for an item: sha256 of its canonical JSON (sorted keys, ASCII escapes)."""
    try:
        text = json.dumps(item, sort_keys=True, separators=(",", ":"), default=repr)
    except (TypeError, ValueError, RecursionError):
        try:  # a mapping passed in directly may hold keys JSON can't sort
            text = repr(item)
        except RecursionError:
            text = type(item).__name__
    return hashlib.sha256(text.encode("utf-8", "backslashreplace")).hexdigest()[:16]
