"""The one strict YAML reader: a file in, typed values out, every mistake a ConfigError.

Strict means: a key written twice in one mapping is refused (PyYAML would
keep the last one silently), an unknown key is refused, and every value is
checked for its type. Each error names the file, the key and the fix. The
config file, the web config file and the simulator's scenarios read through
here; the value grammars themselves are in sigma_exporter.grammar.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from typing import Any

import yaml

from sigma_exporter.grammar import DURATION_FIX, SIZE_FIX, parse_duration, parse_size


class ConfigError(Exception):
    """A configuration mistake: where it is and how to fix it.

    `target` names the target the key belongs to, when it has a name, so a
    message about `targets[7].timeout` also says which server that is.
    """

    def __init__(self, source: str, key: str, problem: str, fix: str,
                 target: str | None = None) -> None:
        self.source, self.key, self.problem, self.fix = source, key, problem, fix
        self.target = target
        where = f"{key} (target {target})" if target else key
        # A flag is its own key (`--target`): named once, not `--target: --target:`.
        place = source if where == source else f"{source}: {where}"
        super().__init__(f"{place}: {problem}. Fix: {fix}")


class ConfigErrors(ConfigError):
    """Every mistake found in one file, so one run shows them all.

    It reads as its first mistake (key, problem, fix) for callers that want
    one; its message lists each on a line of its own.
    """

    def __init__(self, errors: list[ConfigError]) -> None:
        first = errors[0]
        super().__init__(first.source, first.key, first.problem, first.fix, first.target)
        self.errors = errors
        if len(errors) > 1:
            self.args = (f"{len(errors)} problems:\n" + "\n".join(f"  {e}" for e in errors),)


# --- the file ------------------------------------------------------------------


def read_text(path: str) -> str:
    """A regular file's text (UTF-8). Opened non-blocking and checked first: a
    FIFO or device put in a config file's place would block the loop reading
    it; it is refused instead (OSError, `not a regular file`)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(0, "not a regular file")
        os.set_blocking(fd, True)
        with os.fdopen(fd, encoding="utf-8") as handle:
            fd = -1  # the handle owns it now
            return handle.read()
    finally:
        if fd >= 0:
            os.close(fd)


class _DuplicateKey(yaml.MarkedYAMLError):
    pass


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key written twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:  # before merges: a key may override a `<<:` one
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str | int | float | bool) and key in seen:
                raise _DuplicateKey(problem=f"the key {key!r} is written twice",
                                    problem_mark=key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str, flag: str) -> Any:
    """A YAML file's content; every way it can fail is a ConfigError naming `flag`."""
    try:
        return yaml.load(read_text(path), Loader=_StrictLoader)  # noqa: S506 - a SafeLoader
    except OSError as exc:
        raise ConfigError(path, "(file)", f"cannot read the file: {exc.strerror}",
                          f"check the path given to {flag}") from None
    except UnicodeDecodeError:
        raise ConfigError(path, "(file)", "not UTF-8 text", "save the file as UTF-8") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "(file)"
        if isinstance(exc, _DuplicateKey):
            raise ConfigError(path, where, str(exc.problem),
                              "keep the key once (YAML would silently use the last one)") \
                from None
        raise ConfigError(path, where, f"not valid YAML: {getattr(exc, 'problem', exc)}",
                          "fix the YAML syntax (indentation, colons, quotes)") from None


# --- typed values ------------------------------------------------------------------


