"""Creators' regexes run in linear time (the untrusted-input issue, item 6): RE2 compiles every
one, `bot check` refuses what only a backtracking engine can run, and the accepted ones match
what Python's `re` matched, so existing keywords keep working."""

from __future__ import annotations

import re
import sys
import unicodedata

import pytest
import re2
from hypothesis import assume, given
from hypothesis import strategies as st

from bot.events import Comment, Platform
from bot.flows import MatchMode, format_problem
from bot.flows.execute import parse_email, parse_phone
from bot.flows.flowset import FlowSet
from bot.flows.match import keyword_matches
from bot.flows.model import End, Flow, PrivateReply, Trigger, TriggerType
from bot.flows.normalize import fold
from bot.flows.regex import RegexRefused, compile_regex, keyword
from bot.flows.regex_syntax import _SPACE_CHARS, _WORD

from .conftest import NOW, Checker

HOSTILE = "(a+)+$"
HOSTILE_TEXT = "a" * 5000 + "!"  # `re` would need about 2**5000 steps


def _regex_flow(*keywords: str, flow_id: str = "re") -> Flow:
    trigger = Trigger(type=TriggerType.COMMENT, keywords=keywords, match=MatchMode.REGEX)
    return Flow(
        id=flow_id, trigger=trigger, steps=(PrivateReply(id="r", template="t"), End(id="e"))
    )


def _comment(text: str) -> Comment:
    return Comment(
        platform=Platform.INSTAGRAM,
        account_id="17841400000000001",
        user_id="u1",
        timestamp=NOW,
        key="c1",
        comment_id="c1",
        text=text,
        media_id="m1",
    )


def test_every_compiled_keyword_is_re2s_and_a_hostile_one_answers() -> None:
    pattern = keyword(HOSTILE)
    assert isinstance(pattern.compiled, re2._Regexp)
    assert not pattern.found(HOSTILE_TEXT)
    assert keyword_matches(HOSTILE, MatchMode.REGEX, HOSTILE_TEXT) is False
    assert keyword_matches(HOSTILE, MatchMode.REGEX, "aaaa") is True


def test_the_trigger_index_runs_regex_keywords_through_re2() -> None:
    flows = FlowSet.build([_regex_flow(HOSTILE), _regex_flow(r"\bprice\b", flow_id="p")])
    assert flows.match(_comment(HOSTILE_TEXT)) is None
    found = flows.match(_comment("what's the PRICE?"))
    assert found is not None and found.flow.id == "p"


def test_email_and_phone_parsing_stay_linear_and_the_same() -> None:
    assert parse_email("a" * 20_000) is None
    assert parse_email("write to Gina.Lee+x@Example.COM please") == "Gina.Lee+x@example.com"
    assert parse_phone("1" + " " * 20_000 + "x") is None
    assert parse_phone("call +44 (20) 7946-0958 today") == "+442079460958"
    assert parse_phone("\u0661\u0662\u0663\u0664\u0665\u0666\u0667") == "١٢٣٤٥٦٧"


@pytest.mark.parametrize(
    ("pattern", "words"),
    [
        (r"(a)\1", "backreference"),
        (r"(?P<x>a)(?P=x)", "backreference"),
        (r"price(?=s)", "lookahead"),
        (r"(?<=#)sale", "lookbehind"),
        (r"(?<!not )sale", "negative lookahead or lookbehind"),
        (r"(a)?(?(1)b|c)", "conditional"),
        (r"(?>a+)b", "atomic group"),
        (r"a++b", "possessive"),
        (r"a{1001}", "1,000"),
        (r"[^\W\d]", "negated class"),
        (r"(unclosed", "not a valid regular expression"),
    ],
)
def test_what_needs_backtracking_is_refused_with_a_reason(pattern: str, words: str) -> None:
    with pytest.raises(RegexRefused) as err:
        keyword(pattern)
    assert words in err.value.reason


