"""Schema migrations, applied in order; `PRAGMA user_version` records how far a file is.

Never edit a migration that has shipped: append a new one. Times are integer milliseconds
since the epoch, UTC.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RewriteCheck:
    """A CHECK constraint of `table` replaced by one that accepts exactly the same values.

    Done in place, by SQLite's own procedure for constraint changes that leave the stored
    rows as they are (sqlite.org/lang_altertable.html, "Making Other Kinds Of Table Schema
    Changes": `writable_schema`, then a new `schema_version`), so it costs the same on a file
    of a million rows as on an empty one; rebuilding the table would copy every row.
    """

    table: str
    old: str
    new: str


Migration = str | RewriteCheck

# `state IN ('a', 'b', ...)` in a CHECK makes SQLite build a temporary b-tree of the list for
# every row it writes (OpenEphemeral in EXPLAIN): 1.4 of 3.3 us per inbox insert here. The
# same test written with OR compares in place.
INBOX_STATE_CHECK = RewriteCheck(
    "inbox",
    "CHECK (state IN ('new', 'done', 'bad'))",
    "CHECK (state = 'new' OR state = 'done' OR state = 'bad')",
)

MIGRATIONS: list[Migration] = [
    # 1: the inbox, event de-duplication, contacts and conversation state, the outbox, send log.
    """
    CREATE TABLE inbox (
        id INTEGER PRIMARY KEY,
        received_at INTEGER NOT NULL,
        body BLOB NOT NULL,
        state TEXT NOT NULL DEFAULT 'new' CHECK (state IN ('new', 'done', 'bad')),
        events INTEGER,
        error TEXT,
        processed_at INTEGER
    );
    CREATE INDEX inbox_new ON inbox (id) WHERE state = 'new';

    -- One row per distinct event ever seen: Meta retries and duplicates deliveries.
    CREATE TABLE events (
        account_id TEXT NOT NULL,
        key TEXT NOT NULL,
        user_id TEXT,
        kind TEXT NOT NULL,
        at INTEGER NOT NULL,
        inbox_id INTEGER NOT NULL,
        PRIMARY KEY (account_id, key)
    ) WITHOUT ROWID;

    CREATE TABLE contacts (
        account_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        username TEXT,
        name TEXT,
        email TEXT,
        phone TEXT,
        tags TEXT NOT NULL DEFAULT '[]',
        fields TEXT NOT NULL DEFAULT '{}',
        first_seen_at INTEGER NOT NULL,
        last_seen_at INTEGER NOT NULL,
        PRIMARY KEY (account_id, user_id)
    ) WITHOUT ROWID;

    -- Per (account, user): the policy core's ConversationState as its own JSON form
    -- (bot.policy.to_dict), with copies of the times that queries select on.
    CREATE TABLE conversations (
        account_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        platform TEXT NOT NULL,
        state TEXT NOT NULL,
        last_user_message_at INTEGER,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (account_id, user_id)
    ) WITHOUT ROWID;

    -- Every comment with its text and media, for matching and audit. The private-reply basis
    -- of a comment with a known author lives in that contact's state; `private_reply_at` here
    -- is what guards comments whose author Meta left out (POLICY.md §2).
    CREATE TABLE comments (
        account_id TEXT NOT NULL,
        comment_id TEXT NOT NULL,
        user_id TEXT,
        media_id TEXT,
        parent_id TEXT,
        text TEXT NOT NULL DEFAULT '',
        live INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL,
        private_reply_at INTEGER,
        PRIMARY KEY (account_id, comment_id)
    ) WITHOUT ROWID;
    CREATE INDEX comments_user ON comments (account_id, user_id, created_at);

    -- Opt-in tokens by topic, kept in step with the contacts' state on every save, so a
    -- broadcast can find who opted in to a topic without reading every conversation.
    CREATE TABLE optin_tokens (
        account_id TEXT NOT NULL,
        token TEXT NOT NULL,
        user_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        topic TEXT,
        frequency TEXT,
        expires_at INTEGER,
        stopped INTEGER NOT NULL DEFAULT 0,
        used_at INTEGER,
        last_sent_at INTEGER,
        PRIMARY KEY (account_id, token)
    ) WITHOUT ROWID;
    CREATE INDEX optin_tokens_topic ON optin_tokens (account_id, kind, topic);

    -- Sends decided but not yet made; written in the same transaction as the state change.
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        account_id TEXT NOT NULL,
        user_id TEXT,
        comment_id TEXT,
        kind TEXT NOT NULL,
        intent TEXT NOT NULL,
        body TEXT NOT NULL,
        priority INTEGER NOT NULL DEFAULT 0,
        due_at INTEGER NOT NULL,
        deadline INTEGER,
        created_at INTEGER NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending'
            CHECK (state IN ('pending', 'sending', 'sent', 'dropped', 'unknown')),
        attempts INTEGER NOT NULL DEFAULT 0,
        lease_owner TEXT,
        lease_until INTEGER,
        source TEXT,
        -- e.g. 'private_reply:<comment id>': the database itself refuses a second one.
        once_key TEXT UNIQUE
    );
    CREATE INDEX outbox_pending ON outbox (account_id, due_at) WHERE state = 'pending';

    CREATE TABLE send_log (
        id INTEGER PRIMARY KEY,
        outbox_id INTEGER,
        account_id TEXT NOT NULL,
        user_id TEXT,
        comment_id TEXT,
        at INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        kind TEXT,
        basis TEXT,
        reason TEXT,
        detail TEXT,
        message_id TEXT,
        error_code INTEGER,
        error_subcode INTEGER
    );
    CREATE INDEX send_log_account_at ON send_log (account_id, at);

    CREATE TABLE account_state (
        account_id TEXT PRIMARY KEY,
        paused_reason TEXT,
        paused_at INTEGER,
        paused_until INTEGER
    );
    """,
    # 2: the conversation runtime: one run per (contact, flow), flow starts for the guards,
    # and the notes that explain what each flow decided.
    """
    CREATE TABLE flow_runs (
        account_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        flow_id TEXT NOT NULL,
        run TEXT NOT NULL,
        due_at INTEGER,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (account_id, user_id, flow_id)
    ) WITHOUT ROWID;
    CREATE INDEX flow_runs_due ON flow_runs (due_at) WHERE due_at IS NOT NULL;

    CREATE TABLE flow_starts (
        account_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        flow_id TEXT NOT NULL,
        at INTEGER NOT NULL,
        comment_id TEXT
    );
    CREATE INDEX flow_starts_user ON flow_starts (account_id, user_id, flow_id, at);

    CREATE TABLE flow_notes (
        id INTEGER PRIMARY KEY,
        account_id TEXT NOT NULL,
        user_id TEXT,
        flow_id TEXT,
        at INTEGER NOT NULL,
        note TEXT NOT NULL
    );
    CREATE INDEX flow_notes_user ON flow_notes (account_id, user_id, at);
    """,
    # 3: the outbox indexes the benches found missing (docs/benchmarks.md); without them every
    # dispatcher tick and every start scanned every queued row. Each serves a query in
    # bot/store/outbox.py, checked with EXPLAIN QUERY PLAN in tests/test_outbox.py.
    """
    -- claim_due and next_due_at: a cap class's due rows (kind), in due order.
    CREATE INDEX outbox_pending_kind ON outbox (account_id, kind, due_at)
        WHERE state = 'pending';
    -- pending_past_deadline: the rows whose basis may have closed while they waited.
    CREATE INDEX outbox_pending_deadline ON outbox (deadline)
        WHERE state = 'pending' AND deadline IS NOT NULL;
    -- release_leases: leased rows at a restart (few, so the index stays tiny).
    CREATE INDEX outbox_leased ON outbox (lease_owner) WHERE lease_owner IS NOT NULL;
    -- in_flight: the sends a crash left 'sending'.
    CREATE INDEX outbox_sending ON outbox (id) WHERE state = 'sending';
    """,
    # 4: Meta's echo of each send settles one whose outcome was unknown (reconcile_echo): it
    # looks the send log up by message id and the contact's open outbox rows, per echo.
    """
    CREATE INDEX send_log_message ON send_log (account_id, message_id)
        WHERE message_id IS NOT NULL;
    CREATE INDEX send_log_unknown ON send_log (outbox_id) WHERE outcome = 'unknown';
    CREATE INDEX outbox_user ON outbox (account_id, user_id);
    """,
    # 5: saving a contact's state rewrites its opt-in tokens, deleting them by contact first;
    # without this every save scanned all of the account's tokens.
    """
    CREATE INDEX optin_tokens_user ON optin_tokens (account_id, user_id);
    """,
    # 6: the sender counts each class's sends in the rolling hour (and the account's in the
    # last second) before every claim (queue_status). With kind and outcome in the index the
    # count reads the index alone, not one table row per send of the hour; it replaces
    # send_log_account_at, its prefix.
    """
    CREATE INDEX send_log_caps ON send_log (account_id, at, kind, outcome);
    DROP INDEX send_log_account_at;
    """,
    # 7: the outbox's state check without a temporary b-tree per written row (INBOX_STATE_CHECK
    # says why). The main file's own inbox table is left as it is: nothing writes it any more.
    RewriteCheck(
        "outbox",
        "CHECK (state IN ('pending', 'sending', 'sent', 'dropped', 'unknown'))",
        "CHECK (state = 'pending' OR state = 'sending' OR state = 'sent'"
        " OR state = 'dropped' OR state = 'unknown')",
    ),
    # 8: events between ingest and the engine (bot/store/events.py): one row per new event,
    # with its contact, so the sender can apply a contact's acknowledged events before it
    # sends to them, and an event the engine can't apply is set aside alone.
    """
    CREATE TABLE event_queue (
        id INTEGER PRIMARY KEY,
        account_id TEXT NOT NULL,
        user_id TEXT,
        at INTEGER NOT NULL,
        inbox_id INTEGER NOT NULL,
        event TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'new' CHECK (state = 'new' OR state = 'bad'),
        error TEXT,
        failed_at INTEGER
    );
    CREATE INDEX event_queue_new ON event_queue (id) WHERE state = 'new';
    CREATE INDEX event_queue_contact ON event_queue (account_id, user_id, at)
        WHERE state = 'new';
    CREATE INDEX event_queue_bad ON event_queue (id) WHERE state = 'bad';
    """,
]
