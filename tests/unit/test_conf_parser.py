"""Splunk .conf parsing: the rules, then a real add-on's files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.workloads.ingest.conf_parser import parse_conf

SPLUNK_TA = Path(__file__).resolve().parents[3] / "shared/data/splunk/Splunk_TA_paloalto/default"


def _parse(text: str) -> dict[str, dict[str, str]]:
    return {s.name: s.settings for s in parse_conf(text.splitlines(keepends=True))}


def test_settings_before_the_first_stanza_belong_to_default() -> None:
    assert _parse("a = 1\n[x]\nb = 2\n") == {"default": {"a": "1"}, "x": {"b": "2"}}


def test_whitespace_is_trimmed_and_keys_keep_their_case() -> None:
    assert _parse("[s]\n  Key =   v a l  \nkey=other\n") == {"s": {"Key": "v a l", "key": "other"}}


def test_comments_are_whole_lines_only() -> None:
    parsed = _parse("[s]\n# a = 1\n   # b = 2\nc = 3 # not a comment\n")
    assert parsed == {"s": {"c": "3 # not a comment"}}


def test_a_trailing_backslash_continues_the_value() -> None:
    parsed = _parse("[s]\nsearch = index=main \\\n  | stats count \\\n  by host\nnext = 1\n")
    assert parsed["s"]["search"] == "index=main \n  | stats count \n  by host"
    assert parsed["s"]["next"] == "1"


def test_a_repeated_stanza_merges_and_a_repeated_key_keeps_the_last_value() -> None:
    stanzas = parse_conf("[s]\na = 1\nb = 1\n[t]\nx = 0\n[s]\na = 2\n".splitlines())
    assert [(s.name, s.line, s.settings) for s in stanzas] == [
        ("s", 1, {"a": "2", "b": "1"}),
        ("t", 4, {"x": "0"}),
    ]


def test_values_may_contain_equals_signs_and_brackets() -> None:
    assert _parse("[source::/var/log/[a]]\nREGEX = ^a=b$\n") == {
        "source::/var/log/[a]": {"REGEX": "^a=b$"}
    }


@pytest.mark.parametrize("path", sorted(SPLUNK_TA.glob("*.conf")), ids=lambda p: p.name)
def test_every_stanza_header_of_the_real_add_on_is_found(path: Path) -> None:
    text = path.read_text()
    headers = {m.group(1).strip() for m in re.finditer(r"^\s*\[(.*)\]\s*$", text, re.M)}
    names = {s.name for s in parse_conf(text.splitlines())}
    assert headers <= names
    assert names - headers <= {"default"}


def test_real_settings_are_read_as_splunk_reads_them() -> None:
    props = {
        s.name: s.settings for s in parse_conf((SPLUNK_TA / "props.conf").read_text().splitlines())
    }
    assert props["pan_log"]["TIME_PREFIX"] == "^(?:[^,]*,){5}"
    assert props["pan_log"]["SHOULD_LINEMERGE"] == "false"
    assert "SEDCMD-6_1_0" not in props["pan_log"]  # commented out in the file
    app = {
        s.name: s.settings for s in parse_conf((SPLUNK_TA / "app.conf").read_text().splitlines())
    }
    assert app["launcher"]["version"] == "6.2.0"
    alerts = parse_conf((SPLUNK_TA / "alert_actions.conf").read_text().splitlines())
    cam = next(s.settings["param._cam"] for s in alerts if "param._cam" in s.settings)
    assert cam.startswith("{\n") and '"Palo Alto Networks"' in cam and cam.endswith("}")
