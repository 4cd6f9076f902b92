"""Splunk .conf parsing: the rules, then the files of the sample add-on written for them
(the real add-ons of the corpus: tests/integration/test_splunk_corpus.py)."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from app.workloads.ingest.conf_parser import MAX_LINE, ConfError, parse_conf, read_lines, stanzas
from tests.support.splunk import SAMPLE_ADD_ON, conf_files


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


@pytest.mark.parametrize(
    "path", conf_files(SAMPLE_ADD_ON), ids=lambda p: p.relative_to(SAMPLE_ADD_ON).as_posix()
)
def test_every_stanza_header_of_the_sample_add_on_is_found(path: Path) -> None:
    text = path.read_text()
    headers = {m.group(1).strip() for m in re.finditer(r"^\s*\[(.*)\]\s*$", text, re.M)}
    names = {s.name for s in parse_conf(text.splitlines())}
    assert headers <= names
    assert names - headers <= {"default"}


def _sample(relative: str) -> dict[str, dict[str, str]]:
    with (SAMPLE_ADD_ON / relative).open(newline="") as lines:  # CRLF kept, as uploaded
        return {s.name: s.settings for s in parse_conf(lines)}


def test_the_sample_add_on_is_read_as_splunk_reads_it() -> None:
    props = _sample("default/props.conf")
    # Settings before the first stanza and an explicit [default] are one stanza.
    assert props["default"] == {
        "TRUNCATE": "10000",
        "SHOULD_LINEMERGE": "false",
        "CHARSET": "UTF-8",
    }
    access = props["jobstack:access"]
    assert access["TIME_PREFIX"] == "^(?:[^,]*,){5}"
    assert access["MAX_TIMESTAMP_LOOKAHEAD"] == "40"  # the repeated stanza's value
    assert access["KV_MODE"] == "none"  # merged from the repeated stanza
    assert "SEDCMD-mask" not in access  # commented out in the file
    assert access["REPORT-fields"].endswith("# no inline comments: this is part of the value")
    assert access["EXTRACT-empty"] == ""
    assert (access["Lookup_Case"], access["lookup_case"]) == ("upper", "lower")
    assert props["source::/var/log/jobstack/[a-z]*.log"]["priority"] == "10"
    assert list(props) == ["default", "jobstack:access", "source::/var/log/jobstack/[a-z]*.log"]

    transforms = _sample("default/transforms.conf")
    assert transforms["lookup with spaces"]["filename"] == "jobstack lookup.csv"
    assert transforms["jobstack_access_fields"]["FIELDS"] == (
        '"time", "host", \n  "status", \n  "bytes"'
    )
    searches = _sample("default/savedsearches.conf")
    assert searches["Errors By Host"]["search"].splitlines()[1:] == [
        "| stats count by host ",
        "| sort - count",
    ]
    assert searches["Errors By Host"]["description"] == ""
    app = _sample("default/app.conf")
    assert app["launcher"]["version"] == "1.4.2"
    cam = _sample("default/alert_actions.conf")["jobstack_notify"]["param._cam"]
    assert cam.startswith("{\n") and '"jobstack tests"' in cam and cam.endswith("}")
    macros = _sample("default/macros.conf")  # CRLF line endings
    assert macros["jobstack_errors(1)"]["definition"] == "`jobstack_index` status>=$status$"


# Limits: an uploaded file is hostile until parsed.


def test_a_line_over_the_limit_is_refused_before_it_is_read_whole() -> None:
    class Stream:
        def __init__(self, text: str) -> None:
            self.text, self.longest = io.StringIO(text), 0

        def readline(self, size: int, /) -> str:
            line = self.text.readline(size)
            self.longest = max(self.longest, len(line))
            return line

    stream = Stream("[s]\na = 1\n" + "b = " + "x" * (4 * MAX_LINE))
    with pytest.raises(ConfError, match=f"line 3: longer than {MAX_LINE} characters"):
        list(stanzas(read_lines(stream)))
    assert stream.longest == MAX_LINE + 1


def test_a_stanza_over_the_limit_is_refused_with_its_line() -> None:
    many = "[big]\n" + "".join(f"key{n} = {'v' * 1000}\n" for n in range(2000))
    with pytest.raises(ConfError, match=r"line 10\d\d: stanza 'big' over 1048576 characters"):
        parse_conf(many.splitlines())


def test_a_continued_value_over_the_limit_is_refused_as_it_grows() -> None:
    endless = ["[s]\n", "search = a \\\n"] + ["more text \\\n"] * 200_000
    with pytest.raises(ConfError, match="stanza 's' over 1048576 characters"):
        parse_conf(endless)


def test_a_key_set_again_does_not_count_twice() -> None:
    again = ["[s]\n"] + [f"a = {'v' * 1000}\n"] * 5000
    assert parse_conf(again)[0].settings == {"a": "v" * 1000}


def test_a_nul_character_is_refused_with_its_line() -> None:
    with pytest.raises(ConfError, match="line 2: a NUL character"):
        parse_conf(["[s]\n", "a = b\x00c\n"])


def test_stanzas_are_yielded_as_they_end_and_again_when_repeated() -> None:
    seen = [
        (s.name, s.line, s.settings)
        for s in stanzas("a = 1\n[s]\nb = 2\n[s]\nb = 3\n".splitlines())
    ]
    assert seen == [("default", 1, {"a": "1"}), ("s", 2, {"b": "2"}), ("s", 4, {"b": "3"})]
