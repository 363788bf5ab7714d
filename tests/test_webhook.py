"""Webhooks in without loss: signed deliveries into the running app over loopback."""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import given
from hypothesis import strategies as st

from bot.app import create_app, prune_inbox
from bot.clock import VirtualClock, from_ms
from bot.errors import ConfigError
from bot.policy import ConversationState
from bot.simulator import Simulator
from bot.store.conversations import load_state
from bot.store.migrations import MIGRATIONS
from bot.webhook import Signer, sign, signature_valid
from tests.conftest import (
    APP_SECRET,
    FB_PAGE,
    IG_ACCOUNT,
    VERIFY_TOKEN,
    body_of,
    ig_comment,
    ig_dm,
    make_config,
    post_signed,
    query,
    runtime,
)


async def rows(client: TestClient[Any, Any], sql: str, *args: Any) -> list[tuple[Any, ...]]:
    return await query(runtime(client), sql, *args)


async def drain(client: TestClient[Any, Any]) -> int:
    worker = runtime(client).worker
    assert worker is not None
    return await worker.drain()


async def state_of(client: TestClient[Any, Any], user: str) -> ConversationState:
    db = runtime(client).db
    assert db is not None
    return await load_state(
        db.reader, IG_ACCOUNT, user, runtime(client).config.accounts[0].platform
    )


# --- the handshake -------------------------------------------------------------------------


