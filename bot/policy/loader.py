"""Read a policy profile from YAML: overrides merged onto the defaults (POLICY.md intro).

This is the edge of the policy package (it may read one file); everything else is pure. Every
mistake raises `ProfileError` naming the key path, so an operator knows what to fix.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Final

import yaml

from bot.boundedyaml import PROFILE_LIMITS, YamlLimitError, load, read_text
from bot.errors import ConfigError
from bot.events import Platform
from bot.policy.profile import PlatformProfile, PolicyProfile, default_profile, parse_duration

__all__ = ["DEFAULT_PROFILE_PATH", "ProfileError", "load_profile", "profile_from_mapping"]

DEFAULT_PROFILE_PATH: Final = Path(__file__).with_name("default_profile.yaml")

_TAG = re.compile(r"[A-Z][A-Z0-9_]*")


class ProfileError(ConfigError):
    """The policy profile has an unknown key or a wrong value; the message names the key."""

    def __init__(self, key: str, problem: str, source: str | None = None) -> None:
        self.key = key
        self.problem = problem
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{key}: {problem}" if key else f"{where}{problem}")


def _duration(key: str, value: Any) -> Any:
    if isinstance(value, str):
        try:
            d = parse_duration(value)
        except ValueError:
            pass
        else:
            if d.total_seconds() > 0:
                return d
            raise ProfileError(key, "expected a duration longer than zero")
    raise ProfileError(key, f"expected a duration like 24h, 7d, 90m or 3600s, got {value!r}")


def _duration_or_zero(key: str, value: Any) -> Any:
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except ValueError:
            pass
    raise ProfileError(key, f"expected a duration like 15s, 36h or 0s, got {value!r}")


def _optional_duration(key: str, value: Any) -> Any:
    return None if value is None else _duration(key, value)


def _bool(key: str, value: Any) -> Any:
    if isinstance(value, bool):
        return value
    raise ProfileError(key, f"expected true or false, got {value!r}")


def _int(key: str, value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    raise ProfileError(key, f"expected a whole number above zero, got {value!r}")


def _optional_int(key: str, value: Any) -> Any:
    return None if value is None else _int(key, value)


def _tags(key: str, value: Any) -> Any:
    if not isinstance(value, list):
        raise ProfileError(
            key, f"expected a list of tag names like [ACCOUNT_UPDATE], got {value!r}"
        )
    tags = set()
    for i, tag in enumerate(value):
        if not isinstance(tag, str) or not _TAG.fullmatch(tag):
            raise ProfileError(f"{key}[{i}]", f"expected an upper-case tag name, got {tag!r}")
        if tag == "HUMAN_AGENT":
            raise ProfileError(
                f"{key}[{i}]",
                "HUMAN_AGENT is for humans only; use human_agent_enabled instead",
            )
        tags.add(tag)
    return frozenset(tags)


_D, _OD, _B, _I, _OI = _duration, _optional_duration, _bool, _int, _optional_int

# How each settable field is read; a test checks this covers every PlatformProfile field.
FIELD_READERS: Final[Mapping[str, Callable[[str, Any], Any]]] = {
    "standard_window": _D,
    "human_agent_window": _D,
    "human_agent_enabled": _B,
    "private_reply_window": _D,
    "live_comment_window": _D,
    "ad_referral_window": _OD,
    "one_time_notifications": _B,
    "marketing_messages": _B,
    "message_tags": _tags,
    "tag_window": _D,
    "token_max_age": _D,
    "send_margin": _duration_or_zero,
    "comment_time_margin": _duration_or_zero,
    "private_reply_strict": _B,
    "echo_metadata": _B,
    "optin_request_cooldown": _D,
    "optin_requests_per_week": _OI,
    "optin_requests_per_day": _OI,
    "text_max_bytes": _OI,
    "text_max_chars": _OI,
    "quick_replies_max": _I,
    "quick_reply_title_max": _I,
    "buttons_max": _I,
    "optin_title_max": _I,
    "automated_dms_per_hour": _I,
    "private_replies_per_hour": _I,
    "live_private_replies_per_second": _I,
    "calls_per_second": _I,
    "conversations_api_per_second": _I,
    "sends_per_engaged_user_per_day": _OI,
}


def _platform(base: PlatformProfile, name: str, overrides: Any) -> PlatformProfile:
    if overrides is None:
        return base
    if not isinstance(overrides, Mapping):
        raise ProfileError(name, f"expected a mapping of settings, got {overrides!r}")
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        path = f"{name}.{key}"
        reader = FIELD_READERS.get(key) if isinstance(key, str) else None
        if reader is None:
            close = difflib.get_close_matches(str(key), FIELD_READERS, n=1)
            hint = f"did you mean {close[0]}?" if close else "default_profile.yaml lists them all"
            raise ProfileError(path, f"unknown setting; {hint}")
        changes[key] = reader(path, value)
    return replace(base, **changes)


def profile_from_mapping(data: Any, base: PolicyProfile | None = None) -> PolicyProfile:
    """Merge already-parsed overrides (`{instagram: {...}, messenger: {...}}`) onto `base`."""
    profile = base or default_profile()
    if data is None:
        return profile
    if not isinstance(data, Mapping):
        raise ProfileError("", f"expected a mapping with instagram and messenger, got {data!r}")
    for key, overrides in data.items():
        try:
            platform = Platform(key)
        except ValueError:
            names = ", ".join(p.value for p in Platform)
            raise ProfileError(str(key), f"unknown platform (known: {names})") from None
        current = profile.for_platform(platform)
        profile = profile.with_platform(_platform(current, platform.value, overrides))
    return profile


def load_profile(source: str | Path | Mapping[str, Any] | None) -> PolicyProfile:
    """Load a profile from a YAML file, YAML text or a mapping; None gives the defaults.

    A `Path`, or a one-line string ending in .yaml/.yml, is read as a file; any other string is
    YAML text. Raises `ProfileError` naming the key (and file) on any mistake.
    """
    if source is None:
        return default_profile()
    if isinstance(source, Mapping):
        return profile_from_mapping(source)
    where: str | None = None
    if isinstance(source, Path) or (
        "\n" not in source and source.strip().lower().endswith((".yaml", ".yml"))
    ):
        where = str(source)
        try:
            text = read_text(Path(source), PROFILE_LIMITS)
        except OSError as exc:
            raise ProfileError(
                "", f"cannot read the policy profile: {exc.strerror}", where
            ) from exc
        except UnicodeDecodeError:
            raise ProfileError("", "the policy profile is not UTF-8 text", where) from None
        except YamlLimitError as exc:
            raise _refused(exc, where) from None
    else:
        text = source
    try:
        data = load(text, PROFILE_LIMITS)
    except YamlLimitError as exc:
        raise _refused(exc, where) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ProfileError("", f"not valid YAML{at}", where) from exc
    try:
        return profile_from_mapping(data)
    except ProfileError as exc:
        raise ProfileError(exc.key, exc.problem, where) from None


def _refused(exc: YamlLimitError, where: str | None) -> ProfileError:
    return ProfileError("", exc.message, f"{where or '<policy profile>'}:{exc.line}:{exc.column}")


def platform_field_names() -> frozenset[str]:
    """Names of the settable `PlatformProfile` fields (all but `platform`)."""
    return frozenset(f.name for f in fields(PlatformProfile) if f.name != "platform")
