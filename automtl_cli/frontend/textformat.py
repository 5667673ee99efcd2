"""Protobuf text format → message, keeping the line of every layer and field.

protobuf's own `text_format` reports a line for syntax errors only, and loses positions once a
message is built; automtl's errors must name the file, line and layer of any problem found later
(a shape mismatch twenty layers down). This reader walks the schema's descriptors while it
parses, so it also finds every unknown field in one pass (an error, or one warning per field
under `--lenient`) and is several times faster than `text_format.Parse` on large files.

It streams: the text is tokenized a block of lines at a time as the parser reaches it, and no
per-token object outlives its block, so memory grows with the network (the message and one
line table per layer), not with the file's tokens; a syntax error, or whatever `on_layer`
refuses as a layer block closes (a duplicate layer name), is reported when the parser gets
there, without reading the rest. A 20 MB file (125,000 layers) reads in a few seconds
(`scripts/prototxt_scale.py` measures it).
"""

from __future__ import annotations

import codecs
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from automtl_cli.errors import SourceError

__all__ = ["LayerSource", "OnLayer", "ParsedText", "UnknownField", "parse_text"]

# One token, after the blanks before it. `end` matches only at the end of the block, so no match
# attempt fails and backtracks over a run of blanks; no token spans a line.
_TOKEN = re.compile(
    r"""
    [ \t\r\f\v]*
    (?:
      (?P<nl>\n)
    | (?P<comment>\#.*)
    | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
    | (?P<number>[-+]?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?[fF]?)(?![\w.]))
    | (?P<ident>[-+]?[A-Za-z_][\w]*)
    | (?P<punct>[{}<>\[\]:,;])
    | (?P<bad>\S+)
    | (?P<end>\Z)
    )
    """,
    re.VERBOSE,
)
_CHUNK = 1 << 16  # characters tokenized at a time (then on to the end of that line)

_INT_LIMITS = {
    FieldDescriptor.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.CPPTYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.CPPTYPE_UINT64: (0, 2**64 - 1),
}
_TRUE = {"true", "True", "t", "1"}
_FALSE = {"false", "False", "f", "0"}
_LAYER_FIELDS = ("layer", "layers")
_MESSAGE = FieldDescriptor.CPPTYPE_MESSAGE
_STRING = FieldDescriptor.CPPTYPE_STRING
_CLOSING = {"{": "}", "<": ">", "[": "]"}


@dataclass(eq=False, slots=True)
class LayerSource:
    """Where one top-level `layer {}` / `layers {}` block sits in the file."""

    field: str  # "layer" (Caffe V2 and the AutoMTL dialect) or "layers" (Caffe V1)
    index: int  # position within that repeated field
    line: int  # line of the block's opening
    # Field path → its first line, less the block's: a small number, which Python stores once
    # for every layer (an absolute line would be one more object per field of the file).
    field_offsets: dict[str, int] = field(default_factory=dict)

    def field_line(self, path: str) -> int | None:
        """Line of a field inside this layer (`convolution_param.kernel_size`), if it has it."""
        offset = self.field_offsets.get(path)
        return None if offset is None else self.line + offset

    def line_of(self, path: str) -> int:
        """Line of a field inside this layer, else the block's."""
        return self.line + self.field_offsets.get(path, 0)


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


# Called as each top-level layer block closes, with its place and its message.
OnLayer = Callable[[LayerSource, Message], None]


class _Tokens:
    """The text's tokens, (kind, text, line), with lookahead: `toks[pos]` is the next one. They
    are made a block of lines at a time (`fill`) when the parser has used up the last block."""

    __slots__ = ("bad", "file", "last_line", "line", "offset", "pos", "text", "toks")

    def __init__(self, text: str, file: str | None) -> None:
        self.file = file
        self.text = text
        # the first character not yet tokenized (after a byte-order mark, which editors on
        # Windows write and protobuf's own parser skips)
        self.offset = 1 if text.startswith("\ufeff") else 0
        self.line = 1  # its line
        self.toks: list[tuple[str, str, int]] = []  # the current block's tokens
        self.pos = 0
        self.last_line = 1  # line of the last token so far (an unexpected end's line)
        self.bad: SourceError | None = None  # unreadable text right after the current block

    def fill(self) -> bool:
        """Tokenize the next block once `toks` is used up; False at the end of the text."""
        text = self.text
        while self.pos >= len(self.toks):
            if self.bad is not None:
                raise self.bad
            if self.offset > len(text):
                return False
            end = text.find("\n", self.offset + _CHUNK)
            if end < 0:
                end = len(text)
            toks: list[tuple[str, str, int]] = []
            append = toks.append
            line = self.line
            for m in _TOKEN.finditer(text, self.offset, end):
                kind = m.lastgroup
                if kind == "nl":
                    line += 1
                elif kind == "bad":
                    self.bad = SourceError(f"unexpected text {m.group(kind)!r}",
                                           file=self.file, line=line)
                    break
                elif kind != "comment" and kind != "end":
                    append((kind, m.group(kind), line))
            self.offset, self.line = end + 1, line + 1
            self.toks, self.pos = toks, 0
            if toks:
                self.last_line = toks[-1][2]
        return True

    def peek(self) -> tuple[str, str, int] | None:
        if self.pos < len(self.toks) or self.fill():
            return self.toks[self.pos]
        return None

    def next(self, expecting: str) -> tuple[str, str, int]:
        if self.pos >= len(self.toks) and not self.fill():
            raise SourceError(f"unexpected end of file, expecting {expecting}",
                              file=self.file, line=self.last_line)
        tok = self.toks[self.pos]
        self.pos += 1
        return tok

    def accept(self, text: str) -> bool:
        if self.pos >= len(self.toks) and not self.fill():
            return False
        tok = self.toks[self.pos]
        if tok[1] == text and tok[0] == "punct":
            self.pos += 1
            return True
        return False


