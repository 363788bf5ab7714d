"""Graph API client and error classification (POLICY.md §3, §5).

Every failure leaves this module as one `GraphError` whose `error_class` tells the sender what
to do: retry, back off, drop, or pause the account. Meta's error JSON is read in exactly one
place (`classify`), transport failures in exactly one other (`classify_transport`), and the codes
live in one table (`ERROR_TABLE`) so that a new Meta code is a one-line data change.

The distinction that matters most is *did the request reach Meta?* A failure before the body was
written is safe to resend; one after it (a read timeout, a dropped connection) may have delivered
the message, and resending a private reply would break "once per comment" (POLICY.md §1). Those
become `UNKNOWN_OUTCOME` for writes; reads (GET) can always be resent.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Protocol

import aiohttp
from yarl import URL

from bot.clock import Clock
from bot.config import Account
from bot.errors import BotError
from bot.events import Platform

__all__ = [
    "ERROR_TABLE",
    "MESSAGING_TYPES",
    "RECIPIENT_FIELDS",
    "ErrorClass",
    "GraphClient",
    "GraphError",
    "HttpTransport",
    "SendResult",
    "build_send_body",
    "new_session",
    "classify",
    "classify_transport",
    "redact_url",
    "regain_access_after",
    "text_message",
    "Transport",
]

logger = logging.getLogger(__name__)


class ErrorClass(StrEnum):
    """What the sender does about a failed call; each class needs exactly one kind of handling."""

    RETRY = "retry"  # transient (codes 1, 2, HTTP 5xx, failed before sending): retry with jitter
    BACKOFF = "backoff"  # throttled: wait `retry_after` (or back off) and retry
    WINDOW_CLOSED = "window_closed"  # basis gone: our policy should have stopped it, a bug
    UNREACHABLE = "unreachable"  # the person isn't receiving messages: mark the contact
    ACCOUNT_RESTRICTED = "account_restricted"  # Meta restricted the account: pause, alert
    TOKEN_INVALID = "token_invalid"  # expired or revoked token: pause, alert, never reuse it
    PERMISSION = "permission"  # a permission or feature is missing: alert, don't retry
    INVALID = "invalid"  # Meta rejected the request itself: record, don't retry
    UNKNOWN_OUTCOME = "unknown_outcome"  # may have reached Meta: never resend a write blindly

    @property
    def should_retry(self) -> bool:
        """The same request may be sent again (after a delay)."""
        return self in _RETRYABLE

    @property
    def pauses_account(self) -> bool:
        """Every send of the account must stop until an operator acts; the message waits."""
        return self in _PAUSING

    @property
    def drops(self) -> bool:
        """The message leaves the outbox for good and is recorded in the send log."""
        return self in _DROPPING

    @property
    def alerts(self) -> bool:
        """An operator should hear of it (WINDOW_CLOSED counts as a policy bug)."""
        return self in _ALERTING


_RETRYABLE = frozenset({ErrorClass.RETRY, ErrorClass.BACKOFF})
_PAUSING = frozenset({ErrorClass.ACCOUNT_RESTRICTED, ErrorClass.TOKEN_INVALID})
_DROPPING = frozenset(ErrorClass) - _RETRYABLE - _PAUSING
_ALERTING = frozenset(
    {
        ErrorClass.WINDOW_CLOSED,
        ErrorClass.ACCOUNT_RESTRICTED,
        ErrorClass.TOKEN_INVALID,
        ErrorClass.PERMISSION,
    }
)

# (code, subcode) -> class; (code, None) matches any subcode of that code. Exact pairs win.
# POLICY.md §5 is the source; Meta adds codes yearly, so extend this table, not the code.
ERROR_TABLE: Mapping[tuple[int, int | None], ErrorClass] = MappingProxyType(
    {
        **{(code, None): ErrorClass.PERMISSION for code in range(200, 300)},
        (10, None): ErrorClass.PERMISSION,  # code 10 alone is "permission denied"
        (1, None): ErrorClass.RETRY,
        (2, None): ErrorClass.RETRY,
        (4, None): ErrorClass.BACKOFF,  # app
        (17, None): ErrorClass.BACKOFF,  # user
        (32, None): ErrorClass.BACKOFF,  # page
        (613, None): ErrorClass.BACKOFF,  # API-specific
        (80002, None): ErrorClass.BACKOFF,  # Instagram business use case
        (80006, None): ErrorClass.BACKOFF,  # Messenger business use case
        (10, 2018278): ErrorClass.WINDOW_CLOSED,
        (10, 2534022): ErrorClass.WINDOW_CLOSED,
        (10, 2018108): ErrorClass.UNREACHABLE,
        (551, None): ErrorClass.UNREACHABLE,
        (551, 1545041): ErrorClass.UNREACHABLE,
        (200, 1545041): ErrorClass.UNREACHABLE,
        (10, 1893063): ErrorClass.ACCOUNT_RESTRICTED,
        (190, None): ErrorClass.TOKEN_INVALID,  # 458, 460, 463 and the rest alike
        (100, None): ErrorClass.INVALID,
        # Not in POLICY.md; the Graph API's own error guide (developers.facebook.com/docs/
        # graph-api/guides/error-handling) lists them for every endpoint, the Send API too.
        (3, None): ErrorClass.PERMISSION,  # "API Method": a capability or permission missing
        (102, None): ErrorClass.TOKEN_INVALID,  # "API Session": the token expired or revoked
        (341, None): ErrorClass.BACKOFF,  # "Application limit reached"
        # "Temporarily blocked for policies violations": the guide says wait and retry, but
        # an automated sender that keeps sending while blocked only deepens the block, so
        # the account pauses and the operator hears of it, as for 10/1893063.
        (368, None): ErrorClass.ACCOUNT_RESTRICTED,
    }
)

# Meta's rate-limit headers; `estimated_time_to_regain_access` is in minutes.
USAGE_HEADERS = ("x-business-use-case-usage", "x-app-usage", "x-page-usage")


class GraphError(BotError):
    """A failed Graph API call, classified; the sender acts on `error_class`, not the text."""

    def __init__(
        self,
        message: str,
        *,
        error_class: ErrorClass,
        status: int | None = None,
        code: int | None = None,
        subcode: int | None = None,
        error_type: str | None = None,
        fbtrace_id: str | None = None,
        retry_after: timedelta | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.error_class = error_class
        self.status = status
        self.code = code
        self.subcode = subcode
        self.error_type = error_type
        self.fbtrace_id = fbtrace_id
        self.retry_after = retry_after

    def __str__(self) -> str:
        facts = [f"HTTP {self.status}" if self.status is not None else "no HTTP answer"]
        if self.code is not None:
            facts.append(
                f"code {self.code}" + (f"/{self.subcode}" if self.subcode is not None else "")
            )
        if self.fbtrace_id:
            facts.append(f"fbtrace_id {self.fbtrace_id}")
        if self.retry_after is not None:
            facts.append(f"retry after {self.retry_after.total_seconds():.0f} s")
        return f"{self.error_class}: {self.message} ({', '.join(facts)})"

    def __repr__(self) -> str:
        return (
            f"GraphError({self.error_class.value!r}, status={self.status}, code={self.code}, "
            f"subcode={self.subcode}, message={self.message!r})"
        )


@dataclass(frozen=True, slots=True)
class SendResult:
    recipient_id: str | None
    message_id: str | None


# --- classification -------------------------------------------------------------------------


def classify(
    status: int, body: Any, headers: Mapping[str, str], *, secrets: Iterable[str] = ()
) -> GraphError | None:
    """Turn one HTTP answer into a `GraphError`, or None when it is a success.

    The only reader of Meta's error envelope. `secrets` (the account's token) are scrubbed from
    the message in case Meta echoes a parameter back.
    """
    envelope = body.get("error") if isinstance(body, Mapping) else None
    if 200 <= status < 300 and not isinstance(envelope, Mapping):
        return None
    if isinstance(envelope, Mapping):
        code = _int_or_none(envelope.get("code"))
        subcode = _int_or_none(envelope.get("error_subcode"))
        message = str(envelope.get("message") or "no message")
        error_type = _str_or_none(envelope.get("type"))
        fbtrace_id = _str_or_none(envelope.get("fbtrace_id"))
    else:
        code = subcode = None
        error_type = fbtrace_id = None
        message = f"HTTP {status} without a Graph error body"
        if isinstance(body, str) and body.strip():
            message += f": {body.strip()[:200]}"
    error_class = _lookup(code, subcode) or _by_status(status)
    retry_after = regain_access_after(headers) if error_class.should_retry else None
    return GraphError(
        _scrub(message, secrets),
        error_class=error_class,
        status=status,
        code=code,
        subcode=subcode,
        error_type=error_type,
        fbtrace_id=fbtrace_id,
        retry_after=retry_after,
    )


def _lookup(code: int | None, subcode: int | None) -> ErrorClass | None:
    if code is None:
        return None
    return ERROR_TABLE.get((code, subcode)) or ERROR_TABLE.get((code, None))


def _by_status(status: int) -> ErrorClass:
    """For codes the table doesn't know: Meta answered, so 5xx is transient, 4xx is ours."""
    if status == 429:
        return ErrorClass.BACKOFF
    if status >= 500:
        return ErrorClass.RETRY
    return ErrorClass.INVALID


