"""Parsing HCL templates and expressions, as python-hcl2 hands them out.

python-hcl2 returns literals as Python values and everything else as text: a
bare expression as `${...}`, a quoted string as its characters with its
`${...}` interpolations left in, and, inside an expression, nested strings
re-serialised with their escapes and references re-written as `"${...}"`
templates. So every string value is a template; `parse_template` turns one
into a tree of `syntax` nodes.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from shoal.terraform.errors import EvalError
from shoal.terraform.syntax import (
    Binary,
    Call,
    Conditional,
    ForExpr,
    GetAttr,
    Index,
    ListExpr,
    Literal,
    Node,
    ObjectExpr,
    Splat,
    SplatItem,
    Template,
    Unary,
    Variable,
    normal_number,
)

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_DIGITS = re.compile(r"[0-9]+")
_FOR = re.compile(r"for\s+[A-Za-z_]")
_NUMBER = re.compile(r"[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_LEVELS: tuple[tuple[str, ...], ...] = (
    ("||",),
    ("&&",),
    ("==", "!="),
    ("<=", ">=", "<", ">"),
    ("+", "-"),
    ("*", "/", "%"),
)
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    # -- characters
    def fail(self, message: str) -> EvalError:
        near = self.text[self.pos : self.pos + 30]
        where = f" near {near!r}" if near else " at the end"
        return EvalError(f"cannot parse {_short(self.text)}: {message}{where}")

    def ws(self) -> None:
        text = self.text
        while self.pos < len(text):
            if text[self.pos] in " \t\r\n":
                self.pos += 1
            elif text.startswith("#", self.pos) or text.startswith("//", self.pos):
                end = text.find("\n", self.pos)
                self.pos = len(text) if end < 0 else end
            elif text.startswith("/*", self.pos):
                end = text.find("*/", self.pos + 2)
                self.pos = len(text) if end < 0 else end + 2
            else:
                return

    def peek(self, s: str) -> bool:
        return self.text.startswith(s, self.pos)

    def accept(self, s: str) -> bool:
        if self.text.startswith(s, self.pos):
            self.pos += len(s)
            return True
        return False

    def expect(self, s: str) -> None:
        self.ws()
        if not self.accept(s):
            raise self.fail(f"expected {s!r}")

    def identifier(self) -> str | None:
        m = _IDENT.match(self.text, self.pos)
        if m is None:
            return None
        self.pos = m.end()
        return m.group()

    def keyword(self, word: str) -> bool:
        """`word` as a whole identifier at the current position (consumed)."""
        m = _IDENT.match(self.text, self.pos)
        if m is not None and m.group() == word:
            self.pos = m.end()
            return True
        return False

    # -- templates
    def template(self, end: str | None, escapes: bool) -> Template:
        parts: list[str | Node] = []
        buf: list[str] = []
        strip_next = False
        text = self.text

        def flush() -> None:
            nonlocal strip_next
            literal = "".join(buf)
            if strip_next:
                literal = literal.lstrip()
                strip_next = False
            if literal:
                parts.append(literal)
            buf.clear()

        while True:
            if self.pos >= len(text):
                if end is None:
                    break
                raise self.fail("unterminated string")
            c = text[self.pos]
            if end is not None and c == end:
                self.pos += 1
                break
            if self.accept("$${"):
                buf.append("${")
            elif self.accept("%%{"):
                buf.append("%{")
            elif self.accept("${"):
                if self.accept("~"):
                    buf[:] = ["".join(buf).rstrip()]
                flush()
                self.ws()
                parts.append(self.expression())
                self.ws()
                if self.accept("~"):
                    strip_next = True
                self.expect("}")
            elif self.peek("%{"):
                raise self.fail("template directives (%{...}) are not supported by shoal apply")
            elif escapes and c == "\\":
                buf.append(self.escape())
            else:
                buf.append(c)
                self.pos += 1
        flush()
        return Template(tuple(parts))

    def escape(self) -> str:
        nxt = self.text[self.pos + 1 : self.pos + 2]
        if nxt in _ESCAPES:
            self.pos += 2
            return _ESCAPES[nxt]
        for letter, width in (("u", 4), ("U", 8)):
            if nxt == letter:
                digits = self.text[self.pos + 2 : self.pos + 2 + width]
                try:
                    char = chr(int(digits, 16))
                except ValueError:
                    raise self.fail(f"invalid \\{letter} escape") from None
                self.pos += 2 + width
                return char
        self.pos += 1
        return "\\"

    # -- expressions
    def expression(self) -> Node:
        cond = self.binary(0)
        self.ws()
        if self.accept("?"):
            then = self.expression()
            self.expect(":")
            otherwise = self.expression()
            return Conditional(cond, then, otherwise)
        return cond

    def binary(self, level: int) -> Node:
        if level == len(_LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while True:
            self.ws()
            op = next((o for o in _LEVELS[level] if self.peek(o)), None)
            if op is None or (op == "<" and self.peek("<<")):
                return left
            self.pos += len(op)
            self.ws()
            left = Binary(op, left, self.binary(level + 1))

    def unary(self) -> Node:
        self.ws()
        if self.peek("!") and not self.peek("!="):
            self.pos += 1
            return Unary("!", self.unary())
        if self.accept("-"):
            operand = self.unary()
            if isinstance(operand, Literal) and isinstance(operand.value, int | float):
                return Literal(-operand.value)
            return Unary("-", operand)
        return self.postfix(self.primary())

    def postfix(self, node: Node) -> Node:
        while True:
            if self.peek(".") and not self.peek("..."):
                self.pos += 1
                if self.accept("*"):
                    node = Splat(node, self.splat_steps(full=False))
                    continue
                m = _DIGITS.match(self.text, self.pos)
                if m is not None:  # legacy `list.0`
                    self.pos = m.end()
                    node = Index(node, Literal(int(m.group())))
                    continue
                name = self.identifier()
                if name is None:
                    raise self.fail("expected an attribute name after '.'")
                node = GetAttr(node, name)
            elif self.peek("["):
                self.pos += 1
                self.ws()
                if self.accept("*"):
                    self.expect("]")
                    node = Splat(node, self.splat_steps(full=True))
                    continue
                key = self.expression()
                self.expect("]")
                node = Index(node, key)
            else:
                return node

    def splat_steps(self, full: bool) -> Node:
        each: Node = SplatItem()
        while True:
            if self.peek(".") and not self.peek("..."):
                start = self.pos
                self.pos += 1
                name = self.identifier()
                if name is None:
                    self.pos = start
                    return each
                each = GetAttr(each, name)
            elif full and self.peek("["):
                self.pos += 1
                key = self.expression()
                self.expect("]")
                each = Index(each, key)
            else:
                return each

    def primary(self) -> Node:
        self.ws()
        if self.pos >= len(self.text):
            raise self.fail("expected an expression")
        c = self.text[self.pos]
        if c == "(":
            self.pos += 1
            inner = self.expression()
            self.expect(")")
            return inner
        if c == '"':
            self.pos += 1
            return self.template('"', escapes=True)
        if c.isdigit():
            return self.number()
        if c == "[":
            self.pos += 1
            return self.list_or_for()
        if c == "{":
            self.pos += 1
            return self.object_or_for()
        if self.peek("<<"):
            return self.heredoc()
        name = self.identifier()
        if name is None:
            raise self.fail("expected an expression")
        if name in ("true", "false"):
            return Literal(name == "true")
        if name == "null":
            return Literal(None)
        if self.peek("("):
            self.pos += 1
            return self.call(name)
        return Variable(name)

    def number(self) -> Literal:
        m = _NUMBER.match(self.text, self.pos)
        assert m is not None  # primary() saw a digit
        self.pos = m.end()
        text = m.group()
        if m.group(1) is None and m.group(2) is None:
            return Literal(int(text))
        return Literal(normal_number(float(text)))

    def call(self, name: str) -> Call:
        args: list[Node] = []
        expand = False
        self.ws()
        while not self.accept(")"):
            args.append(self.expression())
            self.ws()
            if self.accept("..."):
                expand = True
                self.ws()
            if not self.accept(","):
                self.expect(")")
                break
            self.ws()
        return Call(name, tuple(args), expand)

    def list_or_for(self) -> Node:
        self.ws()
        if self.at_for():
            return self.for_expr("]")
        items: list[Node] = []
        while True:
            self.ws()
            if self.accept("]"):
                return ListExpr(tuple(items))
            items.append(self.expression())
            self.ws()
            if not self.accept(","):
                self.expect("]")
                return ListExpr(tuple(items))

    def object_or_for(self) -> Node:
        self.ws()
        if self.at_for():
            return self.for_expr("}")
        items: list[tuple[Node, Node]] = []
        while True:
            self.ws()
            if self.accept("}"):
                return ObjectExpr(tuple(items))
            key = self.object_key()
            self.ws()
            if not (self.accept("=") or self.accept(":")):
                raise self.fail("expected '=' or ':' after an object key")
            items.append((key, self.expression()))
            self.ws()
            self.accept(",")

    def object_key(self) -> Node:
        # A bare identifier key is its own name, not a reference: {a = 1}.
        start = self.pos
        name = self.identifier()
        if name is not None:
            self.ws()
            if (self.peek("=") and not self.peek("==")) or self.peek(":"):
                return Literal(name)
            self.pos = start
        return self.binary(0)

    def at_for(self) -> bool:
        return _FOR.match(self.text, self.pos) is not None

    def for_expr(self, close: str) -> ForExpr:
        self.keyword("for")
        self.ws()
        first = self.identifier()
        if first is None:
            raise self.fail("expected a variable name after 'for'")
        self.ws()
        second = None
        if self.accept(","):
            self.ws()
            second = self.identifier()
            if second is None:
                raise self.fail("expected a second variable name after ','")
            self.ws()
        if not self.keyword("in"):
            raise self.fail("expected 'in'")
        collection = self.expression()
        self.expect(":")
        key: Node | None = None
        if close == "}":
            key = self.expression()
            self.expect("=>")
        value = self.expression()
        self.ws()
        group = close == "}" and self.accept("...")
        self.ws()
        cond = self.expression() if self.keyword("if") else None
        self.expect(close)
        key_var, value_var = (first, second) if second is not None else (None, first)
        return ForExpr(key_var, value_var, collection, key, value, cond, group)

    def heredoc(self) -> Node:
        m = re.compile(r"<<(-?)([A-Za-z_][A-Za-z0-9_-]*)[ \t]*\r?\n").match(self.text, self.pos)
        if m is None:
            raise self.fail("malformed heredoc")
        marker = m.group(2)
        end = re.compile(rf"^[ \t]*{re.escape(marker)}[ \t]*$", re.M).search(self.text, m.end())
        if end is None:
            raise self.fail(f"heredoc without its closing {marker}")
        body = self.text[m.end() : end.start()]
        self.pos = end.end()
        if m.group(1):  # <<- strips the common indentation
            lines = body.split("\n")
            indents = [len(x) - len(x.lstrip(" \t")) for x in lines if x.strip()]
            cut = min(indents, default=0)
            body = "\n".join(x[cut:] for x in lines)
        return _Parser(body).template(None, escapes=False)


def _short(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:57] + "...")


@functools.lru_cache(maxsize=4096)
def parse_template(text: str) -> Node:
    """A string value as python-hcl2 gives it (escapes already decoded)."""
    return _Parser(text).template(None, escapes=False)


@functools.lru_cache(maxsize=256)
def parse_expression(text: str) -> Node:
    """A bare HCL expression, e.g. a `--var` value for a list variable."""
    parser = _Parser(text)
    node = parser.expression()
    parser.ws()
    if parser.pos != len(text):
        raise parser.fail("unexpected text after the expression")
    return node


def parse_value(raw: Any) -> Node:
    """A python-hcl2 value of any shape (string, list, dict, literal) as one tree."""
    if isinstance(raw, str):
        return parse_template(raw)
    if isinstance(raw, list):
        return ListExpr(tuple(parse_value(v) for v in raw))
    if isinstance(raw, dict):
        return ObjectExpr(tuple((parse_value(k), parse_value(v)) for k, v in raw.items()))
    return Literal(raw)
