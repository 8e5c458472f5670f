"""JSON through CPython's C accelerator (``_json``) alone, for the runtime's start path: the `json` package
compiles its fallback regular expressions at import, which pulls in `re` and `enum` (several ms of a
~15 ms container start). Same results as json.loads/json.dumps for what the runtime reads and writes;
``indent`` (only for `state`, `spec` and `features` output) goes to the `json` package."""

from __future__ import annotations

import _json

_WHITESPACE = " \t\n\r"
_CONSTANTS = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


class _Context:
    """The attributes _json.make_scanner reads from a json.JSONDecoder."""
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = _CONSTANTS.__getitem__
    memo: dict = {}


_scan = _json.make_scanner(_Context())


def _skip(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _WHITESPACE:
        pos += 1
    return pos


def loads(text: str | bytes):
    """json.loads; ValueError (as json.JSONDecodeError is one) naming the position on bad input."""
    if isinstance(text, (bytes, bytearray)):
        text = text.decode()
    start = _skip(text, 0)
    try:
        obj, end = _scan(text, start)
    except StopIteration as exc:
        raise ValueError(f"Expecting value: char {exc.value}") from None
    end = _skip(text, end)
    if end != len(text):
        raise ValueError(f"Extra data: char {end}")
    return obj


def load(fh):
    return loads(fh.read())


def _unserializable(obj):
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


_encode = _json.make_encoder(None, _unserializable, _json.encode_basestring_ascii, None, ": ", ", ",
                             False, False, True)
_encode_compact = _json.make_encoder(None, _unserializable, _json.encode_basestring_ascii, None, ":", ",",
                                     False, False, True)


def dumps(obj, indent=None, separators=None) -> str:
    if indent is not None:
        import json

        return json.dumps(obj, indent=indent, separators=separators)
    encoder = _encode_compact if separators == (",", ":") else _encode
    return "".join(encoder(obj, 0))


def dump(obj, fh, indent=None) -> None:
    fh.write(dumps(obj, indent=indent))
