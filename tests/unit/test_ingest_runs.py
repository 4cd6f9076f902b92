"""Parsing a run: memory bounded by batches, not by the archive, and all or nothing."""

from __future__ import annotations

import io
import tarfile
import tracemalloc
from pathlib import Path

import pytest
from dramatiq.message import generate_unique_id
from sqlalchemy import func, select

from app import db
from app.errors import PermanentError
from app.models import ConfStanza, IngestionRun
from app.timeutil import utcnow
from app.workloads.ingest import merging, runs
from app.workloads.ingest.conf_parser import MAX_LINE, ConfError
from app.workloads.uploads import store


@pytest.fixture(autouse=True)
def _storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBSTACK_STORAGE_DIR", str(tmp_path / "storage"))


def _tgz(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _run(archive: bytes, storage: Path) -> str:
    """A stored run, as the upload leaves it (its job is not needed here)."""
    stored = store(io.BytesIO(archive), storage, 1 << 30)
    run_id = generate_unique_id()
    with db.session_scope() as session:
        session.add(
            IngestionRun(
                id=run_id,
                tenant="acme",
                kind="app",
                file_name="ta.tgz",
                sha256=stored.sha256,
                size_bytes=stored.size,
                status="stored",
                created_at=utcnow(),
                updated_at=utcnow(),
            )
        )
    return run_id


def _state(run_id: str) -> tuple[str, int, str | None]:
    with db.session_scope() as session:
        run = session.get(IngestionRun, run_id)
        assert run is not None
        stanzas = session.scalar(
            select(func.count()).select_from(ConfStanza).where(ConfStanza.run_id == run_id)
        )
        return run.status, int(stanzas or 0), run.error


def _conf(stanzas: int, first: int = 0) -> bytes:
    return "".join(
        f"[stanza {n}]\n" + "".join(f"setting{k} = value {n} {k} {'x' * 250}\n" for k in range(4))
        for n in range(first, first + stanzas)
    ).encode()


def test_parsing_memory_stays_bounded_whatever_the_archive_holds(
    clean_db: str, tmp_path: Path
) -> None:
    # 8 MiB of .conf text in 8,000 stanzas. Held at once (rows built, then inserted in
    # one statement) they took a 32 MiB peak here; in batches of 1,000, 4 MiB.
    files = {f"TA/default/f{n}.conf": _conf(250, first=n * 250) for n in range(32)}
    assert sum(map(len, files.values())) > 8 << 20
    run_id = _run(_tgz(files), tmp_path / "storage")

    tracemalloc.start()
    try:
        result = runs.parse_run(run_id)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert result == {"files": 32, "stanzas": 8000}
    assert _state(run_id) == ("complete", 8000, None)
    assert peak < 8 << 20, f"peak {peak / 2**20:.0f} MiB"


def test_repeated_stanzas_merge_across_batches_at_their_first_place(
    clean_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(merging, "BATCH_ROWS", 2)
    conf = b"[a]\nx = 1\ny = 1\n[b]\nx = 2\n[c]\n[d]\n[a]\ny = 3\nz = 3\n[e]\n"
    run_id = _run(_tgz({"TA/default/props.conf": conf}), tmp_path / "storage")

    assert runs.parse_run(run_id) == {"files": 1, "stanzas": 5}

    with db.session_scope() as session:
        rows = session.execute(
            select(ConfStanza.stanza, ConfStanza.line, ConfStanza.settings)
            .where(ConfStanza.run_id == run_id)
            .order_by(ConfStanza.id)
        ).all()
    assert [tuple(row) for row in rows] == [
        ("a", 1, {"x": "1", "y": "3", "z": "3"}),
        ("b", 4, {"x": "2"}),
        ("c", 6, {}),
        ("d", 7, {}),
        ("e", 11, {}),
    ]


def test_a_stanza_merged_over_the_limit_is_refused(
    clean_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each part is under the parser's limit; merged, they are over it.
    monkeypatch.setenv("JOBSTACK_ARCHIVE_MAX_RATIO", "10000")
    part = "".join(f"k{n} = {'v' * 1000}\n" for n in range(600))
    conf = "".join(f"[s]\n{part.replace('k', f'k{m}_')}" for m in range(3)).encode()
    run_id = _run(_tgz({"TA/default/props.conf": conf}), tmp_path / "storage")

    with pytest.raises(ConfError, match=r"TA/default/props\.conf: line \d+: stanza 's' over"):
        runs.parse_run(run_id)
    assert _state(run_id)[:2] == ("failed", 0)


def test_a_file_over_a_limit_fails_the_run_naming_it_and_keeps_no_stanzas(
    clean_db: str, tmp_path: Path
) -> None:
    files = {
        "TA/default/a.conf": _conf(10),
        "TA/default/b.conf": b"[s]\na = 1\nb = " + b"x" * (2 * MAX_LINE),
    }
    run_id = _run(_tgz(files), tmp_path / "storage")

    with pytest.raises(PermanentError):
        runs.parse_run(run_id)

    status, stanzas, error = _state(run_id)
    assert (status, stanzas) == ("failed", 0)
    assert error == f"TA/default/b.conf: line 3: longer than {MAX_LINE} characters"


def test_a_nul_character_fails_the_run_instead_of_the_database_insert(
    clean_db: str, tmp_path: Path
) -> None:
    run_id = _run(_tgz({"TA/default/a.conf": b"[s]\na = b\x00c\n"}), tmp_path / "storage")

    with pytest.raises(ConfError):
        runs.parse_run(run_id)
    assert _state(run_id) == ("failed", 0, "TA/default/a.conf: line 2: a NUL character")


def test_a_try_that_breaks_while_storing_leaves_no_partial_stanzas_and_the_next_replaces_them(
    clean_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = _run(_tgz({"TA/default/a.conf": _conf(50)}), tmp_path / "storage")
    monkeypatch.setattr(merging, "BATCH_ROWS", 10)
    batches = merging.MergedStanzas.batches

    def breaking(self: merging.MergedStanzas):  # type: ignore[no-untyped-def]
        for number, batch in enumerate(batches(self)):
            if number == 3:
                raise ConnectionError("the database went away")
            yield batch

    monkeypatch.setattr(merging.MergedStanzas, "batches", breaking)
    with pytest.raises(ConnectionError):
        runs.parse_run(run_id)
    status, stanzas, error = _state(run_id)
    assert (status, stanzas) == ("stored", 0)
    # The type only: an error's text can name servers, and tenants read this field.
    assert error == "ConnectionError (will retry; the worker's log has the details)"

    monkeypatch.setattr(merging.MergedStanzas, "batches", batches)
    assert runs.parse_run(run_id) == {"files": 1, "stanzas": 50}
    assert runs.parse_run(run_id) == {"files": 1, "stanzas": 50}
    assert _state(run_id) == ("complete", 50, None)