def regain_access_after(headers: Mapping[str, str]) -> timedelta | None:
    """The longest `estimated_time_to_regain_access` in Meta's usage headers, or None.

    The headers also come with successful answers, so the rate limiter may call this too.
    `Retry-After` (seconds) is honoured as well, for proxies and the local simulator.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    minutes = 0.0
    for name in USAGE_HEADERS:
        raw = lowered.get(name)
        if not raw:
            continue
        try:
            data = json.loads(raw)
        except ValueError:
            logger.debug("graph: ignoring the malformed %s header", name)
            continue
        minutes = max(minutes, _max_regain_minutes(data))
    seconds = minutes * 60
    retry_after = lowered.get("retry-after", "").strip()
    if retry_after.isdigit():
        seconds = max(seconds, float(retry_after))
    return timedelta(seconds=seconds) if seconds > 0 else None


def _max_regain_minutes(data: Any) -> float:
    """Search the header's JSON: BUC usage nests lists per business id, app/page usage is flat."""
    if isinstance(data, Mapping):
        found = 0.0
        value = data.get("estimated_time_to_regain_access")
        if isinstance(value, int | float) and not isinstance(value, bool):
            found = float(value)
        for item in data.values():
            if isinstance(item, Mapping | list):
                found = max(found, _max_regain_minutes(item))
        return found
    if isinstance(data, list):
        return max((_max_regain_minutes(item) for item in data), default=0.0)
    return 0.0