async def test_handshake_answers_the_challenge_when_the_verify_token_matches(
    client: TestClient[Any, Any],
) -> None:
    resp = await client.get(
        "/webhook",
        params={"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "42x"},
    )
    assert resp.status == 200
    assert await resp.text() == "42x"


async def test_handshake_is_refused_with_a_wrong_token_or_mode(
    client: TestClient[Any, Any],
) -> None:
    for params in (
        {"hub.mode": "subscribe", "hub.verify_token": "nope", "hub.challenge": "1"},
        {"hub.mode": "unsubscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1"},
        {},
    ):
        resp = await client.get("/webhook", params=params)
        assert resp.status == 403


# --- signatures and bad input --------------------------------------------------------------


async def test_missing_or_wrong_signature_is_refused_and_nothing_is_stored(
    client: TestClient[Any, Any],
) -> None:
    body = body_of(ig_comment("c1", "PRICING"))
    for headers in (
        {},
        {"X-Hub-Signature-256": "sha256=" + "0" * 64},
        {"X-Hub-Signature-256": sign(b"another-secret", body)},
        {"X-Hub-Signature-256": sign(APP_SECRET.encode(), body)[7:]},  # no sha256= prefix
    ):
        resp = await client.post("/webhook", data=body, headers=headers)
        assert resp.status == 403
    assert await rows(client, "SELECT count(*) FROM inbox") == [(0,)]
    assert runtime(client).metrics.get("webhook_rejected", reason="bad_signature") == 4


@given(secret=st.binary(max_size=200).filter(bytes.strip), body=st.binary(max_size=3000))
def test_the_signer_computes_exactly_hmac_sha256(secret: bytes, body: bytes) -> None:
    # Keys longer than SHA-256's 64-byte block are hashed first, as RFC 2104 says.
    expected = hmac.digest(secret, body, "sha256")
    assert Signer(secret).digest(body) == expected
    assert signature_valid(Signer(secret), body, "sha256=" + expected.hex())
    assert not signature_valid(Signer(secret + b"x"), body, "sha256=" + expected.hex())
    assert "sha256=" + expected.hex() == sign(secret, body)


def test_the_signer_never_shows_its_key_state() -> None:
    assert repr(Signer(APP_SECRET.encode())) == "Signer()"


@pytest.mark.parametrize("secret", [b"", b" ", b"\n", b" \t\r\n"])
def test_no_signer_exists_for_an_empty_key_so_no_forgery_signed_with_one_passes(
    tmp_path: Path, secret: bytes
) -> None:
    """Anyone can sign with an empty key: the bot never checks a delivery against one, even
    when the settings were built by hand rather than by `load_config`."""
    with pytest.raises(ConfigError, match="the app secret is empty"):
        Signer(secret)
    config = dataclasses.replace(make_config(tmp_path), app_secret=secret.decode())
    with pytest.raises(ConfigError, match="the app secret is empty"):
        create_app(config)


async def test_signature_is_checked_over_the_raw_bytes_not_reserialised_json(
    client: TestClient[Any, Any],
) -> None:
    # Meta signs the escaped-unicode form; a bot that re-serialises would compute another HMAC.
    raw = json.dumps(ig_comment("c-uni", "précio 💸"), ensure_ascii=True).replace("/", "\\/")
    assert await post_signed(client, raw.encode()) == 200
    await drain(client)
    assert await rows(client, "SELECT text FROM comments") == [("précio 💸",)]


async def test_signed_body_that_is_not_json_is_kept_answered_200_and_shown_to_the_operator(
    client: TestClient[Any, Any],
) -> None:
    assert await post_signed(client, b"{not json") == 200
    assert await post_signed(client, b"[1, 2, 3]") == 200
    await drain(client)
    bad = await rows(client, "SELECT state, error FROM inbox ORDER BY id")
    assert [b[0] for b in bad] == ["bad", "bad"]
    assert all(b[1] for b in bad)
    health = await (await client.get("/healthz")).json()
    assert health["inbox"]["bad"] == 2
    assert "bot_deliveries_bad_total 2" in await (await client.get("/metrics")).text()


async def test_healthz_reports_the_backlog_from_indexes_without_reading_the_whole_inbox(
    client: TestClient[Any, Any], clock: VirtualClock
) -> None:
    assert await post_signed(client, b"{not json") == 200
    await drain(client)
    rt = runtime(client)
    assert rt.inbox_db is not None
    statements: list[str] = []
    # The thread's connection, not the loop's: a scan there would hold up every ack.
    await rt.inbox_db.background.set_trace_callback(statements.append)
    for i in range(3):
        assert await post_signed(client, ig_comment(f"c{i}", "PRICING", user=f"u{i}")) == 200
    clock.advance(timedelta(seconds=90))
    health = await (await client.get("/healthz")).json()
    assert health["inbox"] == {"new": 3, "bad": 1, "oldest_new_age_s": 90.0}
    await rt.inbox_db.background.set_trace_callback(None)
    assert statements, "the health check's counts ran on the loop's connection"
    for sql in statements:
        async with rt.inbox_db.background.execute(f"EXPLAIN QUERY PLAN {sql}") as cur:
            plan = [str(r[3]) for r in await cur.fetchall()]
        assert not [step for step in plan if step.startswith("SCAN inbox") and "INDEX" not in step]
    await drain(client)
    health = await (await client.get("/healthz")).json()
    assert health["inbox"] == {"new": 0, "bad": 1, "oldest_new_age_s": None}


async def test_processed_deliveries_leave_the_inbox_after_keep_days_and_replays_stay_duplicates(
    client: TestClient[Any, Any], clock: VirtualClock
) -> None:
    old = [ig_comment(f"old{i}", "PRICING", user=f"u{i}") for i in range(3)]
    for delivery in old:
        assert await post_signed(client, delivery) == 200
    assert await post_signed(client, b"{not json") == 200
    await drain(client)
    clock.advance(timedelta(days=29))
    assert await post_signed(client, ig_comment("recent", "PRICING")) == 200
    await drain(client)
    clock.advance(timedelta(days=2))  # the first four are 31 days old now, "recent" 2
    assert await post_signed(client, ig_comment("waiting", "PRICING")) == 200
    rt = runtime(client)
    assert rt.config.database.inbox_keep_days == 30  # the default
    assert await prune_inbox(rt) == 3
    assert await rows(client, "SELECT state FROM inbox ORDER BY id") == [
        ("bad",),  # kept for the operator
        ("done",),  # "recent"
        ("new",),  # "waiting", not processed yet
    ]
    assert rt.metrics.get("inbox_pruned") == 3
    assert await prune_inbox(rt) == 0
    # Meta retrying an old delivery now: the events table still knows its comment.
    assert await post_signed(client, old[0]) == 200
    await drain(client)
    assert await rows(client, "SELECT count(*) FROM comments") == [(5,)]
    assert rt.metrics.get("events_duplicate") == 1


async def test_unknown_object_and_field_are_stored_and_ignored_without_a_crash(
    client: TestClient[Any, Any],
) -> None:
    unknown_object = {"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": []}]}
    unknown_field = {
        "object": "instagram",
        "entry": [
            {
                "id": IG_ACCOUNT,
                "time": 1772449200,
                "changes": [{"field": "story_insights", "value": {"reach": 3}}],
            }
        ],
    }
    assert await post_signed(client, unknown_object) == 200
    assert await post_signed(client, unknown_field) == 200
    assert await post_signed(client, ig_comment("c-after", "hello")) == 200
    await drain(client)
    assert await rows(client, "SELECT state FROM inbox ORDER BY id") == [
        ("done",),
        ("done",),
        ("done",),
    ]
    assert await rows(client, "SELECT comment_id FROM comments") == [("c-after",)]


