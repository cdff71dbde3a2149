"""Formulas over trend series: ``"A / B"``, ``"(A - B) * 100 / A"``.

A formula is series letters, numbers, ``+ - * /``, unary minus and parentheses — parsed here
by a small recursive-descent parser into a tree of tuples (never ``eval``) and evaluated per
bucket. Undefined results (division by zero, or a series value that is null) are ``None``.

>>> f = Formula.parse("(A - B) / A", {"A", "B"})
>>> f.evaluate({"A": 4, "B": 1})
0.75
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_TOKEN = re.compile(r"\s*(?:(\d+(?:\.\d*)?|\.\d+)|([A-Z])|(.))")
MAX_LENGTH = 500


class FormulaError(ValueError):
    pass


# A node: ("num", float) | ("ref", letter) | ("neg", node) | (op, left, right)
Node = tuple[Any, ...]


@dataclass(frozen=True)
class Formula:
    text: str
    tree: Node

    @classmethod
    def parse(cls, text: str, letters: set[str]) -> Formula:
        """Parse ``text``; ``letters`` are the series it may refer to."""
        if len(text) > MAX_LENGTH:
            raise FormulaError(f"longer than {MAX_LENGTH} characters")
        parser = _Parser(_tokens(text), letters)
        tree = parser.expression()
        rest = parser.peek()
        if rest is not None:
            raise FormulaError(f"unexpected {rest[1]!r}")
        return cls(text, tree)

    def evaluate(self, values: Mapping[str, float | None]) -> float | None:
        return _evaluate(self.tree, values)


def _tokens(text: str) -> list[tuple[str, str]]:
    out = []
    for m in _TOKEN.finditer(text):
        number, letter, other = m.groups()
        if number is not None:
            out.append(("num", number))
        elif letter is not None:
            out.append(("ref", letter))
        elif other is not None and other.strip():
            if other not in "+-*/()":
                raise FormulaError(f"unexpected {other!r}; use series letters, numbers, "
                                   "+ - * / and parentheses")
            out.append(("op", other))
    if not out:
        raise FormulaError("is empty")
    return out


class _Parser:
    """expression := term (('+'|'-') term)*;  term := factor (('*'|'/') factor)*;
    factor := '-' factor | number | letter | '(' expression ')'"""

    def __init__(self, tokens: list[tuple[str, str]], letters: set[str]) -> None:
        self.tokens, self.pos, self.letters, self.depth = tokens, 0, letters, 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise FormulaError("ends too early")
        self.pos += 1
        return tok

    def expression(self) -> Node:
        node = self.term()
        while (tok := self.peek()) is not None and tok[1] in ("+", "-") and tok[0] == "op":
            self.pos += 1
            node = (tok[1], node, self.term())
        return node

    def term(self) -> Node:
        node = self.factor()
        while (tok := self.peek()) is not None and tok[1] in ("*", "/") and tok[0] == "op":
            self.pos += 1
            node = (tok[1], node, self.factor())
        return node

    def factor(self) -> Node:
        self.depth += 1
        if self.depth > 100:
            raise FormulaError("nested too deeply")
        try:
            kind, text = self.take()
            if kind == "num":
                return ("num", float(text))
            if kind == "ref":
                if text not in self.letters:
                    raise FormulaError(f"there is no series {text}")
                return ("ref", text)
            if text == "-":
                return ("neg", self.factor())
            if text == "(":
                node = self.expression()
                if self.take() != ("op", ")"):
                    raise FormulaError("missing ')'")
                return node
            raise FormulaError(f"unexpected {text!r}")
        finally:
            self.depth -= 1


def _evaluate(node: Node, values: Mapping[str, float | None]) -> float | None:
    kind = node[0]
    if kind == "num":
        return node[1]  # type: ignore[no-any-return]
    if kind == "ref":
        v = values[node[1]]
        return None if v is None else float(v)
    if kind == "neg":
        v = _evaluate(node[1], values)
        return None if v is None else -v
    a, b = _evaluate(node[1], values), _evaluate(node[2], values)
    if a is None or b is None:
        return None
    if kind == "+":
        return a + b
    if kind == "-":
        return a - b
    if kind == "*":
        return a * b
    return a / b if b != 0 else None
