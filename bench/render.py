"""How long one render can hold the event loop: hostile templates against a trivial one.

Rendering runs on the event loop, inside the engine's transaction, so the longest render is
the longest the daemon stops answering webhooks. Each hostile template below is one the budget
(bot/template_budget.py) must stop: loops over a 1,008-character comment, text built by
`replace`, format widths, `~` doubling, a sort of 100,000 numbers, self-inclusion. Each is
rendered warm, several times; the worst wall time is the figure, printed with its ratio to a
trivial template's. Also: the shipped templates, rendered with and without the budget in the
same process (its cost on normal messages).

    python bench/render.py
    python bench/render.py --repeat 20
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jinja2 import DictLoader, StrictUndefined  # noqa: E402
from jinja2.sandbox import ImmutableSandboxedEnvironment  # noqa: E402

from bot.events import Platform  # noqa: E402
from bot.policy import default_profile  # noqa: E402
from bot.templates import (  # noqa: E402
    _PROFILE,
    TemplateFailure,
    TemplateSet,
    first_name,
    truncate_bytes,
    truncate_for_platform,
)

COMMENT = "Long comment, with words. " * 38 + "tail"  # 1,008 characters
LOOP3 = "{% for a in t %}{% for b in t %}{% for c in t %}{% endfor %}{% endfor %}{% endfor %}"
HOSTILE = {
    "nested loops over the comment": "{% set t = comment.text %}" + LOOP3,
    "filtered loops (for ... if)": (
        "{% for a in range(99999) %}{% for b in range(99999) if b < 0 %}{% endfor %}{% endfor %}"
    ),
    "replace every gap": "{{ comment.text|replace('', comment.text|center(1000000)) }}",
    "format width": "{{ '%999999999s'|format(comment.text) }}",
    "~ doubling": (
        "{% set ns = namespace(x=comment.text) %}"
        "{% for i in range(60) %}{% set ns.x = ns.x ~ ns.x %}{% endfor %}"
    ),
    "map over long strings": "{{ ([comment.text * 60] * 1000)|map('upper')|list|length }}",
    "sort 100,000 numbers": "{{ range(99999)|list|reverse|sort|first }}",
    "sum of a range, per loop turn": (
        "{% for i in range(9999) %}{{ range(99999)|sum }}{% endfor %}"
    ),
    "macro recursion": "{% macro f() %}{{ f() }}{{ f() }}{% endmacro %}{{ f() }}",
    "self-include": "{% include 'self-include' %}x",
}
TRIVIAL = "Hi {{ contact.name|first_name }}! Thanks for: {{ comment.text|truncate(60) }}"


def worst(
    templates: TemplateSet, name: str, ctx: dict[str, object], repeat: int
) -> tuple[float, str]:
    rules = default_profile().for_platform(Platform.INSTAGRAM)
    outcome = "sent"
    times = []
    for _ in range(repeat + 1):  # the first compiles the template: not timed
        t = time.perf_counter()
        try:
            templates.render(name, ctx, rules, check_limit=False)
        except TemplateFailure as f:
            outcome = f.reason
        times.append(time.perf_counter() - t)
    return max(times[1:]), outcome


def shipped_overhead(repeat: int) -> tuple[float, float]:
    """Mean render time of the shipped templates with the budget, and without (plain Jinja)."""
    ours, _ = TemplateSet.from_dir(ROOT / "templates")
    sources = {n: ours.source(n) for n in ours.names}
    plain = ImmutableSandboxedEnvironment(
        loader=DictLoader(sources),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    plain.filters.update(
        first_name=first_name,
        truncate_bytes=truncate_bytes,
        truncate_for_platform=truncate_for_platform,
    )
    rules = default_profile().for_platform(Platform.INSTAGRAM)
    ctx = {
        "contact": {"name": "Ann Lee", "first_name": "Ann", "username": "ann", "fields": {}},
        "comment": {"text": "PRICING please!", "id": "c1", "media_id": "m1"},
        "message": {"text": "is there a yearly plan?", "payload": None},
        "answers": {"email": "ann@example.com"},
        "account": {"name": "brand"},
        "flow": {"id": "pricing"},
        "topic": "pricing_updates",
    }
    names = sorted(ours.names)
    token = _PROFILE.set(rules)
    usable = []
    for n in names:
        try:
            plain.get_template(n).render(ctx)
            ours.render(n, ctx, rules, check_limit=False)
            usable.append(n)
        except Exception:  # noqa: S112 - a template needing other variables is left out
            continue
    rounds = max(repeat * 50, 200)
    t = time.perf_counter()
    for _ in range(rounds):
        for n in usable:
            plain.get_template(n).render(ctx)
    base = (time.perf_counter() - t) / (rounds * len(usable))
    _PROFILE.reset(token)
    t = time.perf_counter()
    for _ in range(rounds):
        for n in usable:
            ours.render(n, ctx, rules, check_limit=False)
    budgeted = (time.perf_counter() - t) / (rounds * len(usable))
    return budgeted, base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    templates = TemplateSet({**HOSTILE, "trivial": TRIVIAL})
    ctx: dict[str, object] = {"comment": {"text": COMMENT}, "contact": {"name": "Ann Lee"}}
    base, _ = worst(templates, "trivial", ctx, args.repeat * 10)
    print(f"trivial template: worst {base * 1000:.3f} ms")
    overall = 0.0
    for name in HOSTILE:
        hold, outcome = worst(templates, name, ctx, args.repeat)
        overall = max(overall, hold)
        print(f"{name:32} worst {hold * 1000:7.2f} ms  {hold / base:7.0f}x trivial  ({outcome})")
    print(
        f"worst loop hold of any hostile template: {overall * 1000:.1f} ms, {overall / base:.0f}x"
    )
    budgeted, plain = shipped_overhead(args.repeat)
    print(
        f"shipped templates: {budgeted * 1e6:.0f} us a render with the budget, "
        f"{plain * 1e6:.0f} us without ({budgeted / plain:.2f}x)"
    )


if __name__ == "__main__":
    main()