async def test_body_over_the_limit_is_refused_with_413(
    aiohttp_client: Any, tmp_path: Any, clock: VirtualClock
) -> None:
    from bot.app import create_app
    from tests.conftest import make_config

    app = create_app(make_config(tmp_path, max_body_bytes=2048), clock=clock, start_workers=False)
    client = await aiohttp_client(app)
    big = json.dumps(ig_comment("c1", "x" * 4000)).encode()
    resp = await client.post(
        "/webhook", data=big, headers={"X-Hub-Signature-256": sign(APP_SECRET.encode(), big)}
    )
    assert resp.status == 413
    assert await rows(client, "SELECT count(*) FROM inbox") == [(0,)]


async def test_store_that_cannot_write_answers_503_so_meta_retries(
    client: TestClient[Any, Any],
) -> None:
    db = runtime(client).inbox_db
    assert db is not None
    async with db.transaction() as conn:
        await conn.execute(
            "CREATE TRIGGER full BEFORE INSERT ON inbox"
            " BEGIN SELECT RAISE(ABORT, 'disk full'); END"
        )
    assert await post_signed(client, ig_comment("c1", "PRICING")) == 503
    async with db.transaction() as conn:
        await conn.execute("DROP TRIGGER full")
    # Meta's retry then lands, and exactly one copy is stored.
    assert await post_signed(client, ig_comment("c1", "PRICING")) == 200
    assert await rows(client, "SELECT count(*) FROM inbox") == [(1,)]


# --- exactly once, in order ----------------------------------------------------------------


async def test_retried_and_duplicated_deliveries_give_each_event_once(
    client: TestClient[Any, Any],
) -> None:
    delivery = ig_comment("c1", "PRICING")
    for _ in range(3):
        assert await post_signed(client, delivery) == 200
    # An ads duplicate: the same comment in another delivery with another entry time.
    assert await post_signed(client, ig_comment("c1", "PRICING", time_s=1772449260)) == 200
    await drain(client)
    assert await rows(client, "SELECT count(*) FROM events") == [(1,)]
    assert await rows(client, "SELECT comment_id FROM comments") == [("c1",)]
    assert runtime(client).metrics.get("events_duplicate") == 3


async def test_a_batch_of_1000_changes_is_stored_and_processed_whole(
    client: TestClient[Any, Any],
) -> None:
    changes = [
        {
            "field": "comments",
            "value": {
                "id": f"c{i}",
                "text": "PRICING",
                "from": {"id": f"u{i % 50}"},
                "media": {"id": "m"},
            },
        }
        for i in range(1000)
    ]
    delivery = {
        "object": "instagram",
        "entry": [{"id": IG_ACCOUNT, "time": 1772449200, "changes": changes}],
    }
    assert await post_signed(client, delivery) == 200
    await drain(client)
    assert await rows(client, "SELECT count(*) FROM comments") == [(1000,)]
    assert await rows(client, "SELECT count(*) FROM contacts") == [(50,)]
    assert await rows(client, "SELECT events, state FROM inbox") == [(1000, "done")]


async def test_an_ack_never_waits_for_the_engine(client: TestClient[Any, Any]) -> None:
    # The inbox is its own file: a webhook is stored and answered while the main file's
    # only write lock is held (as by a long batch of flow starts).
    db = runtime(client).db
    assert db is not None
    async with db.transaction():
        status = await asyncio.wait_for(post_signed(client, ig_comment("c1", "PRICING")), 5)
    assert status == 200
    assert await rows(client, "SELECT state FROM inbox") == [("new",)]


