"""Protobuf text format → message, keeping the line of every layer and field.

protobuf's own `text_format` reports a line for syntax errors only, and loses positions once a
message is built; automtl's errors must name the file, line and layer of any problem found later
(a shape mismatch twenty layers down). This reader walks the schema's descriptors while it
parses, so it also finds every unknown field in one pass (an error, or one warning per field
under `--lenient`) and is several times faster than `text_format.Parse` on large files.
"""

from __future__ import annotations

import codecs
import math
import re
from dataclasses import dataclass, field

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from automtl_cli.errors import SourceError

__all__ = ["LayerSource", "ParsedText", "UnknownField", "parse_text"]

_TOKEN = re.compile(
    r"""
    (?P<skip>[ \t\r\f\v]+|\#.*)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<number>[-+]?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?[fF]?)(?![\w.]))
  | (?P<ident>[-+]?[A-Za-z_][\w]*)
  | (?P<punct>[{}<>\[\]:,;])
  | (?P<bad>\S+)
    """,
    re.VERBOSE,
)

_INT_LIMITS = {
    FieldDescriptor.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.CPPTYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.CPPTYPE_UINT64: (0, 2**64 - 1),
}
_TRUE = {"true", "True", "t", "1"}
_FALSE = {"false", "False", "f", "0"}
_LAYER_FIELDS = ("layer", "layers")


@dataclass
class LayerSource:
    """Where one top-level `layer {}` / `layers {}` block sits in the file."""

    field: str  # "layer" (Caffe V2 and the AutoMTL dialect) or "layers" (Caffe V1)
    index: int  # position within that repeated field
    line: int  # line of the block's opening
    field_lines: dict[str, int] = field(default_factory=dict)

    def line_of(self, path: str) -> int:
        """Line of a field inside this layer (`convolution_param.kernel_size`), else the block's."""
        return self.field_lines.get(path, self.line)


@dataclass(frozen=True)
class UnknownField:
    message_type: str  # e.g. "automtl.PoolingParameter"
    name: str
    line: int
    layer: LayerSource | None


@dataclass
class ParsedText:
    message: Message
    layers: list[LayerSource]
    unknown: list[UnknownField]
    net_lines: dict[str, int]  # first line of each top-level field (`input_dim`, `input`, ...)


class _Tokens:
    """A flat token list with one-token lookahead; each token is (kind, text, line)."""

    def __init__(self, text: str, file: str | None) -> None:
        self.file = file
        toks: list[tuple[str, str, int]] = []
        append = toks.append
        for lineno, line in enumerate(text.split("\n"), 1):
            for m in _TOKEN.finditer(line):
                kind = m.lastgroup
                if kind == "skip":
                    continue
                if kind == "bad":
                    raise SourceError(f"unexpected text {m.group()!r}", file=file, line=lineno)
                append((kind, m.group(), lineno))
        self.toks = toks
        self.pos = 0
        self.last_line = toks[-1][2] if toks else 1

    def peek(self) -> tuple[str, str, int] | None:
        return self.toks[self.pos] if self.pos < len(self.toks) else None

    def next(self, expecting: str) -> tuple[str, str, int]:
        if self.pos >= len(self.toks):
            raise SourceError(f"unexpected end of file, expecting {expecting}",
                              file=self.file, line=self.last_line)
        tok = self.toks[self.pos]
        self.pos += 1
        return tok

    def accept(self, text: str) -> bool:
        if self.pos < len(self.toks) and self.toks[self.pos][1] == text and \
                self.toks[self.pos][0] == "punct":
            self.pos += 1
            return True
        return False


