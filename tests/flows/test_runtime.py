"""The conversation runtime, pure: every step kind, guards, waits, reloads and render failures,
with a fixed clock value and no I/O."""

from __future__ import annotations

import json
import random
from datetime import timedelta
from pathlib import Path

import pytest

from bot.events import OptInKind, Platform
from bot.flows import (
    FlowSet,
    GuardHistory,
    Handoff,
    RenderFailed,
    RunState,
    Schedule,
    Send,
    SendKind,
    SetField,
    Tag,
    Waiting,
    check_all,
    on_due,
    on_event,
    start,
)
from bot.flows.execute import MAX_STEPS, parse_email, parse_phone
from bot.policy import Author, Content, Intent
from bot.templates import TemplateSet

from .conftest import NOW, Builder, comment, contact, dm, postback

ROOT = Path(__file__).parent.parent.parent
T = {"t.j2": "Hi {{ contact | first_name }}", "u.j2": "Second", "v.j2": "Third"}


def sends(effects: tuple[object, ...]) -> list[Send]:
    return [e for e in effects if isinstance(e, Send)]


def only(effects: tuple[object, ...], kind: type) -> list[object]:
    return [e for e in effects if isinstance(e, kind)]


def test_the_seed_example_pricing_flow_end_to_end() -> None:
    fs = check_all(ROOT / "flows", ROOT / "templates").flowset
    assert fs is not None
    first = start(fs, comment("PRICING!!"), contact(name=None), NOW)
    assert first is not None and first.run is not None
    private, public = sends(first.effects)
    assert private.kind is SendKind.PRIVATE_REPLY
    assert private.intent == Intent(comment_id="c1")
    assert private.comment_id == "c1"
    assert private.message["text"].startswith("Hi there! Thanks for asking about pricing")
    assert public.kind is SendKind.PUBLIC_REPLY and public.delay == timedelta(seconds=20)
    assert first.run.waiting_for is Waiting.REPLY
    assert only(first.effects, Schedule) == [
        Schedule(NOW + timedelta(days=7), "pricing", "wait_answer", "wait_reply timeout")
    ]

    later = NOW + timedelta(minutes=5)
    second = on_event(fs, first.run, dm("is there a yearly plan?"), contact(), later)
    answer, optin = sends(second.effects)
    assert answer.message["attachment"]["payload"]["template_type"] == "button"
    assert '"is there a yearly plan?"' in answer.message["attachment"]["payload"]["text"]
    assert optin.kind is SendKind.OPTIN_REQUEST
    assert optin.intent == Intent.optin_request(OptInKind.MARKETING, "pricing_updates")
    assert optin.message == {
        "attachment": {
            "type": "template",
            "payload": {
                "template_type": "notification_messages",
                "title": "Weekly pricing news and offers",
                "payload": "pricing_updates",
                "notification_messages_frequency": "WEEKLY",
            },
        }
    }
    assert second.run is not None and second.run.waiting_for is Waiting.FOLLOWUP
    due = second.run.wait_until
    assert due == later + timedelta(days=3)
    assert only(second.effects, Schedule) == [Schedule(due, "pricing", "nudge", "follow_up")]

    early = on_due(fs, second.run, contact(), due - timedelta(seconds=1))
    assert early.run == second.run and early.effects == ()
    third = on_due(fs, second.run, contact(), due)
    (nudge,) = sends(third.effects)
    assert nudge.followup and nudge.intent == Intent(topic="pricing_updates")
    assert third.run is None


def test_public_reply_variants_are_deterministic_per_comment(build: Builder) -> None:
    fs = build(
        """
        flows:
          - id: p
            trigger: {type: comment, keywords: [hi]}
            steps:
              - {id: pub, type: public_reply, templates: [t.j2, u.j2, v.j2]}
        """,
        T,
    )

    def chosen(comment_id: str, rng: random.Random | None = None) -> str | None:
        out = start(fs, comment("hi", comment_id=comment_id), contact(), NOW, rng)
        assert out is not None
        return sends(out.effects)[0].template

    assert chosen("c1") == chosen("c1")  # a retried webhook picks the same text
    assert len({chosen(f"c{i}") for i in range(30)}) == 3  # and the variants do vary
    assert chosen("c1", random.Random(1)) == chosen("c2", random.Random(1))


