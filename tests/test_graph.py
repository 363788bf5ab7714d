"""The Graph API client against a local fake Meta: classification, auth, URLs, transport faults."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bot.clock import VirtualClock
from bot.config import Account
from bot.events import Platform
from bot.graph import (
    ERROR_TABLE,
    ErrorClass,
    GraphClient,
    GraphError,
    SendResult,
    build_send_body,
    classify,
    classify_transport,
    redact_url,
    regain_access_after,
    text_message,
)

TOKEN = "EAAGsecretTOKEN123456"
SEND = build_send_body("comment_id", "c1", text_message("hi"), "RESPONSE")


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


@dataclass
class FakeGraph:
    """A tiny Meta: records each request and answers with `reply` (status, body, headers)."""

    base_url: str = ""
    seen: list[Seen] = field(default_factory=list)
    reply: tuple[int, Any, dict[str, str]] = (200, {"recipient_id": "u1", "message_id": "m1"}, {})

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        self.seen.append(
            Seen(
                request.method,
                request.path,
                dict(request.query),
                dict(request.headers),
                json.loads(raw) if raw else None,
            )
        )
        status, body, headers = self.reply
        if isinstance(body, dict | list):
            return web.json_response(body, status=status, headers=headers)
        return web.Response(status=status, text=body or "", headers=headers)


@pytest.fixture
async def fake(aiohttp_server: Any) -> FakeGraph:
    graph = FakeGraph()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", graph.handle)
    server = await aiohttp_server(app)
    graph.base_url = str(server.make_url("/"))
    return graph


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def client(session: aiohttp.ClientSession) -> GraphClient:
    return GraphClient(session, clock=VirtualClock(), timeout=2.0, connect_timeout=1.0)


def account(
    base_url: str,
    *,
    login: str = "instagram",
    platform: Platform = Platform.INSTAGRAM,
    api_version: str = "v21.0",
) -> Account:
    return Account(
        id="17841400000000001",
        platform=platform,
        token=TOKEN,
        login=login,
        graph_base_url=base_url,
        api_version=api_version,
    )


def envelope(code: int, subcode: int | None = None, message: str = "boom") -> dict[str, Any]:
    error: dict[str, Any] = {
        "message": message,
        "type": "OAuthException",
        "code": code,
        "fbtrace_id": "AbCdEf123",
    }
    if subcode is not None:
        error["error_subcode"] = subcode
    return {"error": error}


# --- POLICY.md §5, row by row ----------------------------------------------------------------

POLICY_ROWS = [
    # sent outside the allowed window
    (400, 10, 2018278, ErrorClass.WINDOW_CLOSED),
    (400, 10, 2534022, ErrorClass.WINDOW_CLOSED),
    # the person isn't receiving messages / isn't available
    (400, 10, 2018108, ErrorClass.UNREACHABLE),
    (400, 551, 1545041, ErrorClass.UNREACHABLE),
    (400, 200, 1545041, ErrorClass.UNREACHABLE),
    # account restricted from sending
    (400, 10, 1893063, ErrorClass.ACCOUNT_RESTRICTED),
    # token invalid, expired, de-authorised
    (400, 190, None, ErrorClass.TOKEN_INVALID),
    (400, 190, 458, ErrorClass.TOKEN_INVALID),
    (400, 190, 460, ErrorClass.TOKEN_INVALID),
    (400, 190, 463, ErrorClass.TOKEN_INVALID),
    (401, 190, 467, ErrorClass.TOKEN_INVALID),
    # permission missing
    (403, 200, None, ErrorClass.PERMISSION),
    (400, 230, None, ErrorClass.PERMISSION),  # "User consent is required"
    (403, 299, None, ErrorClass.PERMISSION),
    (403, 10, None, ErrorClass.PERMISSION),
    # invalid parameter
    (400, 100, None, ErrorClass.INVALID),
    (400, 100, 33, ErrorClass.INVALID),
    # throttled
    (400, 4, None, ErrorClass.BACKOFF),
    (400, 17, None, ErrorClass.BACKOFF),
    (400, 32, None, ErrorClass.BACKOFF),
    (400, 613, None, ErrorClass.BACKOFF),
    (429, 80002, None, ErrorClass.BACKOFF),
    (400, 80006, None, ErrorClass.BACKOFF),
    # transient
    (500, 1, None, ErrorClass.RETRY),
    (500, 2, None, ErrorClass.RETRY),
    (400, 2, None, ErrorClass.RETRY),
    (503, 1200, None, ErrorClass.RETRY),  # unknown code, but Meta said 5xx
    # from the Graph API's error guide, beyond POLICY.md
    (400, 3, None, ErrorClass.PERMISSION),
    (400, 102, None, ErrorClass.TOKEN_INVALID),
    (400, 341, None, ErrorClass.BACKOFF),
    (400, 368, None, ErrorClass.ACCOUNT_RESTRICTED),
    (400, 368, 1390008, ErrorClass.ACCOUNT_RESTRICTED),
    # codes the table doesn't know fall back to the status
    (400, 12345, None, ErrorClass.INVALID),
    (429, 12345, None, ErrorClass.BACKOFF),
]


@pytest.mark.parametrize(("status", "code", "subcode", "expected"), POLICY_ROWS)
async def test_each_policy_error_row_gets_its_class(
    fake: FakeGraph,
    client: GraphClient,
    status: int,
    code: int,
    subcode: int | None,
    expected: ErrorClass,
) -> None:
    fake.reply = (status, envelope(code, subcode), {})
    with pytest.raises(GraphError) as info:
        await client.send_message(account(fake.base_url), SEND)
    err = info.value
    assert err.error_class is expected
    assert (err.status, err.code, err.subcode) == (status, code, subcode)
    assert err.fbtrace_id == "AbCdEf123"
    assert err.error_type == "OAuthException"
    assert err.message == "boom"


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (500, "", ErrorClass.RETRY),
        (502, "<html>Bad Gateway</html>", ErrorClass.RETRY),
        (503, {"unexpected": True}, ErrorClass.RETRY),
        (429, "", ErrorClass.BACKOFF),
        (404, "not found", ErrorClass.INVALID),
        (400, {"error": "not an object"}, ErrorClass.INVALID),
    ],
)
async def test_answers_without_an_envelope_are_classified_by_status(
    fake: FakeGraph, client: GraphClient, status: int, body: Any, expected: ErrorClass
) -> None:
    fake.reply = (status, body, {})
    with pytest.raises(GraphError) as info:
        await client.send_message(account(fake.base_url), SEND)
    assert info.value.error_class is expected
    assert info.value.status == status
    assert info.value.code is None


def test_classify_returns_none_for_success_and_reads_string_codes() -> None:
    assert classify(200, {"recipient_id": "1", "message_id": "m"}, {}) is None
    err = classify(400, {"error": {"code": "10", "error_subcode": "2018278"}}, {})
    assert err is not None and err.error_class is ErrorClass.WINDOW_CLOSED


def test_a_200_carrying_an_error_envelope_is_still_an_error() -> None:
    err = classify(200, envelope(190, 460), {})
    assert err is not None and err.error_class is ErrorClass.TOKEN_INVALID


def test_exact_code_subcode_pairs_win_over_the_code_alone() -> None:
    assert ERROR_TABLE[(200, None)] is ErrorClass.PERMISSION
    err = classify(400, envelope(200, 1545041), {})
    assert err is not None and err.error_class is ErrorClass.UNREACHABLE


def test_every_class_is_exactly_one_of_retry_pause_or_drop() -> None:
    for cls in ErrorClass:
        assert [cls.should_retry, cls.pauses_account, cls.drops].count(True) == 1, cls
    assert ErrorClass.BACKOFF.should_retry and ErrorClass.RETRY.should_retry
    assert ErrorClass.TOKEN_INVALID.pauses_account and ErrorClass.ACCOUNT_RESTRICTED.pauses_account
    assert ErrorClass.UNKNOWN_OUTCOME.drops and not ErrorClass.UNKNOWN_OUTCOME.should_retry
    assert ErrorClass.WINDOW_CLOSED.alerts and not ErrorClass.INVALID.alerts


# --- throttling headers ----------------------------------------------------------------------


def buc(minutes: int) -> str:
    return json.dumps(
        {
            "17841400000000001": [
                {
                    "type": "instagram",
                    "call_count": 100,
                    "total_cputime": 40,
                    "total_time": 60,
                    "estimated_time_to_regain_access": minutes,
                }
            ]
        }
    )


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"X-Business-Use-Case-Usage": buc(7)}, timedelta(minutes=7)),
        ({"x-business-use-case-usage": buc(3)}, timedelta(minutes=3)),
        (
            {
                "X-Business-Use-Case-Usage": buc(2),
                "X-Page-Usage": json.dumps(
                    {"call_count": 100, "estimated_time_to_regain_access": 12}
                ),
            },
            timedelta(minutes=12),
        ),
        ({"X-App-Usage": json.dumps({"call_count": 99, "total_time": 5})}, None),
        ({"X-Business-Use-Case-Usage": buc(0)}, None),
        ({"X-Business-Use-Case-Usage": "{not json"}, None),
        ({"Retry-After": "30"}, timedelta(seconds=30)),
        ({}, None),
    ],
)
def test_regain_access_takes_the_longest_estimate_in_minutes(
    headers: dict[str, str], expected: timedelta | None
) -> None:
    assert regain_access_after(headers) == expected


async def test_throttled_send_carries_retry_after_from_usage_header(
    fake: FakeGraph, client: GraphClient
) -> None:
    fake.reply = (400, envelope(80002), {"X-Business-Use-Case-Usage": buc(9)})
    with pytest.raises(GraphError) as info:
        await client.send_message(account(fake.base_url), SEND)
    assert info.value.error_class is ErrorClass.BACKOFF
    assert info.value.retry_after == timedelta(minutes=9)
    assert "retry after 540 s" in str(info.value)


def test_errors_that_are_not_retried_carry_no_retry_after() -> None:
    err = classify(400, envelope(10, 2018278), {"X-Business-Use-Case-Usage": buc(9)})
    assert err is not None and err.retry_after is None


# --- success, auth and URLs ------------------------------------------------------------------


async def test_send_parses_recipient_and_message_ids(fake: FakeGraph, client: GraphClient) -> None:
    result = await client.send_message(account(fake.base_url), SEND)
    assert result == SendResult(recipient_id="u1", message_id="m1")
    assert fake.seen[0].body == {
        "recipient": {"comment_id": "c1"},
        "messaging_type": "RESPONSE",
        "message": {"text": "hi"},
    }


@pytest.mark.parametrize("body", ["not json at all", [1, 2], {}, {"ok": True}])
async def test_a_send_whose_success_body_is_unreadable_has_an_unknown_outcome(
    fake: FakeGraph, client: GraphClient, body: Any
) -> None:
    fake.reply = (200, body, {})
    with pytest.raises(GraphError) as info:
        await client.send_message(account(fake.base_url), SEND)
    assert info.value.error_class is ErrorClass.UNKNOWN_OUTCOME
    assert info.value.status == 200


async def test_instagram_login_sends_the_token_as_a_bearer_header(
    fake: FakeGraph, client: GraphClient
) -> None:
    await client.send_message(account(fake.base_url), SEND)
    seen = fake.seen[0]
    assert seen.headers["Authorization"] == f"Bearer {TOKEN}"
    assert "access_token" not in seen.query


async def test_facebook_login_sends_the_token_as_a_query_parameter(
    fake: FakeGraph, client: GraphClient
) -> None:
    acc = account(fake.base_url, login="facebook", platform=Platform.MESSENGER)
    await client.send_message(acc, SEND)
    seen = fake.seen[0]
    assert seen.query["access_token"] == TOKEN
    assert "Authorization" not in seen.headers


@pytest.mark.parametrize("suffix", ["", "/", "/graph", "/graph/"])
async def test_urls_use_the_configured_base_and_version(
    fake: FakeGraph, client: GraphClient, suffix: str
) -> None:
    base = fake.base_url.rstrip("/") + suffix
    await client.send_message(account(base, api_version="v99.0"), SEND)
    prefix = "/graph" if suffix.startswith("/graph") else ""
    assert fake.seen[0].method == "POST"
    assert fake.seen[0].path == f"{prefix}/v99.0/17841400000000001/messages"


@pytest.mark.parametrize(
    ("platform", "login", "edge"),
    [
        (Platform.INSTAGRAM, "instagram", "replies"),
        (Platform.INSTAGRAM, "facebook", "replies"),
        (Platform.MESSENGER, "facebook", "comments"),
    ],
)
async def test_public_reply_uses_the_platform_edge(
    fake: FakeGraph, client: GraphClient, platform: Platform, login: str, edge: str
) -> None:
    fake.reply = (200, {"id": "c-reply-1"}, {})
    acc = account(fake.base_url, platform=platform, login=login)
    assert await client.reply_to_comment(acc, "c1", "Sent you a DM!") == "c-reply-1"
    assert fake.seen[0].path == f"/v21.0/c1/{edge}"
    assert fake.seen[0].body == {"message": "Sent you a DM!"}


async def test_public_reply_without_an_id_has_an_unknown_outcome(
    fake: FakeGraph, client: GraphClient
) -> None:
    fake.reply = (200, {"success": True}, {})
    with pytest.raises(GraphError) as info:
        await client.reply_to_comment(account(fake.base_url), "c1", "hi")
    assert info.value.error_class is ErrorClass.UNKNOWN_OUTCOME


async def test_get_profile_asks_for_the_fields(fake: FakeGraph, client: GraphClient) -> None:
    fake.reply = (200, {"id": "u1", "username": "someone", "is_user_follow_business": True}, {})
    profile = await client.get_profile(account(fake.base_url), "u1", fields=("username",))
    assert profile["is_user_follow_business"] is True
    assert (fake.seen[0].method, fake.seen[0].path) == ("GET", "/v21.0/u1")
    assert fake.seen[0].query["fields"] == "username"


async def test_get_profile_defaults_to_the_platform_fields(
    fake: FakeGraph, client: GraphClient
) -> None:
    fake.reply = (200, {"first_name": "A"}, {})
    acc = account(fake.base_url, login="facebook", platform=Platform.MESSENGER)
    await client.get_profile(acc, "u1")
    assert fake.seen[0].query["fields"] == "first_name,last_name,profile_pic"


async def test_profile_without_consent_is_a_permission_error(
    fake: FakeGraph, client: GraphClient
) -> None:
    fake.reply = (400, envelope(230, message="User consent is required"), {})
    with pytest.raises(GraphError) as info:
        await client.get_profile(account(fake.base_url), "u1")
    assert info.value.error_class is ErrorClass.PERMISSION


async def test_subscribe_posts_the_fields(fake: FakeGraph, client: GraphClient) -> None:
    fake.reply = (200, {"success": True}, {})
    acc = account(fake.base_url)
    assert await client.subscribe(acc, ["comments", "messages"]) is True
    seen = fake.seen[0]
    assert (seen.method, seen.path) == ("POST", "/v21.0/17841400000000001/subscribed_apps")
    assert seen.query["subscribed_fields"] == "comments,messages"


async def test_subscribe_reports_false_when_meta_says_so(
    fake: FakeGraph, client: GraphClient
) -> None:
    fake.reply = (200, {"success": False}, {})
    assert await client.subscribe(account(fake.base_url), ["comments"]) is False


# --- body helpers ----------------------------------------------------------------------------


def test_text_message_builds_quick_replies() -> None:
    assert text_message("Pick", [("Yearly", "YEARLY")]) == {
        "text": "Pick",
        "quick_replies": [{"content_type": "text", "title": "Yearly", "payload": "YEARLY"}],
    }
    assert text_message("Plain") == {"text": "Plain"}


def test_build_send_body_with_a_tag_and_without_a_messaging_type() -> None:
    body = build_send_body("id", "u1", {"text": "x"}, "MESSAGE_TAG", tag="HUMAN_AGENT")
    assert body == {
        "recipient": {"id": "u1"},
        "messaging_type": "MESSAGE_TAG",
        "tag": "HUMAN_AGENT",
        "message": {"text": "x"},
    }
    assert "messaging_type" not in build_send_body("comment_id", "c1", {"text": "x"}, None)


@pytest.mark.parametrize(
    ("field_", "messaging_type", "tag"),
    [
        ("email", "RESPONSE", None),
        ("id", "PROMO", None),
        ("id", "MESSAGE_TAG", None),
        ("id", "RESPONSE", "HUMAN_AGENT"),
    ],
)
def test_build_send_body_rejects_wrong_combinations(
    field_: str, messaging_type: str, tag: str | None
) -> None:
    with pytest.raises(ValueError):
        build_send_body(field_, "u1", {"text": "x"}, messaging_type, tag)


# --- transport failures ----------------------------------------------------------------------

Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter, asyncio.Event], Awaitable[None]]


@contextlib.asynccontextmanager
async def raw_tcp(behaviour: Behaviour) -> AsyncIterator[str]:
    """A bare TCP server, for faults an HTTP framework would never produce on purpose."""
    release = asyncio.Event()
    tasks: set[asyncio.Task[Any]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await behaviour(reader, writer, release)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        release.set()
        server.close()
        await server.wait_closed()
        await asyncio.gather(*tasks, return_exceptions=True)


async def read_request(reader: asyncio.StreamReader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            await reader.readexactly(int(line.split(b":", 1)[1]))


async def hang(
    reader: asyncio.StreamReader, _: asyncio.StreamWriter, release: asyncio.Event
) -> None:
    await read_request(reader)
    await release.wait()


async def close_without_answer(
    reader: asyncio.StreamReader, _: asyncio.StreamWriter, __: asyncio.Event
) -> None:
    await read_request(reader)


async def close_mid_body(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: asyncio.Event
) -> None:
    await read_request(reader)
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        b'{"recipient_id": "u1", "mess'
    )
    await writer.drain()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_connection_refused_is_retried_since_nothing_was_sent(
    client: GraphClient,
) -> None:
    with pytest.raises(GraphError) as info:
        await client.send_message(account(f"http://127.0.0.1:{closed_port()}"), SEND)
    assert info.value.error_class is ErrorClass.RETRY
    assert info.value.status is None
    assert "before" in str(info.value)


async def test_a_send_that_times_out_awaiting_the_answer_has_an_unknown_outcome(
    session: aiohttp.ClientSession,
) -> None:
    client = GraphClient(session, clock=VirtualClock(), timeout=0.2, connect_timeout=0.2)
    async with raw_tcp(hang) as base:
        with pytest.raises(GraphError) as info:
            await client.send_message(account(base), SEND)
    assert info.value.error_class is ErrorClass.UNKNOWN_OUTCOME


async def test_a_read_that_times_out_can_be_retried(session: aiohttp.ClientSession) -> None:
    client = GraphClient(session, clock=VirtualClock(), timeout=0.2, connect_timeout=0.2)
    async with raw_tcp(hang) as base:
        with pytest.raises(GraphError) as info:
            await client.get_profile(account(base), "u1")
    assert info.value.error_class is ErrorClass.RETRY


@pytest.mark.parametrize("behaviour", [close_without_answer, close_mid_body])
async def test_a_send_whose_connection_drops_has_an_unknown_outcome(
    client: GraphClient, behaviour: Behaviour
) -> None:
    async with raw_tcp(behaviour) as base:
        with pytest.raises(GraphError) as info:
            await client.send_message(account(base), SEND)
    assert info.value.error_class is ErrorClass.UNKNOWN_OUTCOME
    assert "during" in str(info.value)


def test_transport_classification_by_exception() -> None:
    connect_timeout = aiohttp.ConnectionTimeoutError("Connection timeout to host")
    assert classify_transport(connect_timeout, idempotent=False) is ErrorClass.RETRY
    read_timeout = aiohttp.SocketTimeoutError("Timeout on reading data from socket")
    assert classify_transport(read_timeout, idempotent=False) is ErrorClass.UNKNOWN_OUTCOME
    assert classify_transport(TimeoutError(), idempotent=False) is ErrorClass.UNKNOWN_OUTCOME
    assert classify_transport(TimeoutError(), idempotent=True) is ErrorClass.RETRY
    disconnected = aiohttp.ServerDisconnectedError()
    assert classify_transport(disconnected, idempotent=False) is ErrorClass.UNKNOWN_OUTCOME
    bad_url = aiohttp.InvalidURL("nope")
    assert classify_transport(bad_url, idempotent=False) is ErrorClass.INVALID


# --- the token never leaks -------------------------------------------------------------------


def graph_log(caplog: pytest.LogCaptureFixture) -> str:
    """Only our records: the fake server's access log shows its query string, as Meta's would."""
    return "\n".join(
        f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records if r.name == "bot.graph"
    )


@pytest.mark.parametrize("login", ["instagram", "facebook"])
async def test_the_token_is_never_in_errors_or_logs(
    fake: FakeGraph, client: GraphClient, caplog: pytest.LogCaptureFixture, login: str
) -> None:
    caplog.set_level(logging.DEBUG, logger="bot.graph")
    acc = account(
        fake.base_url,
        login=login,
        platform=Platform.INSTAGRAM if login == "instagram" else Platform.MESSENGER,
    )
    await client.send_message(acc, SEND)
    fake.reply = (400, envelope(190, 460, message=f"Invalid OAuth access token {TOKEN}"), {})
    with pytest.raises(GraphError) as info:
        await client.send_message(acc, SEND)
    fake.reply = (200, f"echo access_token={TOKEN}", {})
    with pytest.raises(GraphError) as malformed:
        await client.send_message(acc, SEND)

    for err in (info.value, malformed.value):
        assert TOKEN not in str(err) and TOKEN not in repr(err)
    log = graph_log(caplog)
    assert "/messages" in log
    assert TOKEN not in log
    if login == "facebook":
        assert "access_token=REDACTED" in log


async def test_the_token_is_not_in_transport_failures(
    client: GraphClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bot.graph")
    acc = account(
        f"http://127.0.0.1:{closed_port()}", login="facebook", platform=Platform.MESSENGER
    )
    with pytest.raises(GraphError) as info:
        await client.send_message(acc, SEND)
    assert TOKEN not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert TOKEN not in graph_log(caplog)


def test_redact_url_hides_only_the_token() -> None:
    url = f"https://graph.facebook.com/v21.0/1/messages?access_token={TOKEN}&fields=a,b"
    redacted = redact_url(url)
    assert TOKEN not in redacted
    assert "access_token=REDACTED" in redacted and "fields=a,b" in redacted
    assert (
        redact_url("https://graph.instagram.com/v21.0/1") == "https://graph.instagram.com/v21.0/1"
    )