# aiohttp < 3.10 has no ConnectionTimeoutError; its connect timeouts then count as "unknown".
_CONNECT_TIMEOUT: tuple[type[BaseException], ...] = tuple(
    t for t in (getattr(aiohttp, "ConnectionTimeoutError", None),) if t is not None
)


def classify_transport(exc: BaseException, *, idempotent: bool) -> ErrorClass:
    """Where the request failed decides whether resending it could double a message.

    Before a connection existed (DNS, refused, connect timeout) nothing was sent: RETRY. After
    (read timeout, total timeout, dropped connection, cut-off body) Meta may have acted:
    UNKNOWN_OUTCOME, unless the request is a read, which can always be sent again.
    """
    if isinstance(exc, aiohttp.InvalidURL):
        return ErrorClass.INVALID
    if _before_sending(exc) or idempotent:
        return ErrorClass.RETRY
    return ErrorClass.UNKNOWN_OUTCOME


def _before_sending(exc: BaseException) -> bool:
    return isinstance(exc, (aiohttp.ClientConnectorError, aiohttp.InvalidURL, *_CONNECT_TIMEOUT))


# --- redaction ------------------------------------------------------------------------------

_TOKEN_PATTERNS = (
    re.compile(r"(access_token=)[^&\s\"']+", re.IGNORECASE),
    re.compile(r"(Bearer\s+)[^\s\"']+", re.IGNORECASE),
)


def redact_url(url: str | URL) -> str:
    """The URL with any `access_token` value replaced, fit for logs."""
    u = URL(url) if isinstance(url, str) else url
    if "access_token" not in u.query:
        return str(u)
    return str(u.update_query(access_token="REDACTED"))


def _scrub(text: str, secrets: Iterable[str] = ()) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "REDACTED")
    for pattern in _TOKEN_PATTERNS:
        text = pattern.sub(r"\1REDACTED", text)
    return text


# --- message bodies -------------------------------------------------------------------------

RECIPIENT_FIELDS = frozenset(
    {"id", "comment_id", "post_id", "one_time_notif_token", "notification_messages_token"}
)
MESSAGING_TYPES = frozenset({"RESPONSE", "UPDATE", "MESSAGE_TAG"})