def test_send_with_quick_replies_buttons_and_image(build: Builder) -> None:
    fs = build(
        """
        flows:
          - id: s
            trigger: {type: dm, keywords: [menu]}
            steps:
              - id: menu
                type: send
                template: t.j2
                content: support
                quick_replies: [{title: Yes, payload: Y}]
              - id: links
                type: send
                template: u.j2
                buttons:
                  - {title: Site, url: "https://example.com"}
                  - {title: More, payload: MORE}
              - id: pic
                type: send
                image: https://example.com/a.png
                quick_replies: [{title: Nice, payload: N}]
        """,
        T,
    )
    out = start(fs, dm("menu"), contact(), NOW)
    assert out is not None and out.run is None
    menu, links, pic = sends(out.effects)
    assert menu.message == {
        "text": "Hi Alice",
        "quick_replies": [{"content_type": "text", "title": "Yes", "payload": "Y"}],
    }
    assert menu.intent == Intent(content=Content.SUPPORT)
    assert links.message == {
        "attachment": {
            "type": "template",
            "payload": {
                "template_type": "button",
                "text": "Second",
                "buttons": [
                    {"type": "web_url", "url": "https://example.com", "title": "Site"},
                    {"type": "postback", "payload": "MORE", "title": "More"},
                ],
            },
        }
    }
    assert links.intent == Intent(author=Author.AUTOMATION, content=Content.PROMOTIONAL)
    assert pic.message["attachment"] == {
        "type": "image",
        "payload": {"url": "https://example.com/a.png", "is_reusable": True},
    }
    assert pic.message["quick_replies"][0]["payload"] == "N"


WAIT_AND_BRANCH = """
flows:
  - id: w
    trigger: {type: dm, keywords: [menu]}
    steps:
      - {id: ask, type: send, template: t.j2}
      - {id: wait, type: wait_reply, timeout: 1h, on_timeout: gone, save_as: choice}
      - id: route
        type: branch
        cases:
          - {payload: YES, goto: yes}
          - {keywords: [nope, never], goto: no}
        default: unsure
      - {id: yes, type: send, template: u.j2, next: done}
      - {id: no, type: tag, tags: [declined], next: done}
      - {id: unsure, type: set_field, field: last_choice, from_answer: choice, next: done}
      - {id: gone, type: untag, tags: [active]}
      - {id: done, type: end}
"""


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (dm("Yes!", payload="YES"), [Send]),
        (postback("YES", "Yes"), [Send]),
        (dm("NOPE, thanks"), [Tag(add=("declined",))]),
        (dm("maybe later"), [SetField("last_choice", "maybe later")]),
    ],
)
def test_wait_reply_then_branch(build: Builder, reply: object, expected: list[object]) -> None:
    fs = build(WAIT_AND_BRANCH, T)
    first = start(fs, dm("menu"), contact(), NOW)
    assert first is not None and first.run is not None
    assert first.run.step_id == "wait" and first.run.waiting_for is Waiting.REPLY
    out = on_event(fs, first.run, reply, contact(), NOW + timedelta(minutes=1))  # type: ignore[arg-type]
    got = [type(e) if isinstance(e, Send) else e for e in out.effects]
    assert got == expected
    assert out.run is None


