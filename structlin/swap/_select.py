"""Which modules a swap takes: name patterns (exact/suffix, glob, regex), per-pattern options, clear misses.

A pattern is one of:

- a plain name (no ``*``, ``?``, ``[``): matches a module whose qualified name is that name or ends with ``"."``
  and that name, as PEFT's ``target_modules`` do: ``"fc1"``, ``"mlp.c_fc"``, ``"encoder.layer.0.output.dense"``;
- a glob (``fnmatch``, case-sensitive) on the whole qualified name; ``*`` matches any characters, dots included,
  so ``"blocks.*"`` is everything below ``blocks`` and ``"layer.*.output.dense"`` also matches
  ``"layer.0.attention.output.dense"``;
- a regular expression, as a compiled ``re.Pattern`` or a string ``"re:<expression>"``, that must match the whole
  qualified name (``re.fullmatch``): ``r"re:encoder\\.layer\\.\\d+\\.output\\.dense"``.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Mapping, Sequence

__all__ = ["Pattern", "parse_patterns", "PatternOptions", "select", "check_patterns"]

_GLOB_CHARACTERS = frozenset("*?[")
_INDEX = re.compile(r"(?<=\.)\d+(?=\.|$)|^\d+(?=\.|$)")


class Pattern:
    """One include/exclude entry; ``text`` is how the user wrote it (for messages)."""

    def __init__(self, text: str):
        self.text = text

    def matches(self, name: str) -> bool:
        raise NotImplementedError

    def __repr__(self) -> str:
        return repr(self.text)


class NamePattern(Pattern):
    """A plain name: the whole qualified name or its last dot-separated parts."""

    def matches(self, name: str) -> bool:
        return name == self.text or name.endswith("." + self.text)


class GlobPattern(Pattern):
    """An ``fnmatch`` glob on the whole qualified name (``*`` crosses dots)."""

    def matches(self, name: str) -> bool:
        return fnmatchcase(name, self.text)


class RegexPattern(Pattern):
    """A regular expression that must match the whole qualified name."""

    def __init__(self, text: str, regex: re.Pattern):
        super().__init__(text)
        self.regex = regex

    def matches(self, name: str) -> bool:
        return self.regex.fullmatch(name) is not None


def parse_pattern(entry: Any, what: str) -> Pattern:
    """A :class:`Pattern` from a user's entry (see the module docstring)."""
    if isinstance(entry, re.Pattern):
        return RegexPattern(f"re:{entry.pattern}", entry)
    if not isinstance(entry, str) or not entry:
        raise TypeError(f"{what} entries must be non-empty strings or compiled re.Pattern objects, got {entry!r}")
    if entry.startswith("re:"):
        try:
            return RegexPattern(entry, re.compile(entry[3:]))
        except re.error as error:
            raise ValueError(f"{what} entry {entry!r} is not a valid regular expression: {error}") from None
    if _GLOB_CHARACTERS.intersection(entry):
        return GlobPattern(entry)
    return NamePattern(entry)


@dataclass
class PatternOptions:
    """A pattern and the layer options it gives the modules it matches (empty for a plain include)."""

    pattern: Pattern
    options: dict