class Reader:
    """Typed readers for the values of one file; each mistake is a ConfigError.

    `unknown_key_note` is added to the "unknown key" problem (the web config
    says whose format it follows); `base_dir` is where relative paths start
    (None: the working directory).
    """

    def __init__(self, source: str, unknown_key_note: str = "",
                 base_dir: str | None = None) -> None:
        self.source = source
        self.unknown_key_note = unknown_key_note
        self.base_dir = base_dir

    def error(self, key: str, problem: str, fix: str) -> ConfigError:
        return ConfigError(self.source, key, problem, fix)

    def mapping(self, value: object, key: str, allowed: set[str] | None) -> Mapping[str, Any]:
        """A mapping (None reads as empty) whose keys are all in `allowed` (None: any)."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            problem = f"must be a mapping, not {type(value).__name__}"
            if not key:
                raise self.error("(file)", problem, "the file must be a YAML mapping")
            raise self.error(key, problem,
                             f"write `{key}:` followed by indented `name: value` lines")
        if allowed is not None:
            for name in value:
                if name not in allowed:
                    raise self.error(f"{key}.{name}" if key else str(name),
                                     f"unknown key{self.unknown_key_note}",
                                     f"use one of: {', '.join(sorted(allowed))}")
        return value

    def string(self, value: object, key: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.error(key, "must be a non-empty string", f"write `{key}: some-text`")
        return value

    def choice(self, value: object, key: str, choices: Mapping[str, object] | tuple[str, ...]
               ) -> str:
        if not isinstance(value, str) or value not in choices:
            raise self.error(key, f"{value!r} is not known", f"use one of: {', '.join(choices)}")
        return value

    def boolean(self, value: object, key: str, why: str = "") -> bool:
        if not isinstance(value, bool):
            raise self.error(key, f"{value!r} is not true or false",
                             f"write `true` or `false`{why}")
        return value

    def integer(self, value: object, key: str, minimum: int = 1) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.error(key, f"{value!r} is not a whole number >= {minimum}",
                             f"write e.g. `{key.rsplit('.', 1)[-1]}: {max(minimum, 4)}`")
        return value

    def number(self, value: object, key: str, example: float, minimum: float = 0.0) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not \
                minimum <= value < float("inf"):
            raise self.error(key, f"{value!r} is not a number >= {minimum:g}",
                             f"write e.g. `{key.rsplit('.', 1)[-1]}: {example:g}`")
        return float(value)

    def duration(self, value: object, key: str, allow_zero: bool = False) -> float:
        """Seconds of a Prometheus duration (sigma_exporter.grammar); above zero unless
        `allow_zero` (then a bare `0` is accepted too)."""
        if allow_zero and type(value) is int and value == 0:
            return 0.0
        if not isinstance(value, str):  # a bare YAML number has no unit
            raise self.error(key, f"{value!r} is not a duration", DURATION_FIX)
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise self.error(key, f"{value!r} is not a duration ({exc})", DURATION_FIX) \
                from None
        if seconds <= 0 and not allow_zero:
            raise self.error(key, "must be greater than zero", "write e.g. `15s`")
        return seconds

    def size(self, value: object, key: str) -> int:
        try:
            if isinstance(value, bool):
                raise ValueError("not a size")
            size = parse_size(str(value))
        except ValueError:
            raise self.error(key, f"{value!r} is not a size", SIZE_FIX) from None
        if size <= 0:
            raise self.error(key, "must be greater than zero", "write e.g. `8MiB`")
        return size

    def regex(self, value: object, key: str) -> re.Pattern[str]:
        text = self.string(value, key)
        try:
            return re.compile(text)
        except re.error as exc:
            raise self.error(key, f"invalid regular expression: {exc}",
                             "write a Python regular expression, e.g. `^VTV`") from None

    def file(self, value: object, key: str, what: str = "a PEM file") -> str:
        """The path of an existing file, relative paths from `base_dir`."""
        if not isinstance(value, str) or not value:
            raise self.error(key, "must be a file path",
                             f"write `{key.rsplit('.', 1)[-1]}: /path/to/file.pem`")
        path = value
        if self.base_dir is not None and not os.path.isabs(value):
            path = os.path.join(self.base_dir, value)
        if not os.path.isfile(path):
            relative = "" if self.base_dir is None else \
                f" (a relative path starts in {self.base_dir})"
            raise self.error(key, f"file {value} does not exist",
                             f"give the path of {what} the exporter can read{relative}")
        return path
