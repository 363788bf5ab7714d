"""Keyword matching: folding, modes, and the one deterministic flow an event starts."""

from __future__ import annotations

import random
import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.events import Attachment, Platform
from bot.flows import FlowSet, MatchMode, keyword_matches, normalize, words
from bot.flows.match import probe
from bot.flows.model import End, Flow, Trigger, TriggerType
from bot.flows.normalize import fold, joined

from .conftest import Builder, comment, dm, postback, referral

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def flow(
    fid: str,
    keywords: tuple[str, ...] = (),
    *,
    kind: TriggerType = TriggerType.COMMENT,
    match: MatchMode = MatchMode.WORD,
    media: tuple[str, ...] | None = None,
    priority: int = 0,
    **trigger: object,
) -> Flow:
    t = Trigger(type=kind, keywords=keywords, match=match, media=media, **trigger)  # type: ignore[arg-type]
    return Flow(id=fid, trigger=t, steps=(End(id="end"),), priority=priority)


def winner(flows: list[Flow], event: object) -> str | None:
    cand = FlowSet.build(flows).match(event)  # type: ignore[arg-type]
    return None if cand is None else cand.flow.id


@pytest.mark.parametrize(
    "text",
    [
        "Pricing!!",
        "PRICING",
        "pricíng",
        "ｐｒｉｃｉｎｇ",
        "what's the pricing?",
        "pricing🔥🔥",
        "💸pricing",
    ],
)
def test_the_issue_examples_all_match_pricing(text: str) -> None:
    assert keyword_matches("pricing", MatchMode.WORD, text)
    assert winner([flow("p", ("pricing",))], comment(text)) == "p"


def test_whole_words_do_not_match_inside_other_words() -> None:
    assert not keyword_matches("price", MatchMode.WORD, "prices are up")
    assert keyword_matches("price", MatchMode.ANY, "prices are up")
    assert not keyword_matches("art", MatchMode.WORD, "party")


def test_words_fold_case_accents_width_and_split_emoji() -> None:
    assert words("Ça VA?! ＨＥＬＬＯ👋🏽wörld") == ("ca", "va", "hello", "👋", "world")
    assert words("e\u0301te\u0301") == ("ete",)  # decomposed accents too
    assert words("") == ()
    assert fold("PRICÍNG!!") == "pricing!!"
    assert joined("  Free,  GIFT!! ") == "free gift"


def test_an_emoji_can_be_a_keyword() -> None:
    assert keyword_matches("🔥", MatchMode.WORD, "so good🔥🔥")
    assert winner([flow("fire", ("🔥",))], comment("love it 🔥")) == "fire"


def test_phrase_needs_consecutive_words() -> None:
    assert keyword_matches("free gift", MatchMode.PHRASE, "Is the FREE-gift still on?")
    assert not keyword_matches("free gift", MatchMode.PHRASE, "free shipping, no gift")
    f = flow("ph", ("free gift",), match=MatchMode.PHRASE)
    assert winner([f], comment("free... GIFT!")) == "ph"
    assert winner([f], comment("gift free")) is None


def test_substring_keywords_match_inside_words_and_across_spaces() -> None:
    flows = [
        flow("sub", ("link",), match=MatchMode.ANY),
        flow("two", ("d me",), match=MatchMode.ANY),
    ]
    assert winner(flows, comment("LINKS please")) == "sub"
    assert winner(flows, comment("send me")) == "two"
    assert winner(flows, comment("nothing here")) is None
    # remembered per word: the same word matches the same way the second time
    assert winner(flows, comment("links links")) == "sub"


def test_regex_keywords_see_folded_text_with_punctuation() -> None:
    f = flow("re", (r"\border\s*#?\d{3,}",), match=MatchMode.REGEX)
    assert winner([f], comment("Where is ORDER #12345?")) == "re"
    assert winner([f], comment("order 12")) is None


def _variants(draw: st.DrawFn, keyword: str) -> str:
    out = []
    for ch in keyword:
        ch = ch.upper() if draw(st.booleans()) else ch
        if ch.isalpha() and draw(st.integers(0, 3)) == 0:
            ch += draw(st.sampled_from(["\u0301", "\u0308", "\u0300", "\u0327"]))
        if ch.isascii() and ch.isalnum() and draw(st.integers(0, 4)) == 0:
            ch = chr(ord(ch) + 0xFEE0)  # full width
        out.append(ch)
    return "".join(out)