async def test_deliveries_read_again_after_a_crash_change_nothing(bot: Any) -> None:
    # A crash after the worker's commit but before it marked the deliveries in the inbox
    # file: they are read again, and every event in them is a duplicate.
    assert await post_signed(bot.client, ig_comment("c1", "PRICING")) == 200
    assert await post_signed(bot.client, ig_dm("m1", "menu")) == 200
    await bot.rt.worker.drain()
    before = await bot.rows("SELECT kind, state, body FROM outbox ORDER BY id")
    assert {kind for kind, _, _ in before} >= {"private_reply", "message"}
    async with bot.rt.inbox_db.transaction() as conn:
        await conn.execute("UPDATE inbox SET state = 'new', events = NULL")
    assert await bot.rt.worker.drain() == 2
    assert await bot.rows("SELECT kind, state, body FROM outbox ORDER BY id") == before
    assert await bot.rows("SELECT count(*) FROM events") == [(2,)]
    assert await bot.rows("SELECT state, events FROM inbox") == [("done", 0), ("done", 0)]
    assert bot.rt.metrics.get("events_duplicate") == 2


async def test_out_of_order_deliveries_never_rewind_the_window(
    client: TestClient[Any, Any], clock: VirtualClock
) -> None:
    later, earlier = 1772449200000 + 3_600_000, 1772449200000
    clock.advance(timedelta(hours=2))  # both in the past when they arrive
    assert await post_signed(client, ig_dm("m2", "second", ts_ms=later)) == 200
    await drain(client)
    assert await post_signed(client, ig_dm("m1", "first", ts_ms=earlier)) == 200
    await drain(client)
    state = await state_of(client, "user-1")
    assert state.last_user_message_at == from_ms(later)


async def test_echoes_never_extend_the_window(client: TestClient[Any, Any]) -> None:
    t0 = 1772449200000
    assert await post_signed(client, ig_dm("m1", "hi", ts_ms=t0)) == 200
    assert (
        await post_signed(client, ig_dm("m2", "our answer", ts_ms=t0 + 60_000, echo=True)) == 200
    )
    await drain(client)
    state = await state_of(client, "user-1")
    assert state.last_user_message_at == from_ms(t0)


async def test_the_accounts_own_comments_are_ignored(client: TestClient[Any, Any]) -> None:
    assert await post_signed(client, ig_comment("c-own", "thanks!", user=IG_ACCOUNT)) == 200
    await drain(client)
    assert await rows(client, "SELECT count(*) FROM comments") == [(0,)]
    assert await rows(client, "SELECT count(*) FROM contacts") == [(0,)]


async def test_a_comment_without_its_author_is_kept_for_its_private_reply(
    client: TestClient[Any, Any],
) -> None:
    assert await post_signed(client, ig_comment("c-anon", "PRICING", user=None)) == 200
    await drain(client)
    assert await rows(client, "SELECT comment_id, user_id FROM comments") == [("c-anon", None)]


async def test_events_for_an_account_the_bot_does_not_serve_are_ignored(
    client: TestClient[Any, Any],
) -> None:
    assert await post_signed(client, ig_comment("c9", "PRICING", account="999")) == 200
    await drain(client)
    assert await rows(client, "SELECT count(*) FROM comments") == [(0,)]
    assert runtime(client).metrics.get("events_ignored", reason="unknown_account") == 1


# --- every event shape, as Meta's side plays it --------------------------------------------


