"""Message templates: Jinja2 in an immutable sandbox, strict about undefined names, with the
platform's text limits enforced before anything is sent (POLICY.md §3; issue 3, item 5).

A template renders completely or raises `TemplateFailure`: never half a message. Templates see
plain dicts only (contact, comment or message, flow, account, answers, topic), so a hostile or
careless template can't reach Python internals or the bot's configuration. Sources are read
once into memory (`TemplateSet.from_dir`), so rendering does no I/O and a reload is a new set.
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from jinja2 import BaseLoader, Environment, StrictUndefined, TemplateNotFound, Undefined, nodes
from jinja2.exceptions import SecurityError, TemplateSyntaxError, UndefinedError

from bot.errors import BotError
from bot.policy import PlatformProfile, text_fits
from bot.template_budget import TIMER, OverBudget, budget
from bot.template_sandbox import BudgetedSandbox

__all__ = [
    "Rendered",
    "TemplateFailure",
    "TemplateSet",
    "first_name",
    "truncate_bytes",
    "truncate_for_platform",
]

_SKIP_SUFFIXES = (".md",)
_PROFILE: contextvars.ContextVar[PlatformProfile | None] = contextvars.ContextVar(
    "template_platform_profile", default=None
)
_HINT = re.compile(
    r"'([^']+)' is undefined|has no attribute '([^']+)'|undefined: ([\w.]+) is not defined"
)


class TemplateFailure(BotError):
    """A template could not be rendered into a message that may be sent; nothing was sent.
    Fix the template named in the message (`bot check` finds most of these beforehand)."""

    def __init__(
        self, template: str, reason: str, line: int | None = None, *, over_budget: bool = False
    ) -> None:
        self.template = template
        self.reason = reason
        self.line = line
        self.over_budget = over_budget  # steps, text or time: the input decided, not a bug
        at = f" (line {line})" if line else ""
        super().__init__(f"template {template}{at}: {reason}")

    @property
    def hint(self) -> str | None:
        """The undefined name or attribute, when that is what failed."""
        m = _HINT.search(self.reason)
        if m is None:
            return None
        return m.group(1) or m.group(2) or m.group(3).rsplit(".", 1)[-1]


@dataclass(frozen=True, slots=True)
class Rendered:
    text: str


def _check_undefined(value: Any) -> None:
    if isinstance(value, Undefined):
        str(value)  # StrictUndefined raises here, naming what is missing


def first_name(value: Any, fallback: str = "there") -> str:
    """The first word of a name (given a contact dict or a string), else `fallback`."""
    _check_undefined(value)
    if isinstance(value, Mapping):
        value = value.get("first_name") or value.get("name")
    if not isinstance(value, str) or not value.strip():
        return fallback
    return value.split()[0]


def truncate_bytes(value: Any, limit: int, end: str = "…") -> str:
    """Cut to at most `limit` UTF-8 bytes without splitting a character."""
    _check_undefined(value)
    text = str(value)
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    room = max(limit - len(end.encode("utf-8")), 0)
    return data[:room].decode("utf-8", "ignore") + end


def truncate_for_platform(value: Any, end: str = "…") -> str:
    """Cut to the text limit of the platform the message is for (bytes or characters)."""
    _check_undefined(value)
    text = str(value)
    profile = _PROFILE.get()
    if profile is None:
        return text
    if profile.text_max_bytes is not None:
        text = truncate_bytes(text, profile.text_max_bytes, end)
    if profile.text_max_chars is not None and len(text) > profile.text_max_chars:
        text = text[: max(profile.text_max_chars - len(end), 0)] + end
    return text


class _Sandbox(BudgetedSandbox):
    """The immutable sandbox, every render under a budget of steps, text and time, so a
    template can't eat the memory or hold the event loop (bot/template_budget.py)."""


class _MemoryLoader(BaseLoader):
    """Sources held in memory; the file name is kept so tracebacks give template lines."""

    def __init__(self, sources: Mapping[str, str], files: Mapping[str, str]) -> None:
        self._sources = sources
        self._files = files

    def get_source(
        self, environment: Environment, template: str
    ) -> tuple[str, str | None, Callable[[], bool] | None]:
        if template not in self._sources:
            raise TemplateNotFound(template)
        return self._sources[template], self._files.get(template, template), lambda: True


def _environment(sources: Mapping[str, str], files: Mapping[str, str]) -> _Sandbox:
    env = _Sandbox(
        loader=_MemoryLoader(sources, files),
        undefined=StrictUndefined,
        autoescape=False,  # DMs are text, not HTML
        trim_blocks=True,
        lstrip_blocks=True,
        cache_size=-1,
        auto_reload=False,
    )
    for name in ("lipsum", "cycler", "joiner"):
        env.globals.pop(name, None)
    env.add_filter("first_name", first_name)
    env.add_filter("truncate_bytes", truncate_bytes)
    env.add_filter("truncate_for_platform", truncate_for_platform)
    return env


def _template_line(tb: TracebackType | None, filename: str) -> int | None:
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _reason(exc: BaseException) -> str:
    if isinstance(exc, UndefinedError):
        return f"undefined: {exc.message}"
    if isinstance(exc, SecurityError):
        return f"blocked by the sandbox: {exc}"
    if isinstance(exc, TemplateSyntaxError):
        return f"syntax error: {exc.message}"
    return f"{type(exc).__name__}: {exc}"