def parse_patterns(value: Any, what: str, *, with_options: bool) -> list[PatternOptions] | None:
    """``None``, one entry, a sequence of entries, or (when ``with_options``) a mapping entry → options dict."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        if not with_options:
            raise TypeError(f"{what} takes patterns, not a mapping of options (options go with include)")
        items = list(value.items())
    elif isinstance(value, (str, re.Pattern)):
        items = [(value, None)]
    elif isinstance(value, Sequence):
        items = [(entry, None) for entry in value]
    else:
        raise TypeError(f"{what} must be a pattern, a list of patterns"
                        f"{' or a dict from pattern to options' if with_options else ''}, got {value!r}")
    if not items:
        raise TypeError(f"{what} must name at least one pattern, got {value!r}")
    parsed = []
    for entry, options in items:
        if options is not None and not isinstance(options, Mapping):
            raise TypeError(f"the options of {what} pattern {entry!r} must be a dict (or None), got {options!r}")
        parsed.append(PatternOptions(parse_pattern(entry, what), dict(options or {})))
    return parsed


def _collapse(name: str) -> str:
    """``encoder.layer.3.output.dense`` → ``encoder.layer.*.output.dense``: a name with its indices starred."""
    return _INDEX.sub("*", name)


def _tails(names) -> set[str]:
    """The names with indices starred, and their last one and two dot-separated parts."""
    tails = set()
    for name in names:
        collapsed = _collapse(name)
        parts = collapsed.split(".")
        tails.update({collapsed, parts[-1], ".".join(parts[-2:])})
    return tails


def _describe_miss(pattern: Pattern, names: list[str], others: Mapping[str, str]) -> str:
    """Why ``pattern`` matched nothing: modules of other types it names, a glob that would match below the top
    level, close names of linear layers, and close names of other modules (a layer swapped already, say)."""
    lines = []
    not_linear = [name for name in others if pattern.matches(name)]
    if not_linear:
        shown = ", ".join(f"{name} ({others[name]})" for name in not_linear[:3])
        shown += ", …" if len(not_linear) > 3 else ""
        inside = _collapse(not_linear[0]) + ".*"
        lines.append(f"  {pattern!r} names modules that are not linear layers: {shown}; to take the linear layers "
                     f"inside, use a glob such as {inside!r}")
    if isinstance(pattern, GlobPattern) and not pattern.text.startswith("*"):
        below = GlobPattern("*." + pattern.text)
        count = sum(below.matches(n) for n in names)
        if count:
            lines.append(f"  a glob matches the whole name: {below!r} matches {count} linear layer(s)")
    key = pattern.text[3:] if isinstance(pattern, RegexPattern) else pattern.text
    close = [n for n in difflib.get_close_matches(key, sorted(_tails(names)), n=6, cutoff=0.6) if n != key][:5]
    if close:
        lines.append(f"  close to {pattern!r}: {', '.join(close)}")
    if not not_linear:
        types: dict[str, str] = {}
        for name, kind in others.items():
            for tail in _tails([name]):
                types.setdefault(tail, kind)
        near = [n for n in difflib.get_close_matches(key, sorted(types), n=3, cutoff=0.8) if n != key]
        if near:
            shown = ", ".join(f"{tail} ({types[tail]})" for tail in near)
            lines.append(f"  close to {pattern!r} but not linear layers: {shown}")
    return "\n".join(lines)


def check_patterns(patterns: list[PatternOptions] | None, what: str, names: list[str],
                   others: Mapping[str, str]) -> None:
    """``ValueError`` when an entry of ``patterns`` matches none of ``names`` (the linear layers' names), with
    close names and the model's linear layers listed with indices collapsed; ``others`` maps the names of the
    model's other modules to their type names."""
    if patterns is None:
        return
    unmatched = [p.pattern for p in patterns if not any(p.pattern.matches(n) for n in names)]
    if not unmatched:
        return
    collapsed = list(dict.fromkeys(_collapse(n) for n in names))
    listing = ", ".join(collapsed) if collapsed else "(the model has none)"
    details = "\n".join(filter(None, (_describe_miss(p, names, others) for p in unmatched)))
    raise ValueError(
        f"{what} pattern(s) {unmatched} match no linear layer (nn.Linear or a registered linear-like type).\n"
        f"{details + chr(10) if details else ''}"
        "A plain name matches a module named so or ending in '.<name>' ('fc1', 'mlp.c_fc'); a glob matches the "
        "whole name ('*' crosses dots); 're:<regex>' must match the whole name.\n"
        f"The model's linear layers ('*' standing for indices): {listing}"
    )


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    try:
        return bool(a == b)
    except (TypeError, ValueError, RuntimeError):  # e.g. tensors of several elements
        return False


def select(name_lists: Sequence[list[str]], include: list[PatternOptions] | None,
           exclude: list[PatternOptions] | None) -> list[dict | None]:
    """For each module (given by all its names): ``None`` if it is not selected, else the options its matching
    include patterns give (merged; two patterns giving one option different values is a ``ValueError``)."""
    chosen: list[dict | None] = []
    for names in name_lists:
        if exclude is not None and any(p.pattern.matches(n) for n in names for p in exclude):
            chosen.append(None)
            continue
        if include is None:
            chosen.append({})
            continue
        matching = [p for p in include if any(p.pattern.matches(n) for n in names)]
        if not matching:
            chosen.append(None)
            continue
        options: dict = {}
        source: dict = {}
        for entry in matching:
            for key, value in entry.options.items():
                if key in options and not _same(options[key], value):
                    raise ValueError(
                        f"{names[0]!r} matches include patterns {source[key]!r} and {entry.pattern!r}, which give "
                        f"{key!r} different values ({options[key]!r} and {value!r}); make the patterns disjoint"
                    )
                options[key], source[key] = value, entry.pattern
        chosen.append(options)
    return chosen