def test_wait_reply_timeout_goes_to_on_timeout(build: Builder) -> None:
    fs = build(WAIT_AND_BRANCH, T)
    first = start(fs, dm("menu"), contact(), NOW)
    assert first is not None and first.run is not None
    out = on_due(fs, first.run, contact(), NOW + timedelta(hours=1))
    assert out.effects == (Tag(remove=("active",)),)
    assert "no reply within 1h" in out.notes[0]
    # a stale wake-up for a run that has moved on changes nothing
    stale = on_due(fs, first.run, contact(), NOW + timedelta(minutes=5))
    assert stale.run == first.run and stale.effects == ()


COLLECT = """
flows:
  - id: lead
    trigger: {type: dm, keywords: [guide]}
    steps:
      - id: email
        type: collect
        kind: email
        template: t.j2
        retry_template: u.j2
        max_attempts: 2
        timeout: 1h
        on_timeout: done
        on_fail: failed
      - {id: thanks, type: send, template: mail.j2, next: done}
      - {id: failed, type: tag, tags: [no_email]}
      - {id: done, type: end}
"""
COLLECT_T = {**T, "mail.j2": "Sent to {{ contact.fields.email }} ({{ answers.email }})"}


def test_collect_validates_asks_again_and_stores_the_field(build: Builder) -> None:
    fs = build(COLLECT, COLLECT_T)
    first = start(fs, dm("guide"), contact(), NOW)
    assert first is not None and first.run is not None
    assert [s.template for s in sends(first.effects)] == ["t.j2"]
    assert first.run.wait_until == NOW + timedelta(hours=1)

    later = NOW + timedelta(minutes=10)
    bad = on_event(fs, first.run, dm("my mail is bob at example"), contact(), later)
    assert bad.run is not None and bad.run.attempts == 1 and bad.run.step_id == "email"
    assert [s.template for s in sends(bad.effects)] == ["u.j2"]
    assert bad.run.wait_until == later + timedelta(hours=1)  # a fresh timeout

    good = on_event(fs, bad.run, dm("sure: Bob@Example.COM"), contact(), later)
    assert only(good.effects, SetField) == [SetField("email", "Bob@example.com")]
    (thanks,) = sends(good.effects)
    assert thanks.message["text"] == "Sent to Bob@example.com (Bob@example.com)"
    assert good.run is None


def test_collect_gives_up_after_max_attempts(build: Builder) -> None:
    fs = build(COLLECT, COLLECT_T)
    run = start(fs, dm("guide"), contact(), NOW)
    assert run is not None and run.run is not None
    once = on_event(fs, run.run, dm("no"), contact(), NOW)
    assert once.run is not None
    twice = on_event(fs, once.run, dm("still no"), contact(), NOW)
    assert twice.effects == (Tag(add=("no_email",)),)
    assert twice.run is None


def test_email_and_phone_parsing() -> None:
    assert parse_email("it's Ann.Lee+x@Mail.Example.org!") == "Ann.Lee+x@mail.example.org"
    assert parse_email("ann at example dot org") is None
    assert parse_phone("call +44 (20) 7946-0958 pls") == "+442079460958"
    assert parse_phone("12345") is None
    assert parse_phone("1234567890123456") is None


def test_tags_and_fields_are_seen_by_later_templates_in_the_same_run(build: Builder) -> None:
    fs = build(
        """
        flows:
          - id: t
            trigger: {type: dm, keywords: [vip]}
            steps:
              - {id: tag, type: tag, tags: [vip, fan]}
              - {id: untag, type: untag, tags: fan}
              - {id: level, type: set_field, field: level, value: 3}
              - {id: say, type: send, template: s.j2}
        """,
        {"s.j2": "{{ contact.tags | join(',') }} level {{ contact.fields.level }}"},
    )
    out = start(fs, dm("vip"), contact(tags=frozenset({"new"})), NOW)
    assert out is not None
    assert out.effects[:3] == (
        Tag(add=("vip", "fan")),
        Tag(remove=("fan",)),
        SetField("level", 3),
    )
    assert sends(out.effects)[0].message["text"] == "new,vip level 3"