def text_message(
    text: str, quick_replies: Sequence[tuple[str, str] | Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """A `message` object with text and optional quick replies given as (title, payload).

    Length and count limits are platform rules checked by the templates, not here.
    """
    message: dict[str, Any] = {"text": text}
    if quick_replies:
        message["quick_replies"] = [
            dict(qr)
            if isinstance(qr, Mapping)
            else {"content_type": "text", "title": qr[0], "payload": qr[1]}
            for qr in quick_replies
        ]
    return message


def build_send_body(
    recipient_field: str,
    recipient_value: str,
    message: Mapping[str, Any],
    messaging_type: str | None,
    tag: str | None = None,
) -> dict[str, Any]:
    """The Send API body (POLICY.md §3); a wrong combination is a bug, so it raises ValueError.

    `messaging_type=None` leaves the field out, as Meta's private-reply examples do.
    """
    if recipient_field not in RECIPIENT_FIELDS:
        raise ValueError(f"unknown recipient field {recipient_field!r}")
    if messaging_type is not None and messaging_type not in MESSAGING_TYPES:
        raise ValueError(f"unknown messaging_type {messaging_type!r}")
    if (messaging_type == "MESSAGE_TAG") != (tag is not None):
        raise ValueError("a tag goes with messaging_type MESSAGE_TAG, and only with it")
    body: dict[str, Any] = {"recipient": {recipient_field: recipient_value}}
    if messaging_type is not None:
        body["messaging_type"] = messaging_type
    if tag is not None:
        body["tag"] = tag
    body["message"] = dict(message)
    return body


# --- the client -----------------------------------------------------------------------------

PROFILE_FIELDS: Mapping[Platform, tuple[str, ...]] = MappingProxyType(
    {
        Platform.INSTAGRAM: (
            "name",
            "username",
            "profile_pic",
            "follower_count",
            "is_user_follow_business",
            "is_business_follow_user",
        ),
        Platform.MESSENGER: ("first_name", "last_name", "profile_pic"),
    }
)


class Transport(Protocol):
    """Carries one request and brings back Meta's status, headers and raw body.

    The daemon's is HTTP (`HttpTransport`). `bot simulate` hands requests to the Graph API
    simulator in the same process (bot/simulator/local.py): the same bytes in and out, and a
    dropped connection or timeout raised as aiohttp would, without the loopback HTTP that was
    a fifth of a simulated month. Failures are aiohttp's exceptions or TimeoutError.
    """

    async def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None,
        body: bytes | None,
        headers: Mapping[str, str],
        client_timeout: aiohttp.ClientTimeout,
    ) -> tuple[int, Mapping[str, str], bytes]: ...


def new_session() -> aiohttp.ClientSession:
    """The session the daemon calls the Graph API with: a new connection for every request.

    A request written to a pooled keep-alive connection the server has just closed fails
    with no answer, and for a send that is an unknown outcome: counted as sent (at most
    once), so a private reply that never left was lost. On a fresh connection, a failure
    before the answer is a real ambiguity, and rare; a send is a few per second at most, so a
    handshake each is cheap.
    """
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))


