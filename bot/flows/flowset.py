"""A FlowSet: the flows, their templates, the policy profile they were checked against and the
match index, all built together so a reload swaps one value (issue 3, item 7)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from bot.events import Event
from bot.flows.match import Candidate, MatchIndex
from bot.flows.model import Flow
from bot.policy import PolicyProfile, default_profile
from bot.templates import TemplateSet

__all__ = ["FlowSet"]


@dataclass(frozen=True, slots=True)
class FlowSet:
    flows: tuple[Flow, ...]
    templates: TemplateSet = field(compare=False)
    profile: PolicyProfile = field(default_factory=default_profile, compare=False)
    index: MatchIndex = field(init=False, compare=False, repr=False)
    _by_id: Mapping[str, Flow] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", MatchIndex(self.flows))
        object.__setattr__(self, "_by_id", {f.id: f for f in self.flows})

    @classmethod
    def build(
        cls,
        flows: Iterable[Flow],
        templates: TemplateSet | None = None,
        profile: PolicyProfile | None = None,
    ) -> FlowSet:
        return cls(
            tuple(flows),
            templates if templates is not None else TemplateSet({}),
            profile if profile is not None else default_profile(),
        )

    def get(self, flow_id: str) -> Flow | None:
        return self._by_id.get(flow_id)

    def match(self, event: Event) -> Candidate | None:
        """The one enabled flow `event` would start (guards not applied)."""
        return self.index.match(event)