def test_one_time_optin_request_and_a_follow_up_on_its_token(build: Builder) -> None:
    fs = build(
        """
        flows:
          - id: restock
            platforms: [messenger]
            trigger: {type: dm, keywords: [restock]}
            steps:
              - id: ask
                type: request_optin
                kind: one_time
                topic: restock
                title: "Back in stock?"
              - id: later
                type: follow_up
                delay: 10d
                topic: restock
                via_token: true
                content: non_promotional
                template: t.j2
        """,
        T,
    )
    fb = contact(platform=Platform.MESSENGER)
    out = start(fs, dm("restock", platform=Platform.MESSENGER), fb, NOW)
    assert out is not None and out.run is not None
    (ask,) = sends(out.effects)
    assert ask.message["attachment"]["payload"] == {
        "template_type": "one_time_notif_req",
        "title": "Back in stock?",
        "payload": "restock",
    }
    assert ask.intent == Intent.optin_request(OptInKind.ONE_TIME, "restock")
    assert out.run.wait_until == NOW + timedelta(days=10)
    due = on_due(fs, out.run, fb, NOW + timedelta(days=10))
    (follow,) = sends(due.effects)
    assert follow.followup
    assert follow.intent == Intent(
        content=Content.NON_PROMOTIONAL, topic="restock", via_token=OptInKind.ONE_TIME
    )


def test_handoff_ends_the_run_and_stops_automation(build: Builder) -> None:
    fs = build(
        """
        flows:
          - id: h
            trigger: {type: dm, keywords: [human]}
            steps:
              - {id: wait, type: wait_reply, timeout: 1h}
              - {id: over, type: handoff, reason: asked for a person}
        """
    )
    first = start(fs, dm("human"), contact(), NOW)
    assert first is not None and first.run is not None
    out = on_event(fs, first.run, dm("please"), contact(), NOW)
    assert out.effects == (Handoff("asked for a person"),) and out.run is None
    assert start(fs, dm("human"), contact(handoff=True), NOW) is None
    paused = on_event(fs, first.run, dm("hello?"), contact(handoff=True), NOW)
    assert paused.run == first.run and paused.effects == ()


def test_goto_and_end_and_goto_loops_stop(build: Builder) -> None:
    fs = build(
        """
        flows:
          - id: g
            trigger: {type: dm, keywords: [go]}
            steps:
              - {id: a, type: goto, to: c}
              - {id: b, type: send, template: t.j2}
              - {id: c, type: tag, tags: [x]}
              - {id: d, type: goto, to: c}
        """,
        T,
    )
    out = start(fs, dm("go"), contact(), NOW)
    assert out is not None and out.run is None
    assert len(out.effects) == MAX_STEPS // 2
    assert "goto loop" in out.notes[-1]
    fs2 = build(
        """
        flows:
          - id: e
            trigger: {type: dm, keywords: [go]}
            steps:
              - {id: a, type: end}
              - {id: b, type: send, template: t.j2}
        """,
        T,
    )
    ended = start(fs2, dm("go"), contact(), NOW)
    assert ended is not None and ended.effects == () and ended.run is None


GUARDED = """
flows:
  - id: g
    trigger: {type: comment, keywords: [pricing]}
    guards: {cooldown: 1h, daily_cap: 2}
    steps: [{id: r, type: private_reply, template: t.j2}]
"""


def test_guards_cooldown_daily_cap_and_handled_comments(build: Builder) -> None:
    fs = build(GUARDED, T)
    ev = comment("pricing", comment_id="c9")
    assert start(fs, ev, contact(), NOW, history=GuardHistory()) is not None
    recent = GuardHistory(last_started={"g": NOW - timedelta(minutes=59)})
    assert start(fs, ev, contact(), NOW, history=recent) is None
    old = GuardHistory(last_started={"g": NOW - timedelta(hours=1)})
    assert start(fs, ev, contact(), NOW, history=old) is not None
    capped = GuardHistory(starts_today={"g": 2})
    assert start(fs, ev, contact(), NOW, history=capped) is None
    handled = GuardHistory(handled_comments=frozenset({"c9"}))
    assert start(fs, ev, contact(), NOW, history=handled) is None
    # Without the commenter's id (POLICY.md §2) only the once-per-comment guard can apply.
    anonymous = start(
        fs, comment("pricing", user=None), contact(user_id=None), NOW, history=recent
    )
    assert anonymous is not None
    assert any("per-user guards could not apply" in n for n in anonymous.notes)


