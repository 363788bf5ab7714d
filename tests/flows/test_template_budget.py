"""Every render under a budget of steps, text and time (the untrusted-input issue, item 7): each
capped filter, method and operator refuses, before building it, what would outgrow the budget,
and still does what Jinja does below it; the shipped templates render exactly as before."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jinja2 import StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from bot.clock import SystemClock, VirtualClock
from bot.events import Platform
from bot.flows import format_problem
from bot.flows.context import template_context
from bot.flows.model import Flow, PrivateReply, Trigger, TriggerType
from bot.policy import default_profile
from bot.template_budget import MAX_DEPTH, MAX_SECONDS, MAX_STEPS, MAX_TEXT, TIMER, timed_by
from bot.templates import (
    _PROFILE,
    TemplateFailure,
    TemplateSet,
    first_name,
    truncate_bytes,
    truncate_for_platform,
)

from .conftest import Checker

ROOT = Path(__file__).resolve().parent.parent.parent
IG = default_profile().for_platform(Platform.INSTAGRAM)
TEXT = "Long comment,\nwith words. " * 42  # 1,008 characters, as in the issue
CTX = {"comment": {"text": TEXT}, "contact": {"name": "Ann Lee"}}


def render(source: str, ctx: dict[str, Any] | None = None, **kw: Any) -> str:
    return TemplateSet({"t": source}).render("t", ctx or CTX, IG, check_limit=False, **kw).text


def failure(source: str, **kw: Any) -> TemplateFailure:
    with pytest.raises(TemplateFailure) as err:
        render(source, **kw)
    return err.value


TOO_BIG = f"output over {MAX_TEXT // 1024} KB"


@pytest.mark.parametrize(
    ("hostile", "fine", "expected"),
    [
        (
            "{{ comment.text|replace('', comment.text * 60) }}",
            "{{ 'a-b'|replace('-', '+') }}",
            "a+b",
        ),
        ("{{ comment.text|center(10000000) }}", "{{ 'ab'|center(6) }}|", "ab  |"),
        ("{{ comment.text|indent(10000000) }}", "{{ 'a\nb'|indent(2) }}", "a\n  b"),
        ("{{ comment.text|indent(comment.text * 60) }}", "{{ 'a\nb'|indent('> ') }}", "a\n> b"),
        (
            "{{ comment.text|wordwrap(1, wrapstring=comment.text * 60) }}",
            "{{ 'aa bb'|wordwrap(2) }}",
            "aa\nbb",
        ),
        ("{{ '%999999s'|format(comment.text) }}", "|{{ '%3s|%s'|format('a', 2) }}", "|  a|2"),
        ("{{ '%999999s' % comment.text }}", "{{ '%-3s|' % 'a' }}", "a  |"),
        (
            "{{ '{:>99999999}'.format(comment.text) }}",
            "|{{ '{:>3}|{}'.format('a', 1) }}",
            "|  a|1",
        ),
        ("{{ '{x:>9999999}'.format_map({'x': 1}) }}", "{{ '{x}!'.format_map({'x': 1}) }}", "1!"),
        ("{{ ([comment.text] * 999)|join }}", "{{ ['a', 'b']|join(', ') }}", "a, b"),
        ("{{ comment.text.replace('', comment.text) }}", "{{ 'a-b'.replace('-', '') }}", "ab"),
        ("{{ comment.text.ljust(999999999) }}", "{{ 'a'.ljust(3) }}|", "a  |"),
        ("{{ comment.text.center(999999999) }}", "|{{ 'a'.center(3) }}|", "| a |"),
        ("{{ comment.text.zfill(999999999) }}", "{{ '7'.zfill(3) }}", "007"),
        ("{{ ('\t' * 999).expandtabs(999) }}", "{{ 'a\tb'.expandtabs(2) }}", "a b"),
        ("{{ comment.text.join([comment.text] * 99) }}", "{{ '-'.join(['a', 'b']) }}", "a-b"),
        (
            "{{ comment.text.translate({32: comment.text}) }}",
            "{{ 'ab'.translate({97: 'x'}) }}",
            "xb",
        ),
        ("{{ comment.text * 80 }}", "{{ 'ab' * 2 }}", "abab"),
        ("{{ comment.text + comment.text * 64 }}", "{{ 'a' + 'b' }}", "ab"),
        (
            "{{ (1).to_bytes(999999999, 'big')|length }}",
            "{{ (1).to_bytes(2, 'big')|length }}",
            "2",
        ),
        (
            "{{ ([comment.text] * 999)|map('upper')|list|length }}",
            "{{ ['a']|map('upper')|first }}",
            "A",
        ),
        ("{{ [comment.text * 60] * 99 }}", "{{ [1] * 2 }}", "[1, 1]"),
    ],
)
def test_each_capped_operation_refuses_big_text_and_keeps_small_results(
    hostile: str, fine: str, expected: str
) -> None:
    assert failure(hostile).reason in (TOO_BIG, f"a list, as text, {TOO_BIG[7:]}")
    assert failure(hostile).over_budget
    assert render(fine) == expected


def test_doubling_by_concatenation_stops_before_it_is_built() -> None:
    source = (
        "{% set ns = namespace(x=comment.text) %}"
        "{% for i in range(40) %}{% set ns.x = ns.x ~ ns.x %}{% endfor %}{{ ns.x|length }}"
    )
    assert failure(source).reason == TOO_BIG
    assert render("{{ 'a' ~ 1 ~ none }}") == "a1None"


def test_lists_and_numbers_cannot_grow_without_bound() -> None:
    lists = "{% set ns = namespace(l=[1]) %}{% for i in range(40) %}{% set ns.l = ns.l + ns.l %}"
    assert "over" in failure(lists + "{% endfor %}{{ ns.l|length }}").reason
    numbers = "{% set ns = namespace(n=99) %}{% for i in range(40) %}{% set ns.n = ns.n * ns.n %}"
    assert "number too large" in failure(numbers + "{% endfor %}{{ ns.n }}").reason
    assert "is too large" in failure("{{ range(3)|batch(999999999)|list }}").reason
    assert render("{{ [1, 2] + [3] }} {{ 6 * 7 }} {{ 2 ** 10 }}") == "[1, 2, 3] 42 1024"


def test_loops_nested_over_a_long_comment_stop_after_the_step_budget() -> None:
    source = (
        "{% if comment.text|length > 30 %}{% for a in comment.text %}{% for b in comment.text %}"
        "{% for c in comment.text %}{% endfor %}{% endfor %}{% endfor %}{% endif %}Thanks!"
    )
    f = failure(source)
    assert f.reason == f"stopped after {MAX_STEPS:,} loop steps" and f.over_budget
    assert render(source, {"comment": {"text": "short"}}) == "Thanks!"


def test_filtered_loops_and_recursion_cost_steps_too() -> None:
    filtered = (
        "{% for a in range(99) %}{% for b in range(99999) if b < 0 %}{% endfor %}{% endfor %}x"
    )
    assert failure(filtered).reason.startswith("stopped after")
    macro = "{% macro f() %}{{ f() }}{{ f() }}{% endmacro %}{{ f() }}"
    assert failure(macro).reason == f"macros or includes nested more than {MAX_DEPTH} deep"
    with pytest.raises(TemplateFailure) as err:
        TemplateSet({"me": "{% include 'me' %}x"}).render("me", CTX, IG)
    assert err.value.reason == f"macros or includes nested more than {MAX_DEPTH} deep"
    nested = "{% macro a() %}{{ caller() }}{% endmacro %}{% call a() %}in{% endcall %}"
    assert render(nested) == "in"
    assert (
        "recursive loops are not allowed"
        in failure("{% for x in [1] recursive %}{{ loop([1]) }}{% endfor %}").reason
    )
    assert render("{% for x in range(3) if x %}{{ x }}{% endfor %}") == "12"
    # A filter walking a long list costs a step per item, before it walks.
    assert failure("{{ range(99999)|list|sort|first }}").reason.startswith("stopped after")
    assert failure("{% for i in range(999) %}{{ range(999)|sum }}{% endfor %}").over_budget
    assert render("{{ comment.text|list|unique|list|length }}") == str(len(set(TEXT)))


def _ticking_clock(step: float) -> Callable[[], float]:
    ticks: Iterator[float] = (i * step for i in range(10**9))
    return lambda: next(ticks)


def test_a_render_past_its_time_budget_stops_with_the_reason() -> None:
    # An injected CPU clock that moves 10 ms at every reading: a few readings in, it is past
    # the budget (read every 32 steps; 1,000 loop turns read it about 60 times).
    source = "{% for x in range(1000) %}{{ x }}{% endfor %}"
    f = failure(source, timer=_ticking_clock(0.010))
    assert f.reason == f"took more than {MAX_SECONDS * 1000:.0f} ms of CPU time" and f.over_budget
    assert render(source, timer=_ticking_clock(0.0)).startswith("0123")


def test_the_time_budget_counts_cpu_time_not_a_busy_machine_s_wall_time() -> None:
    # 20 ms of wall time dropped real messages when the machine was busy (the render was
    # waiting for a CPU): the budget reads the thread's CPU time, through the clock object.
    assert TIMER.get() is not None
    clock = SystemClock()
    with timed_by(clock.thread_time):
        assert TIMER.get() == clock.thread_time
    assert VirtualClock().thread_time() == VirtualClock().thread_time() == 0.0


def test_bot_check_refuses_a_template_a_long_comment_makes_too_costly(check: Checker) -> None:
    report = check(
        {
            "f.yaml": """
            flows:
              - id: echo
                trigger: {type: comment, keywords: [hi]}
                steps:
                  - {id: r, type: private_reply, template: loops.j2}
            """
        },
        {
            "loops.j2": """
            Hi!
            {% if comment.text|length > 30 %}
            {% for a in comment.text %}{% for b in comment.text %}.{% endfor %}{% endfor %}
            {% endif %}
            """
        },
    )
    [problem] = report.errors
    assert (problem.file, problem.line) == ("templates/loops.j2", 3)
    assert problem.message.startswith("stopped after 10,000 loop steps when a user's texts")
    assert "flows/f.yaml:5:" in problem.message
    # Seen in the source too: the loops' lengths are the comment's (one warning a line).
    [warning] = report.warnings
    assert (warning.file, warning.line) == ("templates/loops.j2", 3)
    assert "what a user wrote (comment)" in warning.message


def test_bot_check_warns_of_a_loop_over_user_text_the_hostile_render_misses(
    check: Checker,
) -> None:
    report = check(
        {
            "f.yaml": """
            flows:
              - id: echo
                trigger: {type: comment, keywords: [hi]}
                steps:
                  - {id: r, type: private_reply, template: words.j2}
            """
        },
        {"words.j2": "Hi{% for w in comment.text.split() if 'magic' in w %}!{% endfor %}"},
    )
    assert report.errors == ()
    [warning] = [format_problem(w) for w in report.warnings]
    assert warning.startswith("templates/words.j2:1:1: warning: words.j2: this loop runs once")


# --- the shipped templates render as before --------------------------------------------


def _reference() -> ImmutableSandboxedEnvironment:
    """Jinja's plain sandbox with the bot's settings and filters: the renderer before budgets."""
    templates, _ = TemplateSet.from_dir(ROOT / "templates")
    sources = {n: templates.source(n) for n in templates.names}
    from jinja2 import DictLoader

    env = ImmutableSandboxedEnvironment(
        loader=DictLoader(sources),
        undefined=StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        first_name=first_name,
        truncate_bytes=truncate_bytes,
        truncate_for_platform=truncate_for_platform,
    )
    return env


SHIPPED, _ = TemplateSet.from_dir(ROOT / "templates")
REFERENCE = _reference()
_FLOW = Flow(
    id="pricing",
    trigger=Trigger(type=TriggerType.COMMENT),
    steps=(PrivateReply(id="r", template="t"),),
)
_TEXTS = st.text(max_size=300)


@given(
    name=st.sampled_from(sorted(SHIPPED.names)),
    person=st.one_of(st.none(), _TEXTS),
    comment=_TEXTS,
    message=st.one_of(st.none(), _TEXTS),
    email=st.one_of(st.none(), st.emails()),
    platform=st.sampled_from(list(Platform)),
)
def test_the_shipped_templates_render_as_before(
    name: str,
    person: str | None,
    comment: str,
    message: str | None,
    email: str | None,
    platform: Platform,
) -> None:
    ctx = template_context(
        flow=_FLOW,
        platform=platform,
        account_id="17841400000000001",
        account_name="brand",
        username="ann",
        name=person,
        tags=["lead"],
        fields={"email": email} if email else {},
        answers={"email": email} if email else {},
        comment={"id": "c1", "text": comment, "media_id": "m1"},
        message=None if message is None else {"text": message, "payload": None},
        topic="pricing_updates",
    )
    rules = default_profile().for_platform(platform)
    token = _PROFILE.set(rules)
    try:
        expected: str | None = REFERENCE.get_template(name).render(dict(ctx)).strip()
    except Exception:
        expected = None
    finally:
        _PROFILE.reset(token)
    try:
        got: str | None = SHIPPED.render(name, ctx, rules, check_limit=False).text
    except TemplateFailure as f:
        assert not f.over_budget
        got = None
    assert got == (expected or None)
