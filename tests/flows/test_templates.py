"""Templates: the sandbox holds against hostile templates, undefined names fail loudly, limits
are enforced, and a failure is always a TemplateFailure, never half a message."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.errors import BotError
from bot.policy import default_profile
from bot.templates import (
    TemplateFailure,
    TemplateSet,
    first_name,
    truncate_bytes,
    truncate_for_platform,
)

IG = default_profile().instagram
FB = default_profile().messenger
CONTEXT = {
    "contact": {
        "username": "alice_99",
        "name": "Alice Smith",
        "first_name": "Alice",
        "tags": ["vip"],
        "fields": {"email": "a@example.com"},
    },
    "flow": {"id": "pricing", "description": None},
    "account": {"id": "1784", "name": "mybrand", "platform": "instagram"},
    "answers": {},
}


def render(source: str, context: dict[str, object] | None = None, profile=IG) -> str:  # type: ignore[no-untyped-def]
    return TemplateSet({"t.j2": source}).render("t.j2", context or CONTEXT, profile).text


HOSTILE = [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ joiner.__init__.__globals__.os }}",
    "{{ lipsum.__globals__ }}",
    "{{ self._TemplateReference__context }}",
    "{{ self.__init__.__globals__ }}",
    "{{ contact.__class__ }}",
    "{{ contact.fields.update({'email': 'x'}) }}",
    "{{ contact.tags.append('hacked') }}",
    "{{ config }}",
    "{{ config.items() }}",
    "{{ request.environ }}",
    "{{ account.__dict__ }}",
    "{{ '{0.__class__}'.format(contact) }}",
    "{{ 'x' * 10000000 }}",
    "{{ 9 ** 999999 }}",
    "{{ range(10000000) | list | length }}",
    "{{ namespace.__init__.__globals__ }}",
    "{% set x = contact.__getitem__ %}{{ x }}",
    "{{ dict.mro() }}",
    "{% for c in ().__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
]


@pytest.mark.parametrize("source", HOSTILE)
def test_hostile_templates_fail_safely(source: str) -> None:
    with pytest.raises(TemplateFailure) as info:
        render(source)
    assert isinstance(info.value, BotError)
    assert info.value.template == "t.j2"
    assert info.value.reason  # a clear reason, never a traceback into the caller


def test_the_sandbox_is_named_in_the_reason() -> None:
    with pytest.raises(TemplateFailure, match="blocked by the sandbox"):
        render("{{ ''.__class__ }}")
    with pytest.raises(TemplateFailure, match="blocked by the sandbox"):
        render("{{ contact.fields.update({'a': 1}) }}")


def test_the_context_is_not_changed_by_a_template() -> None:
    context = {**CONTEXT, "contact": {**CONTEXT["contact"], "tags": ["vip"]}}  # type: ignore[dict-item]
    with pytest.raises(TemplateFailure):
        render("{{ contact.tags.append('x') }}", context)
    assert context["contact"]["tags"] == ["vip"]  # type: ignore[index]


def test_undefined_names_fail_with_the_name_and_line() -> None:
    with pytest.raises(TemplateFailure) as info:
        render("Hi\n{{ contact.nmae }}!")
    assert info.value.line == 2
    assert "contact.nmae" in info.value.reason
    with pytest.raises(TemplateFailure, match="comment"):
        render("{{ comment.text }}")


def test_syntax_errors_name_the_line() -> None:
    with pytest.raises(TemplateFailure) as info:
        render("ok\n{% if %}")
    assert info.value.line == 2
    assert info.value.reason.startswith("syntax error")


def test_empty_text_and_missing_templates_fail() -> None:
    with pytest.raises(TemplateFailure, match="empty"):
        render("{% if false %}x{% endif %}  \n")
    with pytest.raises(TemplateFailure, match="no such template"):
        TemplateSet({}).render("nope.j2", CONTEXT, IG)


def test_text_over_the_limit_is_refused_whole() -> None:
    with pytest.raises(TemplateFailure, match="1001 UTF-8 bytes; instagram allows 1000"):
        render("x" * 1001)
    assert len(render("x" * 1001, profile=FB)) == 1001
    with pytest.raises(TemplateFailure, match="2001 characters; messenger allows 2000"):
        render("x" * 2001, profile=FB)


def test_truncate_for_platform_keeps_a_long_text_within_the_limit() -> None:
    long = "{{ ('ça ' * 600) | truncate_for_platform }}"
    ig = render(long)
    assert len(ig.encode()) <= 1000 and ig.endswith("…")
    fb = render(long, profile=FB)
    assert len(fb) <= 2000


def test_filters() -> None:
    assert render("Hi {{ contact | first_name }}") == "Hi Alice"
    assert render("Hi {{ contact.name | first_name }}") == "Hi Alice"
    nameless = {**CONTEXT, "contact": {**CONTEXT["contact"], "name": None, "first_name": None}}  # type: ignore[dict-item]
    assert render("Hi {{ contact | first_name }}", nameless) == "Hi there"
    assert render("Hi {{ contact | first_name('friend') }}", nameless) == "Hi friend"
    assert render("{{ 'héllo wörld' | truncate_bytes(8) }}") == "héll…"  # 8 bytes with the …
    assert first_name("  ") == "there"
    assert truncate_bytes("ab", 5) == "ab"
    assert truncate_bytes("€€€", 4, end="") == "€"
    assert truncate_for_platform("abc") == "abc"  # outside a render: no platform, no cut
    with pytest.raises(TemplateFailure, match="undefined"):
        render("{{ contact.nmae | first_name }}")


def test_no_autoescape_for_dms() -> None:
    assert render("{{ '<b>5 > 3 & co</b>' }}") == "<b>5 > 3 & co</b>"


def test_from_dir_reads_every_template_but_hidden_and_markdown(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.j2").write_text("x", encoding="utf-8")
    (tmp_path / "README.md").write_text("{{ not a template", encoding="utf-8")
    (tmp_path / ".hidden.j2").write_text("h", encoding="utf-8")
    (tmp_path / "bad.j2").write_bytes(b"\xff\xfe")
    templates, unreadable = TemplateSet.from_dir(tmp_path)
    assert templates.names == {"a/x.j2"}
    assert set(unreadable) == {"bad.j2"}
    assert templates.file_of("a/x.j2") == str(tmp_path / "a" / "x.j2")


def test_include_works_within_the_set() -> None:
    ts = TemplateSet(
        {"base.j2": "Hi {{ contact | first_name }}", "t.j2": "{% include 'base.j2' %}!"}
    )
    assert ts.render("t.j2", CONTEXT, IG).text == "Hi Alice!"
