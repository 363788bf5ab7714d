"""The template sandbox that spends the render budget (bot/template_budget.py): Jinja's
immutable sandbox whose hooks (calls, operators, `str.format`, every filter) count steps and
text, and a code generator that puts a check in every loop turn, include, output write and `~`.
Jinja allows no custom node types, so the checks are calls of environment methods."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter

from bot.template_budget import (
    BUDGET,
    COUNT_ARGS,
    FILTER_SIZES,
    MAX_EXPONENT,
    MAX_INT_BITS,
    MAX_SEQUENCE,
    MAX_TEXT,
    STR_METHODS,
    TEXT_FILTERS,
    WALKING_FILTERS,
    RenderBudget,
    join_size,
    percent_size,
    text_size,
)

__all__ = ["BudgetedCodeGenerator", "BudgetedSandbox"]

_NUMBERS = re.compile(r"\d+")


class _BudgetedFormatter(SandboxedFormatter):
    """str.format in the sandbox, with each field's width and precision counted first."""

    def format_field(self, value: Any, format_spec: str) -> Any:
        b = BUDGET.get()
        if b is not None:
            widest = sum(int(n) for n in _NUMBERS.findall(format_spec))
            b.room(widest + text_size(value, MAX_TEXT) + 310)
            out = super().format_field(value, format_spec)
            b.charge(len(out))
            return out
        return super().format_field(value, format_spec)


def _budgeted_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    skip = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0
    size_of = FILTER_SIZES.get(name)
    factor = TEXT_FILTERS.get(name)
    count_at = COUNT_ARGS.get(name)
    walks = name in WALKING_FILTERS

    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> Any:
        b = BUDGET.get()
        if b is None:
            return func(*args, **kwargs)
        own = args[skip:]
        b.tick(1 + (len(own[0]) if walks and own and hasattr(own[0], "__len__") else 0))
        if name == "join" and own:
            items = list(own[0])
            sep = own[1] if len(own) > 1 else kwargs.get("d", "")
            b.room(join_size(str(sep), items))
            args = (*args[:skip], items, *own[1:])
        elif size_of is not None and own:
            b.room(size_of(*own, **kwargs))
        elif factor is not None and own:
            b.room(text_size(own[0], MAX_TEXT) * factor)
        elif count_at is not None and len(own) > count_at:
            n = own[count_at]
            if isinstance(n, int) and n > MAX_SEQUENCE:
                raise SecurityError(f"{name}({n}) is too large for a message template")
        out = func(*args, **kwargs)
        if isinstance(out, str):
            b.charge(len(out))
        return out

    return run


def _seq_size(value: Any) -> int | None:
    return len(value) if isinstance(value, str | list | tuple) else None


class BudgetedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox with every loop, call, filter and string under the budget."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.code_generator_class = BudgetedCodeGenerator
        self.filters = {n: _budgeted_filter(n, f) for n, f in self.filters.items()}

    def add_filter(self, name: str, func: Callable[..., Any]) -> None:
        self.filters[name] = _budgeted_filter(name, func)

    # --- hooks the generated code calls ----------------------------------------------------

    def budget_enter(self) -> None:
        b = BUDGET.get()
        if b is not None:
            b.enter()

    def budget_leave(self) -> None:
        b = BUDGET.get()
        if b is not None:
            b.leave()

    def budget_iter(self, iterable: Iterable[Any]) -> Iterator[Any]:
        b = BUDGET.get()
        if b is None:
            yield from iterable
            return
        for item in iterable:
            b.tick()
            yield item

    def budget_out(self, value: Any) -> str:
        b = BUDGET.get()
        if b is None:
            return str(value)
        if not isinstance(value, str):
            b.room(text_size(value, b.text))
        text = str(value)
        b.charge(len(text))
        return text

    def budget_concat(self, parts: Sequence[Any]) -> str:
        """The template's `~` (Jinja's str_join), counted before it is built."""
        b = BUDGET.get()
        if b is not None:
            b.room(sum(text_size(p, b.text) for p in parts))
        text = "".join(p if isinstance(p, str) else str(p) for p in parts)
        if b is not None:
            b.charge(len(text))
        return text

    # --- the sandbox's own hooks -----------------------------------------------------------

    def call_binop(self, context: Any, op: str, left: Any, right: Any) -> Any:
        b = BUDGET.get()
        if op == "**":
            if isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
                raise SecurityError(f"exponent {right} is too large for a message template")
            if isinstance(left, int) and isinstance(right, int) and right > 0:
                self._int_room(left.bit_length() * right)
            return left**right
        if op == "*":
            for seq, n in ((left, right), (right, left)):
                size = _seq_size(seq)
                if size is not None and isinstance(n, int):
                    if size * n > MAX_SEQUENCE:
                        raise SecurityError("repetition too large for a message template")
                    if b is not None:
                        what = "output" if isinstance(seq, str) else "a list, as text,"
                        b.room(text_size(seq, b.text) * n, what)
            if isinstance(left, int) and isinstance(right, int):
                self._int_room(left.bit_length() + right.bit_length())
            out = left * right
        elif op == "+":
            sizes = _seq_size(left), _seq_size(right)
            if None not in sizes and type(left) is type(right):
                if not isinstance(left, str) and sum(sizes) > MAX_SEQUENCE:  # type: ignore[arg-type]
                    raise SecurityError("sequence too large for a message template")
                if b is not None:
                    what = "output" if isinstance(left, str) else "a list, as text,"
                    b.room(text_size(left, b.text) + text_size(right, b.text), what)
            out = left + right
        elif op == "%" and isinstance(left, str):
            if b is not None:
                b.room(percent_size(left, right))
            out = left % right
        else:
            return super().call_binop(context, op, left, right)
        if b is not None and isinstance(out, str):
            b.charge(len(out))
        return out

    @staticmethod
    def _int_room(bits: int) -> None:
        if bits > MAX_INT_BITS:
            raise SecurityError("number too large for a message template")

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        b = BUDGET.get()
        if b is None:
            return super().call(__context, __obj, *args, **kwargs)
        b.enter()
        try:
            return __self._budgeted_call(b, __context, __obj, *args, **kwargs)
        finally:
            b.leave()

    def _budgeted_call(
        __self,  # noqa: N805
        __b: RenderBudget,
        __context: Any,
        __obj: Any,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        b = __b
        owner = getattr(__obj, "__self__", None)
        name = getattr(__obj, "__name__", "")
        if isinstance(owner, str | bytes):
            if name == "join" and args:
                items = list(args[0])
                b.room(join_size(owner, items))
                args = (items, *args[1:])
            elif name in STR_METHODS:
                b.room(STR_METHODS[name](owner, *args, **kwargs))
            elif name == "translate":
                table = args[0] if args else {}
                longest = max(
                    (len(v) for v in getattr(table, "values", dict)() if isinstance(v, str)),
                    default=1,
                )
                b.room(len(owner) * max(longest, 1))
        elif isinstance(owner, int) and name == "to_bytes":
            length = args[0] if args else kwargs.get("length", 1)
            if isinstance(length, int):
                b.room(length)
        out = super().call(__context, __obj, *args, **kwargs)
        if isinstance(out, str | bytes):
            b.charge(len(out))
        return out

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        f_self: str = value.__self__
        formatter = _BudgetedFormatter(self)
        is_map = value.__name__ == "format_map"

        @functools.wraps(wrapped)
        def run(*args: Any, **kwargs: Any) -> str:
            if is_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument")
                return formatter.vformat(f_self, (), args[0])
            return formatter.vformat(f_self, args, kwargs)

        return run


class BudgetedCodeGenerator(CodeGenerator):
    """Jinja's code generator, emitting the budget's checks: each loop item, each include,
    each output write and each `~` go through the environment's hooks above."""

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        if node.recursive:
            # `loop(...)` re-enters with an unwrapped iterable: not worth supporting for DMs.
            self.fail("recursive loops are not allowed in message templates", node.lineno)
        # Jinja allows no custom node types: the iterable becomes a call of the hook, so each
        # item costs a step, in `for ... if ...` filtering too.
        inner = node.iter
        hook = nodes.EnvironmentAttribute("budget_iter", lineno=inner.lineno)
        node.iter = nodes.Call(hook, [inner], [], None, None, lineno=inner.lineno)
        try:
            super().visit_For(node, frame)
        finally:
            node.iter = inner

    def visit_Include(self, node: nodes.Include, frame: Frame) -> None:
        # Balanced by the line after it; an error ends the render (and its budget) anyway.
        self.writeline("environment.budget_enter()")
        super().visit_Include(node, frame)
        self.writeline("environment.budget_leave()")

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.budget_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")

    def _output_const_repr(self, group: Iterable[Any]) -> str:
        return f"environment.budget_out({super()._output_const_repr(group)})"

    def _output_child_pre(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
        self.write("environment.budget_out(")
        if finalize.src is not None:
            self.write(finalize.src)