def test_bot_check_refuses_a_backreference_at_its_place(check: Checker) -> None:
    report = check(
        {
            "f.yaml": r"""
            flows:
              - id: twice
                trigger:
                  type: comment
                  keywords: ['(\w+) \1']
                  match: regex
                steps:
                  - {id: s, type: end}
              - id: branchy
                trigger: {type: dm, keywords: [hi]}
                steps:
                  - id: b
                    type: branch
                    cases:
                      - {keywords: ['(?<=x)y'], match: regex, goto: e}
                  - {id: e, type: end}
            """
        }
    )
    lines = [format_problem(p) for p in report.problems]
    assert any(
        line.startswith("flows/f.yaml:5:18: error: flows[0].trigger.keywords[0]: a backreference")
        and "write the repeated part out" in line
        for line in lines
    ), lines
    assert any("flows[1].steps[0].cases[0].keywords" in x and "lookbehind" in x for x in lines)


def test_python_word_and_space_classes_are_what_re2_is_given() -> None:
    assert set(_SPACE_CHARS) == {chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()}
    # Every code point Python's Unicode tables assign (RE2's may be newer): \w agrees.
    assigned = "".join(
        chr(c)
        for c in range(sys.maxunicode + 1)
        if unicodedata.category(chr(c)) not in ("Cn", "Cs")
    )
    assert re2.sub(f"[{_WORD}]", "", assigned) == re.sub(r"\w", "", assigned)


def test_word_boundaries_at_the_edges_hold_for_every_script() -> None:
    assert keyword(r"\bцена\b").found("какая цена?")
    assert not keyword(r"\bцена\b").found("бесценаа")
    assert keyword(r"\b(?:preco|price)s?\b").found(fold("Qual o PREÇO?"))
    assert keyword(r"\border\s*#?\d{3,}").found("where is order #١٢٣٤?")
    assert not keyword(r"\border\b").found("preorder")


# --- agreement with `re` on the shapes creators write ------------------------------------

_LETTERS = "abcxyzéцен"
_ATOMS = st.one_of(
    st.text(alphabet=_LETTERS, min_size=1, max_size=4).map(re.escape),
    st.sampled_from(
        [r"\d", r"\w", r"\s", r"\W", r"\S", r"\D", ".", "[a-c]", "[^a ]", r"[\d\s]", "[#@!]"]
    ),
)


@st.composite
def _pieces(draw: st.DrawFn, depth: int = 0) -> str:
    atom = draw(_ATOMS)
    if depth < 2 and draw(st.integers(0, 4)) == 0:
        alts = draw(st.lists(_pieces(depth + 1), min_size=2, max_size=3))
        atom = "(?:" + "|".join(alts) + ")"
    count = draw(st.sampled_from(["", "", "", "?", "*", "+", "{1,3}", "{2}"]))
    return atom + count


@st.composite
def _patterns(draw: st.DrawFn) -> str:
    parts = draw(st.lists(_pieces(), min_size=1, max_size=4))
    out = []
    for p in parts:
        if draw(st.booleans()):
            out.append(r"\b")
        out.append(p)
    if draw(st.booleans()):
        out.append(r"\b")
    anchor = draw(st.sampled_from(["", "", "^"]))
    end = draw(st.sampled_from(["", "", "$"]))
    return anchor + "".join(out) + end


_TEXTS = st.text(alphabet=_LETTERS + "ABC 019١٢!#@?\n🔥-_", max_size=24)


@given(_patterns(), _TEXTS)
def test_re2_finds_what_re_finds(pattern: str, text: str) -> None:
    compiled = keyword(pattern)
    folded = fold(text)
    # Next to a piece that may be either kind (`.`, `\S`), \b is RE2's ASCII one: exact on
    # ASCII text only (the docs say so).
    assume(r"\b" not in compiled.syntax and r"\B" not in compiled.syntax or folded.isascii())
    expected = re.search(pattern, folded, re.IGNORECASE) is not None
    assert compiled.found(folded) is expected, compiled.syntax


@given(st.text(alphabet="a!b ", max_size=40))
def test_fixed_patterns_give_the_same_spans(text: str) -> None:
    for pattern in (r"a[!b]*b", r"[ab]+ ?!", r"(?:a|ab)(?:b|!)"):
        ours = compile_regex(pattern).search(text)
        theirs = re.search(pattern, text)
        assert (ours and ours.span()) == (theirs and theirs.span())
