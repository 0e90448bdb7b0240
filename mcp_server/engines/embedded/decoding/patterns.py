"""JSON Schema ``pattern`` regexes (ECMA-262 syntax) checked with RE2, in linear time.

The final output check (:func:`~.constraints.validate_output`) must not run a caller's regex
on Python's backtracking ``re``: ``^(a+)+$`` against 30 characters holds the interpreter lock
for seconds, and a thread does not help. This module translates a pattern from ECMA-262, the
dialect JSON Schema names (2020-12 Validation, section 6.3.3), to RE2 syntax, whose matching
time is linear in the input (google-re2), and gives ``jsonschema`` validator classes whose
``pattern`` and ``patternProperties`` use it.

Translation (ECMA-262 meaning kept):

* ``.`` excludes the four line terminators (``\\n``, ``\\r``, U+2028, U+2029);
* ``\\s``/``\\S`` are ECMA's white space and line terminators (RE2's ``\\s`` is ASCII only);
* ``\\uXXXX`` (surrogate pairs joined), ``\\u{X..}``, ``\\xXX``, ``\\cX``, ``\\0`` become
  ``\\x{..}``; ``(?<name>...)`` becomes a plain group; ``[^]`` matches any character;
* ``^``, ``$``, ``\\d``, ``\\w``, ``\\n`` ``\\r`` ``\\t`` ``\\f`` ``\\v``, quantifiers and
  escaped punctuation mean the same in both.

Refused (:class:`PatternError`, a 400 naming ``pattern`` for the caller): escapes ECMA-262 does
not define (``\\Z``, ``\\A``, ``\\z``, ... which the grammar engine reads as letters); a single
control character (raw or escaped, e.g. ``\\n``), ``"`` or ``\\\\`` outside a negated class or a
range (the grammar engine applies the pattern to the JSON text and would write them unescaped:
invalid JSON, or another string); ``^`` after the start or ``$`` before the end of the string
(the grammar engine ignores anchors: ``a$b`` would emit ``ab``); backreferences, lookaround, ``\\b``/``\\B``, ``\\p{..}``,
inline flags, the empty class ``[]``, patterns longer than :data:`MAX_PATTERN_LENGTH`
characters or nesting groups deeper than :data:`MAX_PATTERN_DEPTH`, and anything RE2 refuses
(e.g. a repetition count over 1000).
"""

from __future__ import annotations

import functools
import re
from typing import Any

import jsonschema
import re2

__all__ = ["MAX_PATTERN_DEPTH", "MAX_PATTERN_LENGTH", "PatternError", "compile_pattern", "re2_validator_for"]

MAX_PATTERN_LENGTH = 2000
"""Characters a ``pattern`` may have."""

MAX_PATTERN_DEPTH = 32
"""Groups a ``pattern`` may nest (Python's own regex parser, used by the meta-schema check, and
the grammar engine's, recurse per level)."""

_WHITE = r"\t\n\v\f\r\p{Zs}\x{2028}\x{2029}\x{feff}"  # ECMA-262 WhiteSpace and LineTerminator
_ANY = r"\x{0}-\x{10ffff}"
_DOT = r"[^\n\r\x{2028}\x{2029}]"
_SYNTAX = frozenset("^$\\.*+?()[]{}|/-")


_QUANTIFIER = re.compile(r"\{\d+(,\d*)?\}")


class PatternError(ValueError):
    """A pattern this module refuses; the message says why (without the pattern)."""


def _options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False
    return options


_OPTIONS = _options()


@functools.lru_cache(maxsize=1024)
def compile_pattern(pattern: str) -> Any:
    """Translate an ECMA-262 pattern and compile it with RE2 (cached).

    Returns:
        A compiled RE2 regex; its ``search`` is JSON Schema's match (unanchored).

    Raises:
        PatternError: see the module docstring.
    """
    translated = ecma_to_re2(pattern)
    try:
        return re2.compile(translated, _OPTIONS)
    except re2.error as exc:
        reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise PatternError(f"is not supported by the regex engine: {reason}") from None


def ecma_to_re2(pattern: str) -> str:
    """The RE2 regex with the meaning of the ECMA-262 ``pattern``.

    Raises:
        PatternError: see the module docstring.
    """
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise PatternError(f"is {len(pattern)} characters long; at most {MAX_PATTERN_LENGTH} are supported")
    out: list[str] = []
    anchors = _Anchors()
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            text, code, i = _escape(pattern, i, in_class=False)
            _refuse_unsafe(code)
            anchors.atom()
        elif char == "[":
            text, i = _class(pattern, i)
            anchors.atom()
        elif char == "(":
            text, i = _group(pattern, i)
            anchors.open()
        elif char in "*+?" or (char == "{" and _QUANTIFIER.match(pattern, i)):
            end = _QUANTIFIER.match(pattern, i).end() if char == "{" else i + 1
            text, i = pattern[i:end], end
        else:
            _refuse_unsafe(ord(char))
            {"^": anchors.start, "$": anchors.end, "|": anchors.alternative, ")": anchors.close}.get(char, anchors.atom)()
            text, i = (_DOT if char == "." else char), i + 1
        out.append(text)
    return "".join(out)


