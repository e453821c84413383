"""The one YAML loader of the workbench: every YAML file it reads (specs, targets, recipes) goes
through :func:`load_yaml` / :func:`loads_yaml`.

Safe by construction: ``yaml.SafeLoader`` (plain data only, never objects or code), UTF-8 text
only, at most :data:`MAX_BYTES` bytes, at most :data:`MAX_ALIASES` alias uses, at most
:data:`MAX_VALUES` values once aliases are expanded (a few hundred bytes of nested aliases, a
"billion laughs", would otherwise expand to billions of values in whatever reads the data), no
recursive aliases, at most :data:`MAX_DEPTH` levels of nesting, and no key twice in a mapping (YAML
would keep the last one silently). Every failure is one line of
the caller's error type naming the file (or the text's role) and, for a YAML error, its first
line and position.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

MAX_BYTES = 10 * 1024 * 1024
MAX_ALIASES = 100
MAX_VALUES = 1_000_000
MAX_DEPTH = 200


class _LimitError(yaml.YAMLError):
    """A limit of :class:`SafeLimitedLoader` was exceeded (its message is the whole story)."""


class SafeLimitedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with limits on aliases, expanded size and nesting depth."""

    def __init__(self, stream):
        super().__init__(stream)
        self._aliases = 0
        self._depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                mark = self.peek_event().start_mark
                raise _LimitError(f"more than {MAX_ALIASES} aliases (line {mark.line + 1}); expected plain data, not an alias bomb")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise _LimitError(f"nested more than {MAX_DEPTH} levels deep (line {mark.line + 1})")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        """A mapping whose keys are unique: a key given twice is an error naming it and its line
        (YAML would otherwise keep the last silently)."""
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # '<<: *base' merges keys: not a duplicate
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: SafeLoader's own error follows
                    continue
                line = key_node.start_mark.line + 1
                if first is not None:
                    raise _LimitError(f"duplicate key {short(key)} (line {line}, first given on line {first}); expected each key once in a mapping")
                seen[key] = line
        return super().construct_mapping(node, deep=deep)

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None and self._aliases:
            _check_expansion(node)
        return node


def short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _check_expansion(root) -> None:
    """Refuse recursive aliases and documents that expand to more than MAX_VALUES values."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise _LimitError("a recursive alias (a node that contains itself); expected plain data")
        active.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            for child in node.value:
                total += size(child)
                if total > MAX_VALUES:
                    break
        elif isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                total += size(k) + size(v)
                if total > MAX_VALUES:
                    break
        active.discard(key)
        if total > MAX_VALUES:
            raise _LimitError(f"it expands to more than {MAX_VALUES:,} values through aliases; expected plain data, not an alias bomb")
        sizes[key] = total
        return total

    size(root)


def _describe(exc: yaml.YAMLError) -> str:
    """The first line of a YAML error, with its position when it has one."""
    if isinstance(exc, _LimitError):
        return str(exc)
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if problem:
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        return f"{problem}{where}"
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def loads_yaml(data: str | bytes, what: str, error: type, name: str | None = None) -> Any:
    """Parse YAML text (``str`` or UTF-8 ``bytes``) safely; failures raise ``error`` naming
    ``name`` (a file) or else ``what`` (e.g. ``"spec"``)."""
    label = name if name is not None else what
    if isinstance(data, (bytes, bytearray)):
        if len(data) > MAX_BYTES:
            raise error(f"{label} is {len(data):,} bytes; expected a YAML {what} of at most {MAX_BYTES // (1024 * 1024)} MB")
        try:
            text = bytes(data).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise error(f"{label} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); expected a UTF-8 YAML {what}") from None
    elif isinstance(data, str):
        if len(data) > MAX_BYTES:
            raise error(f"{label} is {len(data):,} characters; expected a YAML {what} of at most {MAX_BYTES // (1024 * 1024)} MB")
        text = data
    else:
        raise error(f"{label} is a {type(data).__name__}; expected YAML text")
    try:
        loader = SafeLimitedLoader(text)  # a yaml.SafeLoader subclass: plain data only (it refuses control characters here)
    except yaml.YAMLError as exc:
        raise error(f"{label} is not valid YAML: {_describe(exc)}") from None
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        raise error(f"{label} is not valid YAML: {_describe(exc)}") from None
    except RecursionError:
        raise error(f"{label} is not valid YAML: nested too deeply") from None
    finally:
        loader.dispose()


def read_yaml(path: str | os.PathLike, what: str, error: type) -> tuple[Any, bytes]:
    """The parsed YAML file and its bytes (for checksums); failures raise ``error`` naming the file."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if path.is_dir():
            raise error(f"{path} is a folder; expected a YAML {what} file")
        if size > MAX_BYTES:
            raise error(f"{path} is {size:,} bytes; expected a YAML {what} of at most {MAX_BYTES // (1024 * 1024)} MB")
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise error(f"{what} file {str(path)!r} does not exist") from None
    except OSError as exc:
        raise error(f"cannot read {what} file {str(path)!r} ({exc.strerror or type(exc).__name__})") from None
    return loads_yaml(raw, what, error, name=str(path)), raw


def in_file(message: str, path: str | os.PathLike) -> str:
    """``message (in PATH)``, the message shortened so that the file is named within the error's cap."""
    from .errors import MAX_MESSAGE

    tail = f" (in {path})"
    room = MAX_MESSAGE - len(tail)
    text = " ".join(str(message).split())
    if len(text) > room:
        text = text[: room - 10] + " ... (cut)"
    return text + tail


def load_yaml(path: str | os.PathLike, what: str, error: type) -> Any:
    """The parsed YAML file; failures raise ``error`` naming the file."""
    return read_yaml(path, what, error)[0]
