"""Ingestion runs: an uploaded archive stored, queued, extracted and parsed into stanzas."""

from __future__ import annotations

import logging
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
from app.workloads.ingest.conf_parser import parse_conf
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


def _app_of(relative: PurePosixPath) -> str:
    """The Splunk app a .conf belongs to: the folder above default/ or local/."""
    parts = relative.parts
    if len(parts) >= 3 and parts[-2] in ("default", "local"):
        return parts[-3]
    return parts[0] if len(parts) > 1 else ""


def parse_run(run_id: str) -> dict[str, int]:
    """Extract and parse a run's archive; its stanzas replace any from an earlier try."""
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
        with extracted(path_of(Path(settings.storage_dir), run.sha256), limits) as root:
            confs = sorted(p for p in root.rglob("*.conf") if p.is_file())
            _update(run_id, files_total=len(confs))
            rows: list[dict[str, Any]] = []
            for number, path in enumerate(confs, start=1):
                relative = PurePosixPath(path.relative_to(root).as_posix())
                with path.open(encoding="utf-8", errors="replace") as lines:
                    for stanza in parse_conf(lines):
                        rows.append(
                            {
                                "run_id": run_id,
                                "app": _app_of(relative),
                                "path": str(relative),
                                "conf": path.stem,
                                "stanza": stanza.name,
                                "settings": stanza.settings,
                                "line": stanza.line,
                            }
                        )
                if job is not None:
                    job.progress(100 * number // len(confs), f"{number} of {len(confs)} files")
        with db.session_scope() as session:
            session.execute(delete(ConfStanza).where(ConfStanza.run_id == run_id))
            if rows:
                session.execute(insert(ConfStanza), rows)
            session.execute(
                update(IngestionRun)
                .where(IngestionRun.id == run_id)
                .values(
                    status="complete",
                    files_parsed=len(confs),
                    stanza_count=len(rows),
                    updated_at=utcnow(),
                )
            )
    except PermanentError as error:
        _update(run_id, status="failed", error=str(error))
        raise
    except Exception as error:
        # Retried by Dramatiq; the run waits for the next attempt.
        _update(run_id, status="stored", error=f"{type(error).__name__}: {error} (will retry)")
        raise
    return {"files": len(confs), "stanzas": len(rows)}