class _Anchors:
    """Checks that ``^`` can only match at the start of the string and ``$`` only at its end.

    The grammar engine matches a pattern against the whole string and ignores anchors, so
    ``a$b`` would make it emit ``ab``, which ECMA-262 never matches. Walking the pattern:
    ``^`` must come before any character of its alternative (and of the groups around it);
    after ``$`` only ``)``, ``|``, anchors and quantifiers may follow, and a group holding a
    ``$`` must itself end its alternative.
    """

    def __init__(self) -> None:
        self.can_start, self.must_end = True, False
        self.groups: list[list[bool]] = []  # per open group: [could start at its opening, holds a $]

    def atom(self) -> None:
        if self.must_end:
            raise PatternError("has '$' before the end of the string; the grammar would ignore it")
        self.can_start = False

    def start(self) -> None:
        if not self.can_start:
            raise PatternError("has '^' after the start of the string; the grammar would ignore it")

    def end(self) -> None:
        self.must_end = True
        if self.groups:
            self.groups[-1][1] = True

    def open(self) -> None:
        if self.must_end:
            self.atom()
        if len(self.groups) >= MAX_PATTERN_DEPTH:
            raise PatternError(f"nests groups deeper than {MAX_PATTERN_DEPTH} levels, the most supported")
        self.groups.append([self.can_start, False])

    def alternative(self) -> None:
        self.can_start, self.must_end = (self.groups[-1][0] if self.groups else True), False

    def close(self) -> None:
        if not self.groups:
            raise PatternError("has an unmatched ')'")
        _, holds_end = self.groups.pop()
        self.can_start, self.must_end = False, holds_end
        if holds_end and self.groups:
            self.groups[-1][1] = True


def _refuse_unsafe(code: int | None) -> None:
    """Refuse a character the grammar engine would write as it is into the JSON string: a
    control character (invalid JSON), ``"`` (ends the string) or ``\\`` (starts an escape).
    Ranges and negated classes are safe: the grammar leaves these characters out of them."""
    if code is None:
        return
    if code < 0x20:
        raise PatternError(
            f"matches the control character U+{code:04X} as such, which the grammar would write unescaped "
            "into the JSON string; leave it out (\\s and [^...] classes are fine)"
        )
    if chr(code) in '"\\':
        raise PatternError(
            f"matches the character {chr(code)} as such, which the grammar would write unescaped into the "
            f"JSON string; leave it out ([^...] classes and ranges are fine)"
        )


def _group(pattern: str, i: int) -> tuple[str, int]:
    """Translate the opening of a group at ``pattern[i] == '('``."""
    rest = pattern[i + 1 :]
    if not rest.startswith("?"):
        return "(", i + 1
    if rest.startswith("?:"):
        return "(?:", i + 3
    if rest.startswith(("?=", "?!", "?<=", "?<!")):
        raise PatternError("uses lookaround, which is not supported")
    if rest.startswith("?<") and ">" in rest:
        return "(?:", i + 1 + rest.index(">") + 1
    raise PatternError(f"uses the group syntax '({rest[:3]}', which ECMA-262 patterns do not define")


def _class(pattern: str, i: int) -> tuple[str, int]:
    """Translate a character class starting at ``pattern[i] == '['``."""
    i += 1
    negated = pattern.startswith("^", i)
    i += negated
    members: list[tuple[str, int | None]] = []  # RE2 text, and the code point of a single character
    while True:
        if i >= len(pattern):
            raise PatternError("has an unterminated character class '['")
        char = pattern[i]
        if char == "]":
            i += 1
            break
        if char == "\\":
            text, code, i = _escape(pattern, i, in_class=True)
            members.append((text, code))
            continue
        members.append(("\\" + char if char in "[]" else char, ord(char)))
        i += 1
    if not negated:
        ends = {j + d for j, (text, _) in enumerate(members) if text == "-" and 0 < j < len(members) - 1 for d in (-1, 1)}
        for j, (_, code) in enumerate(members):
            if j not in ends and members[j][0] != "-":
                _refuse_unsafe(code)
    texts = [text for text, _ in members]
    if r"\S" in texts:
        kinds = set(texts)
        if kinds - {r"\S", "[" + _WHITE + "]"}:
            raise PatternError(r"uses \S inside a character class with other members, which is not supported")
        if len(kinds) == 1:  # [\S] or [^\S]
            return ("[" if negated else "[^") + _WHITE + "]", i
        if negated:
            raise PatternError(r"has the class [^\s\S], which matches nothing")
        return "[" + _ANY + "]", i
    if not texts:
        if negated:
            return "[" + _ANY + "]", i
        raise PatternError("has the empty class '[]', which matches nothing")
    body = "".join(_WHITE if t == "[" + _WHITE + "]" else t for t in texts)
    return ("[^" if negated else "[") + body + "]", i