class TemplateSet:
    """Every template of a templates folder, compiled lazily, rendered without I/O."""

    def __init__(self, sources: Mapping[str, str], root: Path | str | None = None) -> None:
        self._sources = dict(sources)
        base = Path(root) if root is not None else None
        self._files = {n: str(base / n) if base is not None else n for n in self._sources}
        self._env = _environment(self._sources, self._files)

    @classmethod
    def from_dir(cls, root: Path | str) -> tuple[TemplateSet, dict[str, str]]:
        """Read every template under `root` (all files but hidden ones and *.md); a file or
        folder that resolves outside `root` is not read (bot/rootfiles.py).

        Returns the set and the files that could not be read or were refused, name -> reason.
        """
        from bot.rootfiles import files_under

        base = Path(root)
        sources: dict[str, str] = {}
        unreadable: dict[str, str] = {}
        listing = files_under(
            base, "the templates folder", lambda name: not name.endswith(_SKIP_SUFFIXES)
        )
        for found in listing.files:
            try:
                sources[found.rel] = found.real.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                unreadable[found.rel] = str(getattr(exc, "strerror", None) or exc)
        for refused in listing.refused:
            unreadable[refused.rel or "."] = refused.reason
        return cls(sources, base), unreadable

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._sources)

    def source(self, name: str) -> str:
        return self._sources[name]

    def file_of(self, name: str) -> str:
        """The template's file, as problems and logs name it."""
        return self._files.get(name, name)

    def syntax_tree(self, name: str) -> nodes.Template:
        """The parsed template, for static checks (`compile_error` first: this raises)."""
        return self._env.parse(self._sources[name], name, self.file_of(name))

    def compile_error(self, name: str) -> TemplateFailure | None:
        """The syntax error of template `name`, if any (with its line)."""
        try:
            self._env.get_template(name)
        except TemplateSyntaxError as exc:
            return TemplateFailure(name, _reason(exc), exc.lineno)
        except TemplateNotFound:
            return TemplateFailure(name, "no such template")
        return None

    def render(
        self,
        name: str,
        context: Mapping[str, Any],
        platform_profile: PlatformProfile,
        *,
        check_limit: bool = True,
        timer: Callable[[], float] | None = None,
    ) -> Rendered:
        """Render `name` with `context`; raise `TemplateFailure` on any problem, including a
        text over the platform's limit (POLICY.md §3) or over the render budget (steps, text,
        CPU time by `timer`, by default the engine's clock: `TIMER`), so no partial message
        ever leaves."""
        token = _PROFILE.set(platform_profile)
        try:
            template = self._env.get_template(name)
            with budget(timer or TIMER.get()):
                text = template.render(dict(context))
        except TemplateNotFound:
            raise TemplateFailure(name, "no such template") from None
        except TemplateSyntaxError as exc:
            raise TemplateFailure(name, _reason(exc), exc.lineno) from None
        except OverBudget as exc:
            line = _template_line(exc.__traceback__, self.file_of(name))
            raise TemplateFailure(name, exc.reason, line, over_budget=True) from None
        except Exception as exc:  # any failure inside a template must be a value, not a crash
            line = _template_line(exc.__traceback__, self.file_of(name))
            reason = _reason(exc)
            if isinstance(exc, UndefinedError):
                expr = self._expression(name, line, reason)
                if expr:
                    reason = f"undefined: {expr} is not defined here"
            raise TemplateFailure(name, reason, line) from None
        finally:
            _PROFILE.reset(token)
        text = text.strip()
        if not text:
            raise TemplateFailure(name, "renders to empty text, which Meta rejects")
        if check_limit and not text_fits(platform_profile, text):
            raise TemplateFailure(name, over_limit(platform_profile, text))
        return Rendered(text)

    def _expression(self, name: str, line: int | None, reason: str) -> str | None:
        """The dotted name that is undefined (`answers.size`), read from the template line."""
        m = _HINT.search(reason)
        lines = self._sources.get(name, "").splitlines()
        if m is None or line is None or not 0 < line <= len(lines):
            return None
        hint = m.group(1) or m.group(2)
        found = re.search(rf"[A-Za-z_][\w.]*\b{re.escape(hint)}\b", lines[line - 1])
        return found.group(0) if found else None

    def locate(self, failure: TemplateFailure) -> tuple[int, int]:
        """Line and column of a failure inside its template: the column of the undefined
        name when it can be found on that line, else 1."""
        line = failure.line or 1
        lines = self._sources.get(failure.template, "").splitlines()
        hint = failure.hint
        if hint and 0 < line <= len(lines):
            text = lines[line - 1]
            found = re.search(rf"[A-Za-z_][\w.]*\b{re.escape(hint)}\b", text)
            col = found.start() if found else text.find(hint)
            if col >= 0:
                return line, col + 1
        return line, 1


def over_limit(profile: PlatformProfile, text: str) -> str:
    """Why `text` is too long for the platform, in a creator's words."""
    size = len(text.encode("utf-8"))
    if profile.text_max_bytes is not None and size > profile.text_max_bytes:
        return (
            f"renders to {size} UTF-8 bytes; {profile.platform} allows "
            f"{profile.text_max_bytes} (shorten it or use the truncate_for_platform filter)"
        )
    return (
        f"renders to {len(text)} characters; {profile.platform} allows "
        f"{profile.text_max_chars} (shorten it or use the truncate_for_platform filter)"
    )
