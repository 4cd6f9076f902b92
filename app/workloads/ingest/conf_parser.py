"""Splunk ``.conf`` files, parsed with Splunk's own rules.

- ``[stanza]`` starts a stanza; settings before the first one belong to ``default``;
- ``key = value``: keys are case-sensitive; whitespace around ``=`` and at both ends is
  trimmed;
- a line whose first non-blank character is ``#`` is a comment (there are no inline
  comments: ``a = b # c`` sets ``a`` to ``b # c``);
- a value ending in a backslash continues on the next line (joined with a newline);
- a stanza seen twice is merged, and a key set twice keeps its last value.

An uploaded file is hostile until parsed, so nothing here holds more than a bounded
amount: :func:`read_lines` refuses a line over MAX_LINE before reading it whole, and
:func:`stanzas` yields each stanza as it ends (a stanza seen twice is yielded twice, to
be merged by the caller), refusing one whose settings grow over MAX_STANZA. Both raise
ConfError with the line number.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from app.errors import PermanentError

DEFAULT_STANZA = "default"
#: Longest line, in characters, line break included.
MAX_LINE = 256 * 1024
#: Most characters of settings one stanza may hold (keys and values, and 6 per setting
#: for the quotes and separators they take as JSON): the number of settings is bounded
#: by it too.
MAX_STANZA = 1024 * 1024
#: What a setting adds to a stanza's size besides its key and value (as JSON: ``"":"",``).
SETTING_OVERHEAD = 6


class LineReader(Protocol):
    def readline(self, size: int, /) -> str: ...


class ConfError(PermanentError):
    """A .conf file is over a limit of the parser or holds what no database keeps."""


@dataclass
class Stanza:
    name: str
    line: int
    settings: dict[str, str] = field(default_factory=dict)
    size: int = 0

    def set(self, key: str, value: str, line: int) -> None:
        previous = self.settings.get(key)
        if previous is not None:
            self.size -= len(key) + len(previous) + SETTING_OVERHEAD
        self.grow(len(key) + len(value) + SETTING_OVERHEAD, line)
        self.settings[key] = value

    def grow(self, size: int, line: int) -> None:
        self.size += size
        if self.size > MAX_STANZA:
            raise ConfError(
                f"line {line}: stanza {self.name[:100]!r} over {MAX_STANZA} characters of settings"
            )


def read_lines(stream: LineReader) -> Iterator[str]:
    """The lines of ``stream``; one over MAX_LINE is refused before it is read whole."""
    number = 0
    while line := stream.readline(MAX_LINE + 1):
        number += 1
        if len(line) > MAX_LINE:
            raise ConfError(f"line {number}: longer than {MAX_LINE} characters")
        yield line


def stanzas(lines: Iterable[str]) -> Iterator[Stanza]:
    """Each stanza of a ``.conf`` file as it ends, in file order, a repeated one again."""
    current: Stanza | None = None
    pending_key: str | None = None
    pending_parts: list[str] = []
    pending_size = 0  # counted as it grows, then again as a setting: taken back then
    number = 0

    for number, raw in enumerate(lines, start=1):
        if len(raw) > MAX_LINE:
            raise ConfError(f"line {number}: longer than {MAX_LINE} characters")
        if "\x00" in raw:
            raise ConfError(f"line {number}: a NUL character")
        text = raw.rstrip("\r\n")
        if pending_key is not None:
            # Inside a continued value: the line is value text, whatever it looks like.
            assert current is not None
            more, continues = _continued(text)
            current.grow(len(more) + 1, number)
            pending_size += len(more) + 1
            pending_parts.append(more)
            if not continues:
                current.size -= pending_size
                current.set(pending_key, "\n".join(pending_parts).strip(), number)
                pending_key, pending_parts = None, []
            continue
        stripped = text.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("[") and stripped.endswith("]"):
            if current is not None:
                yield current
            current = Stanza(stripped[1:-1].strip(), number)
            continue
        key, equals, value = text.partition("=")
        if not equals or not key.strip():
            continue  # Splunk ignores a line that is not a setting.
        if current is None:
            current = Stanza(DEFAULT_STANZA, number)
        value, continues = _continued(value.strip())
        if continues:
            pending_key, pending_parts, pending_size = key.strip(), [value], len(value)
            current.grow(len(value), number)
        else:
            current.set(key.strip(), value, number)
    if current is not None:
        if pending_key is not None:
            current.size -= pending_size
            current.set(pending_key, "\n".join(pending_parts).strip(), number)
        yield current


def parse_conf(lines: Iterable[str]) -> list[Stanza]:
    """The stanzas of a ``.conf`` file, merged, in order of first appearance.

    Everything is held: for a file of known size. Uploads are merged on disk instead
    (``app.workloads.ingest.merging``).
    """
    merged: dict[str, Stanza] = {}
    for stanza in stanzas(lines):
        if stanza.name in merged:
            merged[stanza.name].settings.update(stanza.settings)
        else:
            merged[stanza.name] = stanza
    return list(merged.values())


def _continued(text: str) -> tuple[str, bool]:
    """The text without its continuation backslash, and whether it had one."""
    trimmed = text.rstrip()
    if trimmed.endswith("\\"):
        return trimmed[:-1], True
    return text, False
