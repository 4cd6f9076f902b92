"""Splunk ``.conf`` files, parsed with Splunk's own rules.

- ``[stanza]`` starts a stanza; settings before the first one belong to ``default``;
- ``key = value``: keys are case-sensitive; whitespace around ``=`` and at both ends is
  trimmed;
- a line whose first non-blank character is ``#`` is a comment (there are no inline
  comments: ``a = b # c`` sets ``a`` to ``b # c``);
- a value ending in a backslash continues on the next line (joined with a newline);
- a stanza seen twice is merged, and a key set twice keeps its last value.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

DEFAULT_STANZA = "default"


@dataclass
class Stanza:
    name: str
    line: int
    settings: dict[str, str] = field(default_factory=dict)


def parse_conf(lines: Iterable[str]) -> list[Stanza]:
    """The stanzas of a ``.conf`` file, in order of first appearance."""
    stanzas: dict[str, Stanza] = {}
    current: Stanza | None = None
    pending_key: str | None = None
    pending_parts: list[str] = []

    def stanza(name: str, line: int) -> Stanza:
        if name not in stanzas:
            stanzas[name] = Stanza(name, line)
        return stanzas[name]

    for number, raw in enumerate(lines, start=1):
        text = raw.rstrip("\r\n")
        if pending_key is not None:
            # Inside a continued value: the line is value text, whatever it looks like.
            more, continues = _continued(text)
            pending_parts.append(more)
            if not continues:
                assert current is not None
                current.settings[pending_key] = "\n".join(pending_parts).strip()
                pending_key, pending_parts = None, []
            continue
        stripped = text.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("[") and stripped.endswith("]"):
            current = stanza(stripped[1:-1].strip(), number)
            continue
        key, equals, value = text.partition("=")
        if not equals or not key.strip():
            continue  # Splunk ignores a line that is not a setting.
        if current is None:
            current = stanza(DEFAULT_STANZA, number)
        value, continues = _continued(value.strip())
        if continues:
            pending_key, pending_parts = key.strip(), [value]
        else:
            current.settings[key.strip()] = value
    if pending_key is not None and current is not None:
        current.settings[pending_key] = "\n".join(pending_parts).strip()
    return list(stanzas.values())


def _continued(text: str) -> tuple[str, bool]:
    """The text without its continuation backslash, and whether it had one."""
    trimmed = text.rstrip()
    if trimmed.endswith("\\"):
        return trimmed[:-1], True
    return text, False
