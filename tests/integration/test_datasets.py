"""Baby-name datasets end to end: upload over the API, load on a real worker."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from flask.testing import FlaskClient

from tests.integration.conftest import Tokens
from tests.support.waiting import wait_for_state, wait_until

LINES = ["Olivia,F,15270", "Emma,F,13527", "Liam,M,20456", "Noah,M,18621", "Emma,M,8"]


@pytest.fixture(autouse=True)
def _storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBSTACK_STORAGE_DIR", str(tmp_path / "storage"))


def _upload(
    client: FlaskClient,
    tokens: Tokens,
    text: str | bytes,
    name: str = "yob2023.txt",
    country: str = "US",
) -> Any:
    data = text.encode() if isinstance(text, str) else text
    return client.post(
        "/v1/datasets/upload",
        data={"file": (io.BytesIO(data), name), "country": country},
        headers=tokens.acme,
        content_type="multipart/form-data",
    )


def _finished(
    client: FlaskClient, tokens: Tokens, dataset_id: str, after: str | None = None
) -> Any:
    def done() -> Any:
        dataset = client.get(f"/v1/datasets/{dataset_id}", headers=tokens.acme).get_json()
        finished = dataset["status"] in ("completed", "failed")
        return dataset if finished and dataset["updated_at"] != after else None

    return wait_until(done, 30, f"dataset {dataset_id} to finish")


def test_a_dataset_is_loaded_and_its_names_can_be_queried(
    client: FlaskClient, tokens: Tokens, worker: dramatiq.Worker
) -> None:
    response = _upload(client, tokens, "\n".join(LINES) + "\n")
    assert response.status_code == 202 and response.get_json()["status"] == "pending"

    dataset = _finished(client, tokens, response.get_json()["id"])
    assert (dataset["status"], dataset["year"], dataset["rows"]) == ("completed", 2023, 5)
    assert dataset["seconds"] is not None and dataset["rows_per_second"] > 0

    emma = client.get(
        "/v1/names?name=Emma&sex=F&year=2023&country=US", headers=tokens.acme
    ).get_json()
    assert [(r["name"], r["sex"], r["count"]) for r in emma["items"]] == [("Emma", "F", 13527)]
    page = client.get("/v1/names?limit=2", headers=tokens.acme).get_json()
    second = client.get(
        f"/v1/names?limit=2&cursor={page['next_cursor']}", headers=tokens.acme
    ).get_json()
    assert [r["name"] for r in page["items"] + second["items"]] == [
        "Olivia",
        "Emma",
        "Liam",
        "Noah",
    ]
    assert client.get("/v1/names?name=Emma", headers=tokens.globex).get_json()["items"] == []

    again = client.post(f"/v1/datasets/{dataset['id']}/reprocess", headers=tokens.acme)
    assert again.status_code == 202
    reloaded = _finished(client, tokens, dataset["id"], after=dataset["updated_at"])
    assert reloaded["rows"] == 5
    all_rows = client.get("/v1/names?limit=100", headers=tokens.acme).get_json()["items"]
    assert len(all_rows) == 5  # replaced, not added


def test_a_malformed_line_fails_the_dataset_at_once_with_its_number(
    client: FlaskClient, tokens: Tokens, worker: dramatiq.Worker
) -> None:
    text = "Olivia,F,15270\nEmma,F,lots\n"
    dataset = _finished(client, tokens, _upload(client, tokens, text).get_json()["id"])

    assert dataset["status"] == "failed"
    assert "line 2: count must be a positive integer" in dataset["error"]
    job = wait_for_state(dataset["job_id"])  # its outcome is recorded just after the dataset's
    assert (job.state, job.attempts, job.error_type) == ("failed", 1, "DatasetError")
    assert client.get("/v1/names", headers=tokens.acme).get_json()["items"] == []


@pytest.mark.parametrize(
    ("second_line", "message"),
    [
        # Each was retried: int() refused what str.isdigit() accepted, the database
        # refused a count over 32 bits (SQLite: OverflowError, PostgreSQL: DataError).
        ("Emma,F,²".encode(), "line 2: count must be a positive integer"),
        (b"Emma,F,100000000000000000000", "line 2: count must be a positive integer"),
        (b"Emma,F,2147483648", "line 2: count must be a positive integer"),
        # Loaded as 12: int() reads Arabic-Indic digits.
        ("Emma,F,١٢".encode(), "line 2: count must be a positive integer"),
        (b"Zo\xeb,F,12", "line 2: not UTF-8 text"),
    ],
    ids=["superscript", "10^20", "2^31", "Arabic-Indic digits", "not UTF-8"],
)
def test_a_hostile_line_fails_the_dataset_at_once_with_its_number(
    client: FlaskClient, tokens: Tokens, worker: dramatiq.Worker, second_line: bytes, message: str
) -> None:
    text = b"Olivia,F,15270\n" + second_line + b"\n"
    dataset = _finished(client, tokens, _upload(client, tokens, text).get_json()["id"])

    assert dataset["status"] == "failed" and message in dataset["error"]
    job = wait_for_state(dataset["job_id"])
    assert (job.state, job.attempts, job.error_type) == ("failed", 1, "DatasetError")
    assert client.get("/v1/names", headers=tokens.acme).get_json()["items"] == []


def test_a_bad_file_name_fails_and_an_unknown_country_is_refused(
    client: FlaskClient, tokens: Tokens, worker: dramatiq.Worker
) -> None:
    bad_name = _finished(
        client, tokens, _upload(client, tokens, "Emma,F,1\n", name="names.csv").get_json()["id"]
    )
    assert bad_name["status"] == "failed" and "not yobYYYY.txt" in bad_name["error"]

    unknown = _upload(client, tokens, "Emma,F,1\n", country="XX")
    assert unknown.status_code == 422 and "country" in unknown.get_json()["errors"]["form"]