SURROUND = st.text(alphabet=" !?.,;:-'\"()🔥😍🙌💯❤️👀👍🏽\n", max_size=4)


@st.composite
def keyword_in_text(draw: st.DrawFn) -> tuple[str, str]:
    letters = "abcdefghijklmnopqrstuvwxyz0123456789áéíóúüñç"
    keyword = draw(st.text(alphabet=letters, min_size=1, max_size=12))
    before = draw(st.lists(st.sampled_from(["hi", "wow", "the", "¿qué?", "ok"]), max_size=3))
    after = draw(st.lists(st.sampled_from(["please", "now", "thx", "😍"]), max_size=3))
    text = (
        " ".join(before)
        + draw(SURROUND).replace("\n", " ")
        + " "
        + draw(SURROUND)
        + _variants(draw, keyword)
        + draw(SURROUND)
        + " "
        + " ".join(after)
    )
    return keyword, text


@FAST
@given(keyword_in_text())
def test_a_keyword_always_matches_itself_under_case_accents_width_and_punctuation(
    pair: tuple[str, str],
) -> None:
    keyword, text = pair
    assert keyword_matches(keyword, MatchMode.WORD, text), (keyword, text)
    assert keyword_matches(keyword, MatchMode.ANY, text), (keyword, text)
    index = FlowSet.build([flow("k", (keyword,))])
    assert index.match(comment(text)) is not None, (keyword, text)


def _slow_words(text: str) -> tuple[str, ...]:
    folded = unicodedata.normalize("NFKC", text).translate(normalize._WORDS)
    return tuple(unicodedata.normalize("NFC", folded).split())


@FAST
@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=60))
def test_the_ascii_fast_path_agrees_with_the_unicode_path(text: str) -> None:
    assert words(text) == _slow_words(text)
    assert fold(text) == unicodedata.normalize("NFC", text.translate(normalize._FOLD))


def test_priority_wins_first() -> None:
    flows = [flow("low", ("pricing",), media=("reel-1",)), flow("high", ("pricing",), priority=5)]
    assert winner(flows, comment("pricing")) == "high"


def test_then_specific_media_over_any_media() -> None:
    flows = [flow("any", ("pricing",)), flow("this_reel", ("pricing",), media=("reel-1",))]
    assert winner(flows, comment("pricing", media="reel-1")) == "this_reel"
    assert winner(flows, comment("pricing", media="reel-2")) == "any"


def test_then_whole_words_over_regex_over_substring_over_catch_all() -> None:
    flows = [
        flow("catch_all"),
        flow("sub", ("pric",), match=MatchMode.ANY),
        flow("re", ("pric.ng",), match=MatchMode.REGEX),
        flow("word", ("pricing",)),
    ]
    assert winner(flows, comment("pricing")) == "word"
    assert winner(flows[:3], comment("pricing")) == "re"
    assert winner(flows[:2], comment("pricing")) == "sub"
    assert winner(flows[:1], comment("pricing")) == "catch_all"


def test_then_longer_keyword_then_flow_id() -> None:
    longer = [
        flow("a_short", ("gift",), match=MatchMode.PHRASE),
        flow("z_long", ("free gift",), match=MatchMode.PHRASE),
    ]
    assert winner(longer, comment("free gift")) == "z_long"
    ties = [flow("b", ("gift",)), flow("a", ("gift",))]
    assert winner(ties, comment("gift")) == "a"


@FAST
@given(st.randoms(use_true_random=False))
def test_the_choice_does_not_depend_on_flow_order(rng: random.Random) -> None:
    flows = [
        flow("f1", ("deal",)),
        flow("f2", ("deal",), priority=1),
        flow("f3", ("deal", "promo"), media=("reel-1",), priority=1),
        flow("f4", ("dea",), match=MatchMode.ANY, priority=1),
        flow("f5", (), priority=1, media=("reel-1",)),
    ]
    rng.shuffle(flows)
    assert winner(flows, comment("DEAL!", media="reel-1")) == "f3"
    assert winner(flows, comment("DEAL!", media="reel-9")) == "f2"