def test_no_match_means_no_start(build: Builder) -> None:
    fs = build(GUARDED, T)
    assert start(fs, comment("hello"), contact(), NOW) is None


def test_run_state_round_trips_through_json(build: Builder) -> None:
    fs = build(COLLECT, COLLECT_T)
    out = start(fs, dm("guide"), contact(), NOW)
    assert out is not None and out.run is not None
    run = on_event(fs, out.run, dm("bad"), contact(), NOW).run
    assert run is not None
    data = json.loads(json.dumps(run.to_dict()))
    assert RunState.from_dict(data) == run
    with pytest.raises(ValueError):
        RunState.from_dict({**data, "started_at": "2026-03-02T11:00:00"})


def test_a_reload_keeps_a_run_by_step_id_or_ends_it_with_a_note(build: Builder) -> None:
    fs = build(WAIT_AND_BRANCH, T)
    first = start(fs, dm("menu"), contact(), NOW)
    assert first is not None and first.run is not None
    reloaded = build(WAIT_AND_BRANCH.replace("template: u.j2", "template: v.j2"), T)
    kept = on_event(reloaded, first.run, dm("x", payload="YES"), contact(), NOW)
    assert sends(kept.effects)[0].template == "v.j2"
    without = build(
        """
        flows:
          - id: w
            trigger: {type: dm, keywords: [menu]}
            steps: [{id: other, type: end}]
        """
    )
    gone = on_event(without, first.run, dm("x"), contact(), NOW)
    assert gone.run is None and "no longer in flow w" in gone.notes[0]
    empty = FlowSet.build([])
    assert on_due(empty, first.run, contact(), NOW + timedelta(hours=2)).run is None


def test_a_template_that_fails_at_send_time_sends_nothing(build: Builder) -> None:
    fs = build(
        """
        flows:
          - id: f
            trigger: {type: dm, keywords: [go]}
            steps:
              - {id: tag, type: tag, tags: [started]}
              - {id: pic, type: send, image: "https://example.com/a.png", template: t.j2}
              - {id: after, type: tag, tags: [never]}
        """,
        T,
    )
    broken = FlowSet.build(
        fs.flows, TemplateSet({"t.j2": "{{ contact.fields.city }}"}), fs.profile
    )
    out = start(broken, dm("go"), contact(), NOW)
    assert out is not None and out.run is None
    assert sends(out.effects) == []  # not even the image
    assert out.effects[0] == Tag(add=("started",))
    (failed,) = only(out.effects, RenderFailed)
    assert failed.template == "t.j2" and "contact.fields.city" in failed.reason  # type: ignore[attr-defined]
    long_name = start(fs, dm("go"), contact(name="A" * 2000), NOW)
    assert long_name is not None
    assert only(long_name.effects, RenderFailed) and not sends(long_name.effects)


def test_private_reply_in_a_comment_flow_after_a_reply_reaches_the_comment(build: Builder) -> None:
    fs = build(
        """
        flows:
          - id: p
            trigger: {type: comment, keywords: [hi]}
            steps:
              - {id: wait, type: wait_reply, timeout: 1h}
              - {id: r, type: private_reply, template: t.j2}
        """,
        T,
    )
    first = start(fs, comment("hi", comment_id="c42"), contact(), NOW)
    assert first is not None and first.run is not None
    out = on_event(fs, first.run, dm("hello"), contact(), NOW)
    assert sends(out.effects)[0].intent.comment_id == "c42"
