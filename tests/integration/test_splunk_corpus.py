"""The corpus test: real Splunk add-ons, parsed, extracted and ingested end to end.

Runs when JOBSTACK_TEST_SPLUNK_CORPUS names a folder of add-ons (``.ci/run`` sets it to
``../shared/data/splunk`` when that exists); skipped otherwise, failed under CI=true. The
Palo Alto add-on's own settings are checked when the corpus holds it.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from flask.testing import FlaskClient

from app.workloads.ingest.conf_parser import parse_conf
from tests.integration.conftest import Tokens
from tests.support.splunk import add_on_tgz, assert_extracts_whole, conf_files, corpus_add_ons
from tests.support.waiting import wait_until

PALO_ALTO = "Splunk_TA_paloalto"


def _palo_alto() -> Path | None:
    return next((p / "default" for p in corpus_add_ons() if p.name == PALO_ALTO), None)


def test_every_stanza_header_of_every_corpus_add_on_is_found() -> None:
    checked = 0
    for add_on in corpus_add_ons():
        for path in conf_files(add_on):
            text = path.read_text(errors="replace")
            headers = {m.group(1).strip() for m in re.finditer(r"^\s*\[(.*)\]\s*$", text, re.M)}
            names = {s.name for s in parse_conf(text.splitlines())}
            assert headers <= names, path
            assert names - headers <= {"default"}, path
            checked += 1
    assert checked > 0


def test_real_settings_are_read_as_splunk_reads_them() -> None:
    splunk_ta = _palo_alto()
    if splunk_ta is None:
        pytest.skip(f"the corpus holds no {PALO_ALTO}, whose values this test knows")
    props = {
        s.name: s.settings for s in parse_conf((splunk_ta / "props.conf").read_text().splitlines())
    }
    assert props["pan_log"]["TIME_PREFIX"] == "^(?:[^,]*,){5}"
    assert props["pan_log"]["SHOULD_LINEMERGE"] == "false"
    assert "SEDCMD-6_1_0" not in props["pan_log"]  # commented out in the file
    app = {
        s.name: s.settings for s in parse_conf((splunk_ta / "app.conf").read_text().splitlines())
    }
    assert app["launcher"]["version"] == "6.2.0"
    alerts = parse_conf((splunk_ta / "alert_actions.conf").read_text().splitlines())
    cam = next(s.settings["param._cam"] for s in alerts if "param._cam" in s.settings)
    assert cam.startswith("{\n") and '"Palo Alto Networks"' in cam and cam.endswith("}")


def test_every_corpus_add_on_extracts_from_tar_gz_and_zip(tmp_path: Path) -> None:
    for add_on in corpus_add_ons():
        assert_extracts_whole(add_on, tmp_path)


def test_every_corpus_add_on_is_ingested_into_its_stanzas(
    client: FlaskClient,
    tokens: Tokens,
    worker: dramatiq.Worker,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JOBSTACK_STORAGE_DIR", str(tmp_path / "storage"))
    for add_on in corpus_add_ons():
        response = client.post(
            "/v1/uploads",
            data={"file": (io.BytesIO(add_on_tgz(add_on)), f"{add_on.name}.tgz"), "type": "app"},
            headers=tokens.acme,
            content_type="multipart/form-data",
        )
        assert response.status_code == 202, response.get_json()
        run_id = response.get_json()["id"]

        def finished(run_id: str = run_id) -> Any:
            run = client.get(f"/v1/runs/{run_id}", headers=tokens.acme).get_json()
            return run if run["status"] in ("complete", "failed") else None

        run = wait_until(finished, 60, f"the run of {add_on.name} to finish")
        files = conf_files(add_on)
        assert run["status"] == "complete", run["error"]
        assert run["files_parsed"] == len(files)
        assert run["stanza_count"] == sum(
            len(parse_conf(p.read_text(errors="replace").splitlines())) for p in files
        )
        if add_on.name == PALO_ALTO:
            page = client.get(
                f"/v1/runs/{run_id}/stanzas?conf=props&stanza=pan_log", headers=tokens.acme
            ).get_json()
            [pan_log] = page["items"]
            assert (pan_log["app"], pan_log["path"]) == (
                PALO_ALTO,
                f"{PALO_ALTO}/default/props.conf",
            )
            assert pan_log["settings"]["TIME_PREFIX"] == "^(?:[^,]*,){5}"
