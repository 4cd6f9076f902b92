"""Ingestion runs: an uploaded archive stored, queued, extracted and parsed into stanzas."""

from __future__ import annotations

import logging
from contextlib import closing
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import IO, Any

from dramatiq.message import generate_unique_id
from sqlalchemy import delete, insert, update

from app import db
from app.config import load_settings
from app.context import current_job_or_none
from app.errors import PermanentError, RunNotFound
from app.models import ConfStanza, IngestionRun
from app.timeutil import utcnow
from app.workloads.ingest.archive import Limits, extracted
from app.workloads.ingest.conf_parser import ConfError, read_lines, stanzas
from app.workloads.ingest.merging import MergedStanzas
from app.workloads.uploads import path_of, store_and_queue

logger = logging.getLogger(__name__)

KINDS = ("ds_etc", "app")


def create_run(
    source: IO[bytes], *, file_name: str, kind: str, label: str | None, tenant: str
) -> IngestionRun:
    """Store the upload, record the run and queue its parsing, in one transaction.

    The job row is the outbox: the upload succeeds while the broker is down, and the
    parse job is published when it is back.
    """
    return store_and_queue(
        source,
        lambda stored: IngestionRun(
            id=generate_unique_id(),
            tenant=tenant,
            kind=kind,
            label=label,
            file_name=file_name,
            sha256=stored.sha256,
            size_bytes=stored.size,
            status="stored",
            created_at=utcnow(),
            updated_at=utcnow(),
        ),
        "ingest.parse_run",
        tenant,
    )


def _update(run_id: str, **values: Any) -> None:
    with db.session_scope() as session:
        session.execute(
            update(IngestionRun)
            .where(IngestionRun.id == run_id)
            .values(**values, updated_at=utcnow())
        )


@lru_cache(maxsize=64)
def _app_and_conf(path: str) -> tuple[str, str]:
    """The Splunk app a .conf belongs to (the folder above default/ or local/), and its conf.

    Cached: the stanzas of a file are stored one after another.
    """
    relative = PurePosixPath(path)
    parts = relative.parts
    if len(parts) >= 3 and parts[-2] in ("default", "local"):
        return parts[-3], relative.stem
    return (parts[0] if len(parts) > 1 else ""), relative.stem


def parse_run(run_id: str) -> dict[str, int]:
    """Extract and parse a run's archive; its stanzas replace any from an earlier try.

    Stanzas are merged on disk as they are parsed (``merging``) and stored in batches,
    so memory stays bounded whatever the archive holds. They are stored in the one
    transaction that marks the run complete: a run that fails, or waits for its next
    attempt, keeps no partial stanzas.
    """
    settings = load_settings()
    with db.session_scope() as session:
        run = session.get(IngestionRun, run_id)
    if run is None:
        raise RunNotFound(f"no ingestion run with id {run_id}")
    _update(run_id, status="parsing", error=None, files_parsed=0)
    limits = Limits(
        max_members=settings.archive_max_members,
        max_total_bytes=settings.archive_max_bytes,
        max_ratio=settings.archive_max_ratio,
    )
    job = current_job_or_none()
    try:
        with (
            extracted(path_of(Path(settings.storage_dir), run.sha256), limits) as root,
            closing(MergedStanzas()) as merged,
        ):
            confs = sorted(p for p in root.rglob("*.conf") if p.is_file())
            _update(run_id, files_total=len(confs))
            for number, path in enumerate(confs, start=1):
                relative = path.relative_to(root).as_posix()
                # Splunk reads UTF-8; a stray byte of another encoding is not worth a failure.
                with path.open(encoding="utf-8", errors="replace") as stream:
                    try:
                        merged.add(relative, stanzas(read_lines(stream)))
                    except ConfError as error:
                        raise ConfError(f"{relative}: {error}") from None
                if job is not None:
                    job.progress(100 * number // len(confs), f"{number} of {len(confs)} files")
            stored = _store(run_id, merged, files=len(confs))
    except PermanentError as error:
        _update(run_id, status="failed", error=str(error))
        raise
    except Exception as error:
        # Retried by Dramatiq; the run waits for the next attempt. Only the error's type
        # is shown: its text can name servers (a database host, a path on the worker).
        _update(
            run_id,
            status="stored",
            error=f"{type(error).__name__} (will retry; the worker's log has the details)",
        )
        raise
    return {"files": len(confs), "stanzas": stored}


def _store(run_id: str, merged: MergedStanzas, *, files: int) -> int:
    """Replace the run's stanzas with ``merged`` and mark it complete, in one transaction."""
    stored = 0
    with db.session_scope() as session:
        session.execute(delete(ConfStanza).where(ConfStanza.run_id == run_id))
        for batch in merged.batches():
            session.execute(
                insert(ConfStanza),
                [
                    {
                        "run_id": run_id,
                        "app": _app_and_conf(stanza.path)[0],
                        "path": stanza.path,
                        "conf": _app_and_conf(stanza.path)[1],
                        "stanza": stanza.name,
                        "settings": stanza.settings,
                        "line": stanza.line,
                    }
                    for stanza in batch
                ],
            )
            stored += len(batch)
        session.execute(
            update(IngestionRun)
            .where(IngestionRun.id == run_id)
            .values(status="complete", files_parsed=files, stanza_count=stored, updated_at=utcnow())
        )
    return stored