def test_replies_to_comments_only_when_included() -> None:
    excluded = [flow("top", ("pricing",))]
    included = [flow("all", ("pricing",), include_replies=True)]
    reply = comment("pricing", parent="c0")
    assert winner(excluded, reply) is None
    assert winner(included, reply) == "all"


def test_live_comments_only_start_live_flows() -> None:
    flows = [flow("post", ("pricing",)), flow("live", ("pricing",), live=True)]
    assert winner(flows, comment("pricing", live=True)) == "live"
    assert winner(flows, comment("pricing")) == "post"


def test_own_comments_and_disabled_flows_never_start() -> None:
    own = comment("pricing", user="17841400000000001")
    assert winner([flow("p", ("pricing",))], own) is None
    off = Flow(
        id="off",
        trigger=Trigger(type=TriggerType.COMMENT, keywords=("pricing",)),
        steps=(End(id="e"),),
        enabled=False,
    )
    assert winner([off], comment("pricing")) is None


def test_platforms_are_respected() -> None:
    ig_only = Flow(
        id="ig",
        trigger=Trigger(type=TriggerType.COMMENT, keywords=("pricing",)),
        steps=(End(id="e"),),
        platforms=frozenset({Platform.INSTAGRAM}),
    )
    assert winner([ig_only], comment("pricing", platform=Platform.MESSENGER)) is None
    assert winner([ig_only], comment("pricing")) == "ig"


def test_message_kinds_pick_their_triggers() -> None:
    flows = [
        flow("dm", ("menu",), kind=TriggerType.DM),
        flow("dm_any", kind=TriggerType.DM),
        flow("qr", kind=TriggerType.QUICK_REPLY, payloads=("MENU_PRICING",)),
        flow("pb", kind=TriggerType.POSTBACK, payloads=("GET_STARTED",)),
        flow("ref", kind=TriggerType.REFERRAL, payloads=("guide",)),
        flow("mention", kind=TriggerType.STORY_MENTION),
        flow("story", ("love",), kind=TriggerType.STORY_REPLY),
    ]
    assert winner(flows, dm("MENU please")) == "dm"
    assert winner(flows, dm("anything else")) == "dm_any"
    assert winner(flows, dm("Pricing", payload="MENU_PRICING")) == "qr"
    assert winner(flows, dm("Other", payload="NOT_KNOWN")) == "dm_any"  # falls back to DM text
    assert winner(flows, postback("GET_STARTED")) == "pb"
    assert winner(flows, postback("get_started")) is None  # payloads are exact
    assert winner(flows, referral("guide")) == "ref"
    assert winner(flows, dm("hi", referral_ref="guide")) == "ref"
    mention = dm(None, attachments=(Attachment("story_mention", "https://cdn/x"),))
    assert winner(flows, mention) == "mention"
    assert winner(flows, dm("love this", reply_to_story_id="s1")) == "story"
    assert winner(flows, dm("menu", is_echo=True)) is None


def test_a_flowset_built_from_yaml_matches_the_same(build: Builder) -> None:
    fs = build(
        """
        flows:
          - id: y
            trigger: {type: comment, media: [17890000000000001], keywords: [Preço]}
            steps: [{id: r, type: private_reply, template: t.j2}]
        """,
        {"t.j2": "hi"},
    )
    assert fs.match(comment("PRECO?", media="17890000000000001")) is not None
    assert fs.match(comment("PRECO?", media="other")) is None


@FAST
@given(
    text=st.sampled_from(["pricing", "PRICE!", "free gift", "nothing", "links 🔥"]),
    media=st.sampled_from(["reel-1", "reel-2", None]),
    parent=st.sampled_from([None, "c0"]),
    live=st.booleans(),
    own=st.booleans(),
)
def test_the_comment_fast_path_agrees_with_probe(
    text: str, media: str | None, parent: str | None, live: bool, own: bool
) -> None:
    flows = [
        flow("a", ("pricing",), media=("reel-1",)),
        flow("b", ("price",), include_replies=True),
        flow("c", ("free gift",), match=MatchMode.PHRASE, live=True),
        flow("d", ("link",), match=MatchMode.ANY),
        flow("e"),
    ]
    index = FlowSet.build(flows).index
    user = "17841400000000001" if own else "u1"
    ev = comment(text, media=media, parent=parent, live=live, user=user)
    pr = probe(ev)
    via_probe = None if pr is None else index.match_probe(pr)
    assert index.match(ev) == via_probe
