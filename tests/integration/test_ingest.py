"""Configuration archives end to end: upload over the API, parse on a real worker."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path
from typing import Any

import dramatiq
import pika
import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from flask.testing import FlaskClient

from app.jobs import get_job
from app.workloads.ingest import runs
from app.workloads.ingest.conf_parser import parse_conf
from tests.integration.conftest import Tokens
from tests.support.splunk import SAMPLE_ADD_ON, add_on_tgz, conf_files
from tests.support.waiting import wait_for_state, wait_until
from tests.support.workers import running_worker


@pytest.fixture(autouse=True)
def _storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBSTACK_STORAGE_DIR", str(tmp_path / "storage"))


def _add_on_tgz() -> bytes:
    return add_on_tgz(SAMPLE_ADD_ON)


def _upload(
    client: FlaskClient, tokens: Tokens, data: bytes, name: str = "ta.tgz", kind: str = "app"
) -> Any:
    return client.post(
        "/v1/uploads",
        data={"file": (io.BytesIO(data), name), "type": kind, "label": "test"},
        headers=tokens.acme,
        content_type="multipart/form-data",
    )


def _run_when_finished(client: FlaskClient, tokens: Tokens, run_id: str) -> Any:
    def finished() -> Any:
        run = client.get(f"/v1/runs/{run_id}", headers=tokens.acme).get_json()
        return run if run["status"] in ("complete", "failed") else None

    return wait_until(finished, 30, f"run {run_id} to finish")


def _expected_stanzas(add_on: Path = SAMPLE_ADD_ON) -> dict[str, list[str]]:
    return {
        path.stem: [s.name for s in parse_conf(path.read_text().splitlines())]
        for path in conf_files(add_on)
    }


def test_an_uploaded_add_on_is_parsed_into_its_stanzas(
    client: FlaskClient, tokens: Tokens, worker: dramatiq.Worker
) -> None:
    response = _upload(client, tokens, _add_on_tgz())
    assert response.status_code == 202
    created = response.get_json()
    assert (created["status"], created["kind"], created["file_name"]) == ("stored", "app", "ta.tgz")
    assert response.headers["Location"].endswith(f"/v1/runs/{created['id']}")

    run = _run_when_finished(client, tokens, created["id"])
    expected = _expected_stanzas()
    assert run["status"] == "complete", run["error"]
    assert (run["files_total"], run["files_parsed"]) == (len(expected), len(expected))
    assert run["stanza_count"] == sum(len(names) for names in expected.values())
    # The run is complete when the actor commits its stanzas; its job's outcome is
    # recorded just after the actor returns.
    assert wait_for_state(run["job_id"]).state == "succeeded"

    page = client.get(
        f"/v1/runs/{run['id']}/stanzas?conf=props&stanza=jobstack:access", headers=tokens.acme
    ).get_json()
    [access] = page["items"]
    assert (access["app"], access["path"]) == (
        "TA-jobstack-sample",
        "TA-jobstack-sample/default/props.conf",
    )
    assert access["settings"]["TIME_PREFIX"] == "^(?:[^,]*,){5}"
    page = client.get(f"/v1/runs/{run['id']}/stanzas?conf=inputs", headers=tokens.acme).get_json()
    [monitor] = page["items"]
    assert (monitor["app"], monitor["path"]) == (
        "TA-jobstack-sample",
        "TA-jobstack-sample/local/inputs.conf",
    )

    seen: list[tuple[str, str]] = []
    cursor = ""
    while True:
        url = f"/v1/runs/{run['id']}/stanzas?limit=4" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(url, headers=tokens.acme).get_json()
        seen += [(item["conf"], item["stanza"]) for item in page["items"]]
        if not (cursor := page["next_cursor"]):
            break
    assert sorted(seen) == sorted(
        (conf, name) for conf, names in expected.items() for name in names
    )

    # Parsing again replaces the run's stanzas: the same count, no duplicates.
    runs.parse_run(run["id"])
    again = client.get(f"/v1/runs/{run['id']}", headers=tokens.acme).get_json()
    assert again["stanza_count"] == run["stanza_count"]
    assert client.get(f"/v1/runs/{run['id']}", headers=tokens.globex).status_code == 404


def test_a_hostile_archive_fails_its_run_naming_the_member(
    client: FlaskClient, tokens: Tokens, worker: dramatiq.Worker, tmp_path: Path
) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("app/../../escaped.conf")
        info.size = 6
        tar.addfile(info, io.BytesIO(b"x = 1\n"))

    run = _run_when_finished(
        client, tokens, _upload(client, tokens, buffer.getvalue()).get_json()["id"]
    )

    assert run["status"] == "failed"
    assert "'app/../../escaped.conf'" in run["error"] and "'..'" in run["error"]
    job = wait_for_state(run["job_id"])
    assert (job.state, job.error_type, job.attempts) == ("failed", "UnsafeArchive", 1)
    assert not (tmp_path.parent / "escaped.conf").exists()


def _tar_blocks(name: str, data: bytes) -> bytes:
    """One member, GNU format, written as it comes: the name is not re-encoded."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    padding = -len(data) % tarfile.BLOCKSIZE
    return info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape") + data + b"\0" * padding


