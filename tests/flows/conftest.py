"""Fixtures for the flow tests: flows and templates written to a temp folder and checked the
way `bot check` does, a fixed clock value, and small event and contact builders."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from bot.clock import utc
from bot.events import Comment, Message, Platform, Postback, Referral
from bot.flows import CheckReport, ContactView, FlowSet, check_all, format_problem
from bot.policy import PolicyProfile

NOW = utc(2026, 3, 2, 11, 0, 0, 734_281)
ACCOUNT = "17841400000000001"


def write_tree(root: Path, files: Mapping[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")


Checker = Callable[..., CheckReport]
Builder = Callable[..., FlowSet]


@pytest.fixture
def check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Checker:
    """check(flows={name: yaml}, templates={name: text}, profile=None) -> CheckReport, with
    file names relative to the temp folder (flows/x.yaml, templates/y.j2)."""
    monkeypatch.chdir(tmp_path)

    def run(
        flows: Mapping[str, str],
        templates: Mapping[str, str] | None = None,
        profile: PolicyProfile | None = None,
    ) -> CheckReport:
        (tmp_path / "flows").mkdir(exist_ok=True)
        (tmp_path / "templates").mkdir(exist_ok=True)
        write_tree(tmp_path / "flows", flows)
        write_tree(tmp_path / "templates", templates or {})
        return check_all("flows", "templates", profile)

    return run


@pytest.fixture
def build(check: Checker) -> Builder:
    """build(flows_yaml, templates) -> FlowSet, failing the test on any error."""

    def run(
        flows_yaml: str,
        templates: Mapping[str, str] | None = None,
        profile: PolicyProfile | None = None,
    ) -> FlowSet:
        report = check({"test.yaml": flows_yaml}, templates or {}, profile)
        errors = [format_problem(p) for p in report.errors]
        assert report.flowset is not None, "\n".join(errors)
        return report.flowset

    return run


def comment(
    text: str,
    *,
    comment_id: str = "c1",
    user: str | None = "u1",
    media: str | None = "reel-1",
    platform: Platform = Platform.INSTAGRAM,
    parent: str | None = None,
    live: bool = False,
    at: datetime = NOW,
) -> Comment:
    return Comment(
        platform=platform,
        account_id=ACCOUNT,
        user_id=user,
        timestamp=at,
        key=f"comment:{comment_id}",
        comment_id=comment_id,
        text=text,
        media_id=media,
        parent_id=parent,
        live=live,
        username="alice_99",
    )


def dm(
    text: str | None,
    *,
    mid: str = "m1",
    payload: str | None = None,
    platform: Platform = Platform.INSTAGRAM,
    at: datetime = NOW,
    **extra: Any,
) -> Message:
    return Message(
        platform=platform,
        account_id=ACCOUNT,
        user_id="u1",
        timestamp=at,
        key=f"message:{mid}",
        mid=mid,
        text=text,
        quick_reply_payload=payload,
        **extra,
    )


def postback(payload: str, title: str | None = None) -> Postback:
    return Postback(
        platform=Platform.INSTAGRAM,
        account_id=ACCOUNT,
        user_id="u1",
        timestamp=NOW,
        key=f"postback:{payload}",
        payload=payload,
        title=title,
    )


def referral(ref: str) -> Referral:
    return Referral(
        platform=Platform.INSTAGRAM,
        account_id=ACCOUNT,
        user_id="u1",
        timestamp=NOW,
        key=f"referral:{ref}",
        ref=ref,
    )


def contact(**changes: Any) -> ContactView:
    values: dict[str, Any] = {
        "user_id": "u1",
        "platform": Platform.INSTAGRAM,
        "username": "alice_99",
        "name": "Alice Smith",
        "account_id": ACCOUNT,
        "account_name": "mybrand",
    }
    values.update(changes)
    return ContactView(**values)