class _Parser:
    def __init__(self, text: str, file: str | None) -> None:
        self.file = file
        self.tokens = _Tokens(text, file)
        self.layers: list[LayerSource] = []
        self.unknown: list[UnknownField] = []
        self.net_lines: dict[str, int] = {}
        self.layer: LayerSource | None = None  # the top-level layer being read
        self.path: list[str] = []  # field path inside that layer

    def error(self, message: str, line: int) -> SourceError:
        return SourceError(message, file=self.file, line=line)

    def parse(self, message: Message) -> ParsedText:
        self._fields(message, closing=None)
        return ParsedText(message, self.layers, self.unknown, self.net_lines)

    def _fields(self, message: Message, closing: str | None) -> None:
        descriptor: Descriptor = message.DESCRIPTOR
        by_name = descriptor.fields_by_name
        seen_singular: set[str] = set()
        toks = self.tokens
        while True:
            tok = toks.peek()
            if tok is None:
                if closing is not None:
                    raise self.error(f"unexpected end of file, expecting '{closing}'",
                                     toks.last_line)
                return
            kind, text, line = tok
            if kind == "punct" and text == closing:
                toks.pos += 1
                return
            if kind != "ident":
                raise self.error(f"expected a field name, found {text!r}", line)
            toks.pos += 1
            fd = by_name.get(text)
            if fd is None:
                self.unknown.append(UnknownField(descriptor.full_name, text, line, self.layer))
                self._skip_value(line)
            else:
                if not fd.is_repeated:
                    if text in seen_singular:
                        raise self.error(
                            f'field "{text}" of {descriptor.name} is given twice', line)
                    seen_singular.add(text)
                self._field(message, fd, line)
            toks.accept(",") or toks.accept(";")

    def _record(self, name: str, line: int) -> None:
        if self.layer is None:
            self.net_lines.setdefault(name, line)
        else:
            self.layer.field_lines.setdefault(".".join([*self.path, name]), line)

    def _field(self, message: Message, fd: FieldDescriptor, line: int) -> None:
        toks = self.tokens
        name = fd.name
        is_message = fd.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE
        top_layer = self.layer is None and name in _LAYER_FIELDS and \
            message.DESCRIPTOR.name == "NetParameter"
        if not top_layer:
            self._record(name, line)
        has_colon = toks.accept(":")
        if not is_message and not has_colon:
            raise self.error(f'expected ":" after field "{name}"', line)
        repeated = fd.is_repeated
        if repeated and toks.accept("["):
            if toks.accept("]"):
                return
            while True:
                self._one_value(message, fd, line, top_layer)
                if toks.accept("]"):
                    return
                if not toks.accept(","):
                    raise self.error(f'expected "," or "]" in the list of "{name}"', line)
        self._one_value(message, fd, line, top_layer)

    def _one_value(self, message: Message, fd: FieldDescriptor, line: int,
                   top_layer: bool) -> None:
        repeated = fd.is_repeated
        if fd.cpp_type != FieldDescriptor.CPPTYPE_MESSAGE:
            value = self._scalar(fd)
            if repeated:
                getattr(message, fd.name).append(value)
            else:
                setattr(message, fd.name, value)
            return
        kind, text, tline = self.tokens.next("'{'")
        if text not in ("{", "<") or kind != "punct":
            raise self.error(f'expected "{{" to open "{fd.name}", found {text!r}', tline)
        closing = "}" if text == "{" else ">"
        if repeated:
            sub = getattr(message, fd.name).add()
        else:
            sub = getattr(message, fd.name)
            sub.SetInParent()
        if top_layer:
            self.layer = LayerSource(fd.name, len(getattr(message, fd.name)) - 1, line)
            self.layers.append(self.layer)
            try:
                self._fields(sub, closing)
            finally:
                self.layer = None
        else:
            self.path.append(fd.name)
            try:
                self._fields(sub, closing)
            finally:
                self.path.pop()

    def _scalar(self, fd: FieldDescriptor):
        kind, text, line = self.tokens.next(f'a value for "{fd.name}"')
        cpp = fd.cpp_type
        try:
            if cpp == FieldDescriptor.CPPTYPE_STRING:
                if kind != "string":
                    raise ValueError("expected a quoted string")
                parts = [text]
                while (nxt := self.tokens.peek()) is not None and nxt[0] == "string":
                    parts.append(nxt[1])
                    self.tokens.pos += 1
                return "".join(_unquote(p) for p in parts)
            if cpp in _INT_LIMITS:
                if kind != "number":
                    raise ValueError("expected an integer")
                value = _parse_int(text)
                lo, hi = _INT_LIMITS[cpp]
                if not lo <= value <= hi:
                    raise ValueError(f"{value} is out of range [{lo}, {hi}]")
                return value
            if cpp in (FieldDescriptor.CPPTYPE_FLOAT, FieldDescriptor.CPPTYPE_DOUBLE):
                return _parse_float(kind, text)
            if cpp == FieldDescriptor.CPPTYPE_BOOL:
                if text in _TRUE:
                    return True
                if text in _FALSE:
                    return False
                raise ValueError("expected true or false")
            if cpp == FieldDescriptor.CPPTYPE_ENUM:
                enum = fd.enum_type
                if kind == "ident":
                    value = enum.values_by_name.get(text)
                elif kind == "number" and re.fullmatch(r"-?\d+", text):
                    value = enum.values_by_number.get(int(text))
                else:
                    value = None
                if value is None:
                    allowed = ", ".join(v.name for v in enum.values)
                    raise ValueError(f"not one of {allowed}")
                return value.number
        except ValueError as e:
            raise self.error(f'bad value {text} for "{fd.name}": {e}', line) from None
        raise self.error(f'unsupported field type for "{fd.name}"', line)  # pragma: no cover

    def _skip_value(self, line: int) -> None:
        """Step over an unknown field's value: a scalar, a list, or a nested block."""
        toks = self.tokens
        toks.accept(":")
        kind, text, tline = toks.next("a value")
        if kind == "punct" and text in "{<[":
            closing = {"{": "}", "<": ">", "[": "]"}[text]
            stack = [closing]
            while stack:
                kind, text, _ = toks.next(f"'{stack[-1]}'")
                if kind != "punct":
                    continue
                if text in "{<[":
                    stack.append({"{": "}", "<": ">", "[": "]"}[text])
                elif text in "}>]":
                    if text != stack[-1]:
                        raise self.error(f"unbalanced {text!r}", tline)
                    stack.pop()
        elif kind == "punct":
            raise self.error(f"expected a value, found {text!r}", tline)
        elif kind == "string":
            while (nxt := toks.peek()) is not None and nxt[0] == "string":
                toks.pos += 1


