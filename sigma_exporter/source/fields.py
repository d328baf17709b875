"""Reading one JSON object of a Sigma answer tolerantly, within a budget.

`Fields` looks keys up case-insensitively (`CPU`/`cpu`, `System`/`system`),
converts each value with the function it is given, and records the path of
every value that is present but unreadable as a parse error instead of
raising. `Budget` bounds how many entries one whole answer may yield, and
`text` makes any value a label-safe string. `parse.py` describes Sigma's
answers in these terms.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

V = TypeVar("V")

# Label values are capped: an answer must not be able to blow up a scrape.
MAX_LABEL_LENGTH = 256
# Lists are capped for the same reason (a GPU list of a million entries); a
# list cut at its cap is reported as a parse error of its path.
MAX_ITEMS = 1024
def text(value: object) -> str | None:
    """A label-safe string: valid UTF-8, bounded length; numbers become text."""
    if type(value) is str and len(value) <= MAX_LABEL_LENGTH and value.isascii():
        return value  # the common case: ASCII has no lone surrogates to clean
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value) if abs(value) < 10**18 else None
    if isinstance(value, float):
        return f"{value:g}" if value == value else None
    if not isinstance(value, str):
        return None
    # Lone surrogates (legal in JSON escapes) cannot be written out as UTF-8.
    cleaned = value.encode("utf-8", "replace").decode("utf-8")
    return cleaned[:MAX_LABEL_LENGTH]


class Budget:
    """How many more entries (list items, GPU fields, task states, jobs) one
    answer may yield. Caps per list multiply when lists nest; this bounds the
    whole answer, so what one server sends costs at most this many series
    (and their memory) before the poller refuses the rest."""

    __slots__ = ("exceeded", "left")

    def __init__(self, entries: int | None) -> None:
        self.left = entries
        self.exceeded = False

    def take(self, wanted: int) -> int:
        """How many of `wanted` entries may be read; the rest is over budget."""
        if self.left is None:
            return wanted
        granted = min(wanted, self.left)
        self.left -= granted
        if granted < wanted:
            self.exceeded = True
        return granted


# The object shapes (keys in order) `_key_map` remembers: Sigma's answers have
# a few dozen, the same on every server, each of fewer than 40 short keys. The
# keys are the server's to choose, so what is kept is capped: at most
# MAX_SHAPES shapes of at most MAX_SHAPE_KEYS keys and MAX_SHAPE_CHARS
# characters (a few MB at worst); any other shape is folded each time.
MAX_SHAPES = 1024
MAX_SHAPE_KEYS = 64
MAX_SHAPE_CHARS = 2048
_KEY_MAPS: dict[tuple[Any, ...], dict[str, Any]] = {}


def _key_map(obj: dict[Any, Any]) -> dict[str, Any]:
    """Lower-case key -> the key as the object writes it, for the object's shape.

    Of keys differing only in case the first wins. Folding the keys is most of
    what reading an object costs and every poll of every server sends the
    same few shapes, so each shape is folded once.
    """
    if len(obj) > MAX_SHAPE_KEYS:
        return _fold(obj)
    shape = tuple(obj)
    keys = _KEY_MAPS.get(shape)
    if keys is None:
        keys = _fold(obj)
        if (len(_KEY_MAPS) < MAX_SHAPES
                and sum(len(key) for key in shape if isinstance(key, str)) <= MAX_SHAPE_CHARS):
            _KEY_MAPS[shape] = keys
    return keys


def _fold(obj: dict[Any, Any]) -> dict[str, Any]:
    try:
        # Reversed, so that of keys differing only in case the first wins.
        return {key.lower(): key for key in reversed(obj)}
    except AttributeError:  # a non-string key (not from JSON): the slow way
        keys: dict[str, Any] = {}
        for key in obj:
            if isinstance(key, str):
                keys.setdefault(key.lower(), key)
        return keys


class Fields:
    """Case-insensitive view of one JSON object that records parse errors."""

    __slots__ = ("_budget", "_errors", "_keys", "_obj", "_path")

    def __init__(self, obj: dict[str, Any], path: str, errors: list[str],
                 budget: Budget) -> None:
        self._obj = obj
        self._keys = _key_map(obj)  # lower-case key -> key as written
        self._path = path
        self._errors = errors
        self._budget = budget

    def _raw(self, key: str) -> Any:
        """The value of `key` (lower case) matched case-insensitively; None if absent."""
        written = self._keys.get(key)
        return None if written is None else self._obj[written]

    def _error(self, key: str) -> None:
        # Keys come from the server: clean them like a label value (no lone
        # surrogates, bounded) before they become the `field` label.
        self._errors.append(text(f"{self._path}{key}") or "?")

    def get(
        self, key: str, convert: Callable[[object], V | None], required: bool = False
    ) -> V | None:
        """The converted value of `key`; None (and an error) when unreadable."""
        written = self._keys.get(key)  # `_raw`, inlined: this runs for every field
        raw = None if written is None else self._obj[written]
        if raw is None:  # absent (an error only when required) or null
            if required or key in self._keys:
                self._error(key)
            return None
        value = convert(raw)
        if value is None:
            self._error(key)
        return value

    def child(self, key: str, required: bool = False) -> Fields | None:
        raw = self._raw(key)
        if isinstance(raw, dict):
            return Fields(raw, f"{self._path}{key}.", self._errors, self._budget)
        if key in self._keys or required:
            self._error(key)
        return None

    def _list(self, key: str) -> list[Any]:
        """The entries of a list field (capped); null or a non-list is an error."""
        raw = self._raw(key)
        if isinstance(raw, list):
            if len(raw) > MAX_ITEMS:
                self._error(key)  # cut at its cap: counted, not silent
            return raw[:self._budget.take(min(len(raw), MAX_ITEMS))]
        if key in self._keys:
            self._error(key)
        return []

    def items(self, key: str) -> list[Fields]:
        """The objects of a list field; non-objects inside are errors."""
        out = []
        path = f"{self._path}{key}[]."
        for entry in self._list(key):
            if isinstance(entry, dict):
                out.append(Fields(entry, path, self._errors, self._budget))
            else:
                self._error(f"{key}[]")
        return out

    def strings(self, key: str) -> list[str]:
        """The strings of a list field (numbers are accepted as text)."""
        out = []
        for entry in self._list(key):
            value = text(entry)
            if value is None:
                self._error(f"{key}[]")
            else:
                out.append(value)
        return out

    def has(self, key: str) -> bool:
        return key in self._keys

    def raw_items(self) -> list[tuple[str, Any]]:
        """Every key (lower case) and value, as many as the answer's budget still allows."""
        keys = list(self._keys.items())
        obj = self._obj
        return [(key, obj[written]) for key, written in keys[:self._budget.take(len(keys))]]


def lower_text(value: object) -> str | None:
    result = text(value)
    return result.lower() if result is not None else None