def _gnu_long_name_tgz() -> bytes:
    """The attacker's 65 KB: a GNU long name that tarfile would inflate to 64 MiB."""
    size = 64 << 20
    header = tarfile.TarInfo("././@LongLink")
    header.type, header.size = tarfile.GNUTYPE_LONGNAME, size
    name = b"app/default/x.conf"
    body = header.tobuf(tarfile.GNU_FORMAT) + name + bytes(size - len(name) + -size % 512)
    return gzip.compress(body + _tar_blocks("app/default/x.conf", b"[s]\na = 1\n") + bytes(1024))


def _chained_long_names_tar() -> bytes:
    """400 long names in a row: tarfile recursed into each (RecursionError, retried)."""
    header = tarfile.TarInfo("././@LongLink")
    header.type, header.size = tarfile.GNUTYPE_LONGNAME, 512
    link = header.tobuf(tarfile.GNU_FORMAT) + b"a" * 511 + b"\0"
    return link * 400 + _tar_blocks("app/x.conf", b"x = 1\n") + bytes(1024)


HOSTILE = {
    "GNU long name of 64 MiB": (
        _gnu_long_name_tgz,
        "UnsafeArchive",
        "the first tar header: tar headers over 65536 bytes",
    ),
    "chained long names": (
        _chained_long_names_tar,
        "UnsafeArchive",
        "the first tar header: tar headers over 65536 bytes",
    ),
    "member name not UTF-8": (
        lambda: _tar_blocks("app/default/caf\udce9.conf", b"[s]\na = 1\n") + bytes(1024),
        "UnsafeArchive",
        r"member b'app/default/caf\xe9.conf': its name is not UTF-8",
    ),
    # PostgreSQL refuses a NUL in text (DataError): the run was retried.
    "NUL in a .conf": (
        lambda: _tar_blocks("app/default/a.conf", b"[s]\n[t\x00]\na = 1\n") + bytes(1024),
        "ConfError",
        "app/default/a.conf: line 2: a NUL character",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_archive_fails_at_once_instead_of_being_retried(
    client: FlaskClient, tokens: Tokens, worker: dramatiq.Worker, case: str
) -> None:
    build, error_type, message = HOSTILE[case]
    run = _run_when_finished(client, tokens, _upload(client, tokens, build()).get_json()["id"])

    assert (run["status"], run["error"]) == ("failed", message)
    job = wait_for_state(run["job_id"])
    assert (job.state, job.error_type, job.attempts) == ("failed", error_type, 1)
    assert (
        client.get(f"/v1/runs/{run['id']}/stanzas", headers=tokens.acme).get_json()["items"] == []
    )


def test_an_upload_succeeds_with_the_broker_down_and_is_parsed_later(
    client: FlaskClient, tokens: Tokens, rabbit: RabbitmqBroker
) -> None:
    reachable = rabbit.parameters
    rabbit.parameters = pika.URLParameters("amqp://guest:guest@127.0.0.1:1/%2F")
    del rabbit.connection
    try:
        response = _upload(client, tokens, _add_on_tgz())
    finally:
        rabbit.parameters = reachable
        del rabbit.connection
    assert response.status_code == 202
    run_id = response.get_json()["id"]
    assert get_job(response.get_json()["job_id"]).published_at is None

    with running_worker(rabbit):
        assert _run_when_finished(client, tokens, run_id)["status"] == "complete"


def test_bad_uploads_are_refused(
    client: FlaskClient, tokens: Tokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = client.post(
        "/v1/uploads", data={"type": "app"}, headers=tokens.acme, content_type="multipart/form-data"
    )
    assert missing.status_code == 422 and "file" in missing.get_json()["errors"]["form"]
    wrong = _upload(client, tokens, b"x", kind="tarball")
    assert wrong.status_code == 422 and "type" in wrong.get_json()["errors"]["form"]
    as_json = client.post("/v1/uploads", json={"type": "app"}, headers=tokens.acme)
    assert as_json.status_code == 415
    nul_label = client.post(
        "/v1/uploads",
        data={"file": (io.BytesIO(_add_on_tgz()), "ta.tgz"), "type": "app", "label": "a\x00b"},
        headers=tokens.acme,
        content_type="multipart/form-data",
    )
    assert nul_label.status_code == 400
    assert "'label' contains a NUL character" in nul_label.get_json()["message"]
    nul_query = client.get("/v1/runs?status=%00", headers=tokens.acme)
    assert nul_query.status_code == 400
    assert client.get("/v1/runs", headers=tokens.acme).get_json() == []  # nothing stored

    from api import create_app

    monkeypatch.setenv("JOBSTACK_UPLOAD_MAX_BYTES", "1000")
    small = create_app({"TESTING": True}).test_client()
    too_big = _upload(small, tokens, b"x" * 5000)
    assert too_big.status_code == 413