class _Parser:
    def __init__(self, text: str, file: str | None, on_layer: OnLayer | None) -> None:
        self.file = file
        self.tokens = _Tokens(text, file)
        self.on_layer = on_layer
        self.layers: list[LayerSource] = []
        self.unknown: list[UnknownField] = []
        self.net_lines: dict[str, int] = {}
        self.layer: LayerSource | None = None  # the top-level layer being read
        self.prefix = ""  # the field path inside that layer so far: "convolution_param." or ""
        self.paths: dict[str, str] = {}  # one string per field path, shared by every layer

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
        is_net = descriptor.name == "NetParameter"
        while True:
            if toks.pos >= len(toks.toks) and not toks.fill():
                if closing is not None:
                    raise self.error(f"unexpected end of file, expecting '{closing}'",
                                     toks.last_line)
                return
            kind, text, line = toks.toks[toks.pos]
            toks.pos += 1
            if kind == "punct" and text == closing:
                return
            if kind != "ident":
                raise self.error(f"expected a field name, found {text!r}", line)
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
                top_layer = is_net and self.layer is None and text in _LAYER_FIELDS
                if not top_layer:  # the field's line, for errors found later
                    layer = self.layer
                    if layer is None:
                        self.net_lines.setdefault(text, line)
                    else:
                        path = self.prefix + text
                        layer.field_offsets.setdefault(self.paths.setdefault(path, path),
                                                       line - layer.line)
                self._field(message, fd, line, top_layer)
            if toks.pos >= len(toks.toks) and not toks.fill():
                continue
            sep = toks.toks[toks.pos]
            if sep[0] == "punct" and (sep[1] == "," or sep[1] == ";"):
                toks.pos += 1

    def _field(self, message: Message, fd: FieldDescriptor, line: int, top_layer: bool) -> None:
        toks = self.tokens
        is_message = fd.cpp_type == _MESSAGE
        has_colon = toks.accept(":")
        if not is_message and not has_colon:
            raise self.error(f'expected ":" after field "{fd.name}"', line)
        if fd.is_repeated:
            if toks.accept("["):
                if toks.accept("]"):
                    return
                while True:
                    self._one_value(message, fd, line, top_layer)
                    if toks.accept("]"):
                        return
                    if not toks.accept(","):
                        raise self.error(f'expected "," or "]" in the list of "{fd.name}"',
                                         line)
            if not is_message:
                getattr(message, fd.name).append(self._scalar(fd))
                return
        elif not is_message:
            setattr(message, fd.name, self._scalar(fd))
            return
        self._one_value(message, fd, line, top_layer)

    def _one_value(self, message: Message, fd: FieldDescriptor, line: int,
                   top_layer: bool) -> None:
        repeated = fd.is_repeated
        if fd.cpp_type != _MESSAGE:
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
            self.layer = layer = LayerSource(fd.name, len(getattr(message, fd.name)) - 1, line)
            self.layers.append(layer)
            try:
                self._fields(sub, closing)
            finally:
                self.layer = None
            if self.on_layer is not None:
                self.on_layer(layer, sub)
        else:
            outer = self.prefix
            self.prefix = f"{outer}{fd.name}."
            try:
                self._fields(sub, closing)
            finally:
                self.prefix = outer

    def _scalar(self, fd: FieldDescriptor):
        toks = self.tokens
        kind, text, line = toks.next(f'a value for "{fd.name}"')
        cpp = fd.cpp_type
        try:
            if cpp == _STRING:
                if kind != "string":
                    raise ValueError("expected a quoted string")
                nxt = toks.peek()
                if nxt is None or nxt[0] != "string":
                    return _unquote(text)
                parts = [text]  # adjacent strings are one: "ab" "c" is "abc"
                while nxt is not None and nxt[0] == "string":
                    parts.append(nxt[1])
                    toks.pos += 1
                    nxt = toks.peek()
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
            stack = [_CLOSING[text]]
            while stack:
                kind, text, _ = toks.next(f"'{stack[-1]}'")
                if kind != "punct":
                    continue
                if text in "{<[":
                    stack.append(_CLOSING[text])
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


def parse_text(text: str, message: Message, *, file: str | None = None,
               on_layer: OnLayer | None = None) -> ParsedText:
    """Parse protobuf text format into `message`, recording where each layer and field is.

    `on_layer(source, layer)` is called as each top-level layer block closes, so a check of
    whole layers (unique names) can refuse the file there, before the rest is read."""
    return _Parser(text, file, on_layer).parse(message)