class HttpTransport:
    """Requests over a shared aiohttp session, owned by the caller."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None,
        body: bytes | None,
        headers: Mapping[str, str],
        client_timeout: aiohttp.ClientTimeout,
    ) -> tuple[int, Mapping[str, str], bytes]:
        async with self._session.request(
            method, url, params=params, data=body, headers=headers, timeout=client_timeout
        ) as resp:
            raw = await resp.read()
            return resp.status, resp.headers, raw


class GraphClient:
    """Calls the Graph API for many accounts over one transport (an aiohttp session: HTTP).

    Instagram Login tokens go in `Authorization: Bearer`; Facebook Login (Page) tokens in the
    `access_token` query parameter, as Meta's Messenger examples do (POLICY.md §3).
    """

    def __init__(
        self,
        transport: aiohttp.ClientSession | Transport,
        *,
        clock: Clock,
        timeout: float = 10.0,
        connect_timeout: float = 3.0,
    ) -> None:
        if isinstance(transport, aiohttp.ClientSession):
            transport = HttpTransport(transport)
        self._transport = transport
        self._clock = clock
        # connect < total, so a total timeout only fires once the connection exists: the
        # request was (being) sent, which is what classify_transport assumes.
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=min(connect_timeout, timeout))

    async def send_message(self, account: Account, body: Mapping[str, Any]) -> SendResult:
        """POST to the Send API; `{"recipient_id", "message_id"}` on success."""
        status, data = await self._call(account, "POST", account.messages_url(), json_body=body)
        if isinstance(data, Mapping):
            recipient_id = _str_or_none(data.get("recipient_id"))
            message_id = _str_or_none(data.get("message_id"))
            if recipient_id or message_id:
                return SendResult(recipient_id=recipient_id, message_id=message_id)
        raise self._malformed(account, status, data, "a send result", idempotent=False)

    async def reply_to_comment(self, account: Account, comment_id: str, text: str) -> str:
        """Post a public reply under a comment; returns the new comment's id."""
        edge = "replies" if account.platform is Platform.INSTAGRAM else "comments"
        url = _url(account, comment_id, edge)
        status, data = await self._call(account, "POST", url, json_body={"message": text})
        if isinstance(data, Mapping) and (comment := _str_or_none(data.get("id"))):
            return comment
        raise self._malformed(account, status, data, "a comment id", idempotent=False)

    async def get_profile(
        self, account: Account, user_id: str, fields: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """A contact's profile; needs the user's consent (a message or tap), POLICY.md §3."""
        wanted = PROFILE_FIELDS[account.platform] if fields is None else fields
        params = {"fields": ",".join(wanted)}
        status, data = await self._call(
            account, "GET", _url(account, user_id), params=params, idempotent=True
        )
        if isinstance(data, Mapping):
            return dict(data)
        raise self._malformed(account, status, data, "a profile", idempotent=True)

    async def subscribe(self, account: Account, fields: Sequence[str]) -> bool:
        """Subscribe the app to the account's webhooks; subscribing twice is harmless."""
        params = {"subscribed_fields": ",".join(fields)}
        url = _url(account, account.id, "subscribed_apps")
        status, data = await self._call(account, "POST", url, params=params, idempotent=True)
        if isinstance(data, Mapping):
            return data.get("success") is True
        raise self._malformed(account, status, data, "a success flag", idempotent=True)

    async def _call(
        self,
        account: Account,
        method: str,
        url: str,
        *,
        json_body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        idempotent: bool = False,
    ) -> tuple[int, Any]:
        """One request; the status and decoded JSON of a 2xx answer, else a GraphError."""
        query = dict(params or {})
        headers: dict[str, str] = {}
        body: bytes | None = None
        if json_body is not None:
            # What aiohttp's `json=` sends, encoded here so every transport carries the same.
            body = json.dumps(json_body).encode()
            headers["Content-Type"] = "application/json"
        if account.login == "facebook":
            query["access_token"] = account.token
        else:
            headers["Authorization"] = f"Bearer {account.token}"
        log_url = redact_url(URL(url).update_query(query) if query else URL(url))
        started = self._clock.monotonic()
        try:
            status, resp_headers, raw = await self._transport.request(
                method,
                url,
                params=query or None,
                body=body,
                headers=headers,
                client_timeout=self._timeout,
            )
        except (TimeoutError, aiohttp.ClientError) as exc:
            error_class = classify_transport(exc, idempotent=idempotent)
            sent = "before" if _before_sending(exc) else "during"
            detail = _scrub(f"{type(exc).__name__}: {exc}".rstrip(": "), (account.token,))
            failure = GraphError(
                f"{method} failed {sent} the request: {detail}", error_class=error_class
            )
            logger.info("graph account %s: %s %s failed: %s", account.id, method, log_url, failure)
            # `from None`: an aiohttp exception may carry the request URL, token included.
            raise failure from None
        elapsed_ms = (self._clock.monotonic() - started) * 1000
        body = _decode(raw)
        error = classify(status, body, resp_headers, secrets=(account.token,))
        if error is not None:
            logger.info("graph account %s: %s %s -> %s", account.id, method, log_url, error)
            raise error
        logger.debug(
            "graph account %s: %s %s -> %d in %.0f ms",
            account.id,
            method,
            log_url,
            status,
            elapsed_ms,
        )
        return status, body

    def _malformed(
        self, account: Account, status: int, data: Any, wanted: str, *, idempotent: bool
    ) -> GraphError:
        """A 2xx we can't read: for a write, Meta probably acted, so never resend it."""
        snippet = _scrub(repr(data)[:200], (account.token,))
        error = GraphError(
            f"Meta answered with success but not {wanted}: {snippet}",
            error_class=ErrorClass.RETRY if idempotent else ErrorClass.UNKNOWN_OUTCOME,
            status=status,
        )
        logger.warning("graph account %s: %s", account.id, error)
        return error


def _url(account: Account, *parts: str) -> str:
    return "/".join([account.graph_base_url.rstrip("/"), account.api_version, *parts])


def _decode(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw[:500].decode("utf-8", "replace")


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _str_or_none(value: Any) -> str | None:
    if value is None or isinstance(value, bool | Mapping | list):
        return None
    return str(value) or None