async def test_every_event_shape_from_metas_side_is_stored_and_understood(
    client: TestClient[Any, Any], clock: VirtualClock
) -> None:
    cfg = runtime(client).config
    sim = Simulator(
        clock, list(cfg.accounts), APP_SECRET, str(client.make_url("/webhook")), echoes=False
    )
    async with sim:
        p = sim.player
        delivered = [
            await p.comment(IG_ACCOUNT, "alice", "reel1", "PRICING"),
            await p.live_comment(IG_ACCOUNT, "bob", "live1", "LINK"),
            await p.comment(FB_PAGE, "carol", "post1", "price?"),
            await p.dm(IG_ACCOUNT, "alice", "is there a yearly plan?"),
            await p.story_reply(IG_ACCOUNT, "dave", "story1", "love it"),
            await p.story_mention(IG_ACCOUNT, "erin", "https://cdn.example/s.jpg"),
            await p.quick_reply(IG_ACCOUNT, "alice", "YEARLY", "Yearly"),
            await p.postback(FB_PAGE, "carol", "GET_STARTED", "Get started"),
            await p.referral(FB_PAGE, "frank", "summer-sale"),
            await p.optin(FB_PAGE, "carol", "one_time_notif_req", "restock"),
            await p.optin(IG_ACCOUNT, "alice", "notification_messages", "flash", "WEEKLY"),
            await p.stop(IG_ACCOUNT, "alice", "flash"),
        ]
        clock.advance(timedelta(minutes=1))
        delivered += [
            await p.resume(IG_ACCOUNT, "alice", "flash"),
            await p.read(IG_ACCOUNT, "alice", mid="m_ours_1"),
            await p.react(IG_ACCOUNT, "alice", mid="m_ours_1"),
        ]
    assert [d.status for d in delivered] == [200] * len(delivered)
    await drain(client)
    kinds = await rows(client, "SELECT kind, count(*) FROM events GROUP BY kind ORDER BY kind")
    assert dict(kinds) == {
        "Comment": 3,
        "Message": 4,
        "OptIn": 4,
        "Postback": 1,
        "Reaction": 1,
        "Read": 1,
        "Referral": 1,
    }
    assert await rows(client, "SELECT state FROM inbox WHERE state != 'done'") == []
    alice = await state_of(client, sim.user_id("alice"))
    assert [t.topic for t in alice.tokens] == ["flash"]
    assert not alice.tokens[0].stopped  # the RESUME came a minute after the STOP
    dave = await state_of(client, sim.user_id("dave"))
    assert dave.last_user_message_at is not None  # a story reply opens the window


# --- the store -----------------------------------------------------------------------------


async def test_migrations_build_the_schema_from_an_empty_file_and_reopen_cleanly(
    tmp_path: Any,
) -> None:
    from bot.store.db import Database

    path = tmp_path / "fresh.sqlite3"
    db = await Database.open(path)
    assert await db.schema_version() == len(MIGRATIONS)
    async with db.reader.execute("PRAGMA journal_mode") as cur:
        assert (await cur.fetchone())[0] == "wal"  # type: ignore[index]
    await db.close()
    db = await Database.open(path, "FULL")
    assert await db.schema_version() == len(MIGRATIONS)
    await db.close()


async def test_deliveries_survive_a_restart_before_they_are_processed(
    aiohttp_client: Any, tmp_path: Any, clock: VirtualClock
) -> None:
    from bot.app import create_app
    from tests.conftest import make_config

    cfg = make_config(tmp_path)
    first = await aiohttp_client(create_app(cfg, clock=clock, start_workers=False))
    assert await post_signed(first, ig_comment("c1", "PRICING")) == 200
    await first.close()
    clock.advance(timedelta(minutes=5))
    second = await aiohttp_client(create_app(cfg, clock=clock, start_workers=False))
    assert await drain(second) == 1
    assert await rows(second, "SELECT comment_id FROM comments") == [("c1",)]


async def test_deliveries_an_earlier_version_kept_in_the_main_file_are_moved_and_processed(
    aiohttp_client: Any, tmp_path: Any, clock: VirtualClock
) -> None:
    import json as _json

    from bot.app import create_app
    from bot.store.db import Database
    from tests.conftest import make_config

    config = make_config(tmp_path)
    old = await Database.open(config.database.path)
    async with old.transaction() as conn:
        await conn.executemany(
            "INSERT INTO inbox (received_at, body, state) VALUES (?, ?, ?)",
            [
                (1772449200000, _json.dumps(ig_comment("c0", "hi")).encode(), "done"),
                (1772449201000, _json.dumps(ig_comment("c1", "PRICING")).encode(), "new"),
            ],
        )
    await old.close()
    client = await aiohttp_client(create_app(config, clock=clock, start_workers=False))
    assert await rows(client, "SELECT state FROM inbox ORDER BY id") == [("done",), ("new",)]
    assert await drain(client) == 1
    assert await rows(client, "SELECT comment_id FROM comments") == [("c1",)]
    main = runtime(client).db
    assert main is not None
    async with main.reader.execute("SELECT count(*) FROM inbox") as cur:
        assert await cur.fetchone() == (0,)