_CONTROL_ESCAPES = {"n": 0x0A, "r": 0x0D, "t": 0x09, "f": 0x0C, "v": 0x0B}


def _escape(pattern: str, i: int, in_class: bool) -> tuple[str, int | None, int]:
    """Translate the escape at ``pattern[i] == '\\\\'``.

    Returns:
        The RE2 text, the code point it matches when it is one character (else None), and
        the index after the escape.
    """
    if i + 1 >= len(pattern):
        raise PatternError("ends with a lone backslash")
    char = pattern[i + 1]
    if char in "dDwW":
        return "\\" + char, None, i + 2
    if char in _CONTROL_ESCAPES:
        return "\\" + char, _CONTROL_ESCAPES[char], i + 2
    if char == "s":
        return "[" + _WHITE + "]", None, i + 2
    if char == "S":
        return (r"\S" if in_class else "[^" + _WHITE + "]"), None, i + 2
    if char == "b" and in_class:
        return _code_point(8), 8, i + 2
    if char == "0" and not pattern[i + 2 : i + 3].isdigit():
        return _code_point(0), 0, i + 2
    if char == "x" and _is_hex(pattern[i + 2 : i + 4], 2):
        code = int(pattern[i + 2 : i + 4], 16)
        return _code_point(code), code, i + 4
    if char == "c" and pattern[i + 2 : i + 3].isascii() and pattern[i + 2 : i + 3].isalpha():
        code = ord(pattern[i + 2]) % 32
        return _code_point(code), code, i + 3
    if char == "u":
        code, end = _unicode_escape(pattern, i)
        return _code_point(code), code, end
    if char in _SYNTAX:
        return "\\" + char, ord(char), i + 2
    if char == '"':
        return '"', ord(char), i + 2
    if char.isdigit() or char == "k":
        raise PatternError("uses a backreference, which is not supported")
    if char in "bB":
        raise PatternError(f"uses \\{char} (a word boundary), which is not supported")
    if char in "pP":
        raise PatternError(f"uses \\{char}{{...}} (a Unicode property), which is not supported")
    raise PatternError(
        f"uses the escape \\{char}, which ECMA-262 patterns (JSON Schema's dialect) do not define"
        + (f" (\\{char} is not an anchor here; use ^ and $)" if char in "AZz" else "")
    )


def _unicode_escape(pattern: str, i: int) -> tuple[int, int]:
    """The code point of ``\\uXXXX`` (a surrogate pair joined) or ``\\u{X...}`` at ``pattern[i]``,
    and the index after it."""
    if pattern.startswith("{", i + 2) and "}" in pattern[i + 3 :]:
        end = pattern.index("}", i + 3)
        digits = pattern[i + 3 : end]
        if _is_hex(digits, len(digits)) and 0 < len(digits) <= 6 and int(digits, 16) <= 0x10FFFF:
            return int(digits, 16), end + 1
    digits = pattern[i + 2 : i + 6]
    if not _is_hex(digits, 4):
        raise PatternError("has an invalid \\u escape; write \\uXXXX with 4 hex digits")
    code = int(digits, 16)
    low = pattern[i + 8 : i + 12] if pattern.startswith("\\u", i + 6) else ""
    if 0xD800 <= code < 0xDC00 and _is_hex(low, 4) and 0xDC00 <= int(low, 16) < 0xE000:
        return 0x10000 + ((code - 0xD800) << 10) + int(low, 16) - 0xDC00, i + 12
    if 0xD800 <= code < 0xE000:
        raise PatternError("has a lone surrogate escape (\\uD800 to \\uDFFF), which no JSON text can match")
    return code, i + 6


def _is_hex(text: str, length: int) -> bool:
    return len(text) == length and all(c in "0123456789abcdefABCDEF" for c in text)


def _code_point(code: int) -> str:
    return f"\\x{{{code:x}}}"


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Any:
    if validator.is_type(instance, "string") and compile_pattern(pattern).search(instance) is None:
        shown = instance if len(instance) <= 80 else instance[:80] + "..."
        yield jsonschema.ValidationError(f"{shown!r} does not match {pattern!r}")


def _pattern_properties(validator: Any, properties: dict[str, Any], instance: Any, schema: Any) -> Any:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in properties.items():
        regex = compile_pattern(pattern)
        for name, value in instance.items():
            if regex.search(name) is not None:
                yield from validator.descend(value, subschema, path=name, schema_path=pattern)


@functools.cache
def _extend(base: type) -> type:
    return jsonschema.validators.extend(base, {"pattern": _pattern, "patternProperties": _pattern_properties})


def re2_validator_for(schema: Any) -> type:
    """The ``jsonschema`` validator class for ``schema`` (by its ``$schema``, default 2020-12)
    with ``pattern`` and ``patternProperties`` checked by RE2 (:func:`compile_pattern`).

    ``additionalProperties`` next to ``patternProperties`` still matches names with ``re``;
    the constraints module refuses ``patternProperties`` for decoding, so that pair never
    reaches a check.
    """
    return _extend(jsonschema.validators.validator_for(schema))