def _unquote(token: str) -> str:
    body = token[1:-1]
    if "\\" not in body:
        return body
    return codecs.escape_decode(body.encode("utf-8"))[0].decode("utf-8")


def _parse_int(text: str) -> int:
    sign = -1 if text.startswith("-") else 1
    body = text.lstrip("+-")
    if body.lower().startswith("0x"):
        return sign * int(body, 16)
    if not body.isdigit():
        raise ValueError("expected an integer")
    if len(body) > 1 and body.startswith("0"):
        return sign * int(body, 8)
    return sign * int(body)


def _parse_float(kind: str, text: str) -> float:
    if kind == "ident":
        low = text.lower().lstrip("+")
        if low in ("inf", "infinity", "-inf", "-infinity"):
            return -math.inf if low.startswith("-") else math.inf
        if low in ("nan", "-nan"):
            return math.nan
        raise ValueError("expected a number")
    if kind != "number":
        raise ValueError("expected a number")
    body = text.rstrip("fF") if not text.lower().startswith(("0x", "-0x", "+0x")) else text
    if body.lower().lstrip("+-").startswith("0x"):
        return float(_parse_int(body))
    return float(body)


def parse_text(text: str, message: Message, *, file: str | None = None) -> ParsedText:
    """Parse protobuf text format into `message`, recording where each layer and field is."""
    return _Parser(text, file).parse(message)
