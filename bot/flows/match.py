"""Which flow an event starts: an index built once per FlowSet, so matching a comment costs
about one dictionary look-up per word in it, however many flows there are (issue 3, bench).

One event starts at most one flow, chosen deterministically: higher `priority` first, then
the more specific trigger (named media over any media; whole words over regex over substring
over "every comment"; a longer keyword first), then the flow id.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from operator import attrgetter
from typing import NamedTuple

from bot.events import Comment, CommentVerb, Event, Message, Platform, Postback, Referral
from bot.flows.model import Flow, MatchMode, TriggerType
from bot.flows.normalize import fold, joined, words
from bot.flows.regex import BoundedPattern, RegexRefused, gates
from bot.flows.regex import keyword as regex_keyword

__all__ = [
    "ANY_MEDIA",
    "Candidate",
    "Claim",
    "MatchIndex",
    "Probe",
    "claims",
    "keyword_matches",
    "probe",
]

ANY_MEDIA = "*"
_PAYLOAD_KINDS = frozenset({TriggerType.POSTBACK, TriggerType.QUICK_REPLY, TriggerType.REFERRAL})
_MODE_RANK = {MatchMode.WORD: 0, MatchMode.PHRASE: 0, MatchMode.REGEX: 1, MatchMode.ANY: 2}
_CATCH_ALL_RANK = 3

Rank = tuple[int, int, int, int, str]


@dataclass(frozen=True, slots=True)
class Candidate:
    """A flow the event matches, and the keyword (as the creator wrote it) that matched."""

    flow: Flow
    keyword: str | None
    rank: Rank = field(compare=False)
    include_replies: bool = field(default=True, compare=False)


class Probe(NamedTuple):
    """What triggers look at in an event: (trigger kind, text or payload) pairs in the order
    they are tried, plus the comment's media, live flag and whether it is a reply. (A named
    tuple, not a frozen dataclass: one is built per event, and this is the hot path.)"""

    platform: Platform
    tries: tuple[tuple[TriggerType, str], ...]
    media_id: str | None = None
    live: bool = False
    is_reply: bool = False


_COMMENT = TriggerType.COMMENT
_ADD = CommentVerb.ADD


def probe(event: Event) -> Probe | None:
    """The trigger kinds `event` can start, or None (echoes, reads, the account's own ...)."""
    if event.standby:
        return None
    p = event.platform
    if isinstance(event, Comment):
        # The hot path (bench/match.py): enum attribute access is slow, hence the constants.
        own = event.user_id is not None and event.user_id == event.account_id
        if own or event.verb is not _ADD:
            return None
        media = event.media_id or event.post_id
        return Probe(p, ((_COMMENT, event.text),), media, event.live, event.parent_id is not None)
    if isinstance(event, Message):
        if event.is_echo or event.is_deleted:
            return None
        text = event.text or ""
        if event.is_story_mention:
            return Probe(p, ((TriggerType.STORY_MENTION, text),))
        if event.is_story_reply:
            return Probe(p, ((TriggerType.STORY_REPLY, text),))
        tries: list[tuple[TriggerType, str]] = []
        if event.quick_reply_payload is not None:
            tries.append((TriggerType.QUICK_REPLY, event.quick_reply_payload))
        if event.referral_ref is not None:
            tries.append((TriggerType.REFERRAL, event.referral_ref))
        tries.append((TriggerType.DM, text))
        return Probe(p, tuple(tries))
    if isinstance(event, Postback):
        tries = [(TriggerType.POSTBACK, event.payload)]
        if event.referral_ref is not None:
            tries.append((TriggerType.REFERRAL, event.referral_ref))
        return Probe(p, tuple(tries))
    if isinstance(event, Referral) and event.ref is not None:
        return Probe(p, ((TriggerType.REFERRAL, event.ref),))
    return None


@dataclass(frozen=True, slots=True)
class Claim:
    """One keyword (or payload) a flow claims, normalised: two flows with the same claim on
    the same media and platform compete for the same comments (`bot check` reports it)."""

    kind: TriggerType
    platform: Platform
    live: bool
    media: str
    key: tuple[str, ...]
    mode: MatchMode | None
    keyword: str | None
    index: int | None


def claims(flow: Flow) -> Iterator[Claim]:
    """Every claim of `flow`; unusable keywords (the validator reports them) are skipped."""
    t = flow.trigger
    media = t.media if t.media is not None else (ANY_MEDIA,)
    for platform in sorted(flow.platforms):
        for m in media:
            if t.type in _PAYLOAD_KINDS:
                for i, payload in enumerate(t.payloads):
                    yield Claim(t.type, platform, t.live, m, ("=", payload), None, payload, i)
                continue
            if not t.keywords:
                yield Claim(t.type, platform, t.live, m, ("*",), None, None, None)
            for i, kw in enumerate(t.keywords):
                key = _key(kw, t.match)
                if key is not None:
                    yield Claim(t.type, platform, t.live, m, key, t.match, kw, i)


def _key(keyword: str, mode: MatchMode) -> tuple[str, ...] | None:
    if mode is MatchMode.REGEX:
        return ("re", keyword)
    if mode is MatchMode.ANY:
        text = joined(keyword)
        return ("sub", text) if text else None
    toks = words(keyword)
    if not toks or (mode is MatchMode.WORD and len(toks) > 1):
        return None
    return ("w", *toks)


class _Automaton:
    """Aho-Corasick over characters: every substring keyword found in one pass of the text."""

    __slots__ = ("_fail", "_goto", "_out")

    def __init__(self, patterns: Iterable[tuple[str, Candidate]]) -> None:
        self._goto: list[dict[str, int]] = [{}]
        self._out: list[list[Candidate]] = [[]]
        for text, cand in patterns:
            s = 0
            for ch in text:
                nxt = self._goto[s].get(ch)
                if nxt is None:
                    nxt = len(self._goto)
                    self._goto[s][ch] = nxt
                    self._goto.append({})
                    self._out.append([])
                s = nxt
            self._out[s].append(cand)
        self._fail = [0] * len(self._goto)
        queue = list(self._goto[0].values())
        for s in queue:
            for ch, nxt in self._goto[s].items():
                queue.append(nxt)
                f = self._fail[s]
                while f and ch not in self._goto[f]:
                    f = self._fail[f]
                target = self._goto[f].get(ch, 0)
                self._fail[nxt] = target if target != nxt else 0
                self._out[nxt] = self._out[nxt] + self._out[self._fail[nxt]]

    def search(self, text: str) -> list[Candidate]:
        goto, fail, out = self._goto, self._fail, self._out
        found: list[Candidate] = []
        s = 0
        for ch in text:
            while s and ch not in goto[s]:
                s = fail[s]
            s = goto[s].get(ch, 0)
            if out[s]:
                found.extend(out[s])
        return found


_Phrases = list[tuple[tuple[str, ...], Candidate]]
_Regex = tuple[BoundedPattern, Candidate]


class _Table:
    """The text claims of one (trigger kind, platform, live, media) key.

    `index` maps a word to the candidates it matches on its own and the phrases starting with
    it, so a comment costs one intersection of its words with the index (C-level, over the
    smaller side): about O(words), however many flows there are. A substring keyword without
    a space can only occur inside one word, so its hits are learnt into `index` per word the
    first time the word is seen; words repeat across comments. Substring keywords with spaces
    scan the joined text.
    """

    __slots__ = (
        "_base",
        "_seen",
        "_single",
        "catch_all",
        "index",
        "multi",
        "regex_groups",
        "regexes",
    )
    _LEARN_MAX = 100_000

    def __init__(self) -> None:
        self.index: dict[str, tuple[list[Candidate], _Phrases]] = {}
        self._base = self.index
        self.regexes: list[_Regex] = []
        self.regex_groups: list[tuple[BoundedPattern | None, list[_Regex]]] = []
        self.catch_all: list[Candidate] = []
        self.multi: _Automaton | None = None
        self._single: _Automaton | None = None
        self._seen: set[str] = set()

    def add_word(self, word: str, cand: Candidate) -> None:
        self.index.setdefault(word, ([], []))[0].append(cand)

    def add_phrase(self, seq: tuple[str, ...], cand: Candidate) -> None:
        self.index.setdefault(seq[0], ([], []))[1].append((seq, cand))

    def add_substrings(self, patterns: list[tuple[str, Candidate]]) -> None:
        single = [(t, c) for t, c in patterns if " " not in t]
        multi = [(t, c) for t, c in patterns if " " in t]
        self._single = _Automaton(single) if single else None
        self.multi = _Automaton(multi) if multi else None
        if self._single is not None:
            self.index = dict(self._base)

    def seal_regexes(self) -> None:
        """One linear pass tells whether any regex keyword matches (most comments match
        none); only then is each one asked (bench/match.py, the regex figure)."""
        groups = gates([p for p, _ in self.regexes])
        self.regex_groups = [(g, [self.regexes[i] for i in members]) for g, members in groups]

    def _learn(self, toks: tuple[str, ...]) -> None:
        assert self._single is not None
        if len(self._seen) > self._LEARN_MAX:
            self._seen.clear()
            self.index = dict(self._base)
        for tok in set(toks) - self._seen:
            hits = self._single.search(tok)
            if hits:
                cands, phrases = self._base.get(tok, ([], []))
                self.index[tok] = (cands + hits, phrases)
        self._seen.update(toks)

    def collect(self, toks: tuple[str, ...], text: str, found: list[Candidate]) -> None:
        """Append every candidate whose keyword occurs in `text` (whose words are `toks`)."""
        if self._single is not None and not self._seen.issuperset(toks):
            self._learn(toks)
        index = self.index
        for tok in index.keys() & toks:
            cands, phrases = index[tok]
            found += cands
            if phrases:
                starts = [i for i, t in enumerate(toks) if t == tok]
                for seq, cand in phrases:
                    if any(toks[i : i + len(seq)] == seq for i in starts):
                        found.append(cand)
        if self.multi is not None:
            found += self.multi.search(" ".join(toks))
        if self.regexes:
            folded = fold(text)
            for gate, members in self.regex_groups:
                if gate is None or gate.found(folded):
                    found += [c for p, c in members if p.found(folded)]
        found += self.catch_all


def _rank(flow: Flow, media: str, mode: MatchMode | None, length: int) -> Rank:
    mode_rank = _CATCH_ALL_RANK if mode is None else _MODE_RANK[mode]
    return (-flow.priority, 1 if media == ANY_MEDIA else 0, mode_rank, -length, flow.id)


def _best(found: list[Candidate], is_reply: bool) -> Candidate | None:
    if is_reply:
        found = [c for c in found if c.include_replies]
    return min(found, key=_RANK_OF) if found else None


_RANK_OF = attrgetter("rank")
_TableKey = tuple[TriggerType, Platform, bool, str]


class MatchIndex:
    """Keyword -> flows, by trigger kind, platform and media; disabled flows are left out."""

    def __init__(self, flows: Iterable[Flow]) -> None:
        self._tables: dict[_TableKey, _Table] = {}
        self._payloads: dict[tuple[TriggerType, Platform], dict[str, list[Candidate]]] = {}
        substrings: dict[_TableKey, list[tuple[str, Candidate]]] = defaultdict(list)
        for flow in flows:
            if flow.enabled:
                self._add(flow, substrings)
        for key, pats in substrings.items():
            self._tables[key].add_substrings(pats)
        for table in self._tables.values():
            table.seal_regexes()
        # By scope, then media: one look-up per event, then one string look-up. The scope is
        # keyed by the enum members' ids: they are singletons, and hashing an Enum runs Python
        # code, which on the hot path costs more than the rest of the look-up.
        self._scopes: dict[tuple[int, int, bool], dict[str, _Table]] = {}
        for (kind, platform, live, media), table in self._tables.items():
            self._scopes.setdefault((id(kind), id(platform), live), {})[media] = table

    def _add(self, flow: Flow, substrings: dict[_TableKey, list[tuple[str, Candidate]]]) -> None:
        replies = flow.trigger.include_replies or flow.trigger.type is not TriggerType.COMMENT
        for c in claims(flow):
            length = len(c.key[1]) if len(c.key) == 2 else len(" ".join(c.key[1:]))
            cand = Candidate(flow, c.keyword, _rank(flow, c.media, c.mode, length), replies)
            tag = c.key[0]
            if tag == "=":
                by_payload = self._payloads.setdefault((c.kind, c.platform), {})
                by_payload.setdefault(c.key[1], []).append(cand)
                continue
            key = (c.kind, c.platform, c.live, c.media)
            t = self._tables.setdefault(key, _Table())
            if tag == "*":
                t.catch_all.append(cand)
            elif tag == "sub":
                substrings[key].append((c.key[1], cand))
            elif tag == "re":
                try:
                    t.regexes.append((regex_keyword(c.key[1]), cand))
                except RegexRefused:
                    continue  # `bot check` reports it
            elif len(c.key) == 2:
                t.add_word(c.key[1], cand)
            else:
                t.add_phrase(c.key[1:], cand)

    def match(self, event: Event) -> Candidate | None:
        """The one flow `event` starts, or None."""
        if type(event) is Comment:
            # The hot path (a viral reel): the same as probe() + match_probe(), minus the Probe.
            own = event.user_id is not None and event.user_id == event.account_id
            if event.standby or own or event.verb is not _ADD:
                return None
            media = event.media_id or event.post_id
            reply = event.parent_id is not None
            return self._text(_COMMENT, event.platform, event.live, media, reply, event.text)
        pr = probe(event)
        return None if pr is None else self.match_probe(pr)

    def match_probe(self, pr: Probe) -> Candidate | None:
        for kind, value in pr.tries:
            if kind is not _COMMENT and kind in _PAYLOAD_KINDS:
                found = self._payloads.get((kind, pr.platform), {}).get(value)
                best = _best(found, False) if found else None
            else:
                best = self._text(kind, pr.platform, pr.live, pr.media_id, pr.is_reply, value)
            if best is not None:
                return best
        return None

    def _text(
        self,
        kind: TriggerType,
        platform: Platform,
        live: bool,
        media_id: str | None,
        is_reply: bool,
        text: str,
    ) -> Candidate | None:
        by_media = self._scopes.get((id(kind), id(platform), live))
        if by_media is None:
            return None
        t_any = by_media.get(ANY_MEDIA)
        t_media = by_media.get(media_id) if media_id is not None else None
        if t_any is None and t_media is None:
            return None
        toks = words(text)
        found: list[Candidate] = []
        if t_any is not None:
            t_any.collect(toks, text, found)
        if t_media is not None:
            t_media.collect(toks, text, found)
        return _best(found, is_reply) if found else None


def keyword_matches(keyword: str, mode: MatchMode, text: str) -> bool:
    """Whether one keyword matches `text` under `mode` (branch cases use this; triggers use
    the index, which gives the same answers)."""
    if mode is MatchMode.REGEX:
        try:
            return regex_keyword(keyword).found(fold(text))
        except RegexRefused:
            return False
    if mode is MatchMode.ANY:
        needle = joined(keyword)
        return bool(needle) and needle in joined(text)
    seq, toks = words(keyword), words(text)
    n = len(seq)
    return n > 0 and any(toks[i : i + n] == seq for i in range(len(toks) - n + 1))
