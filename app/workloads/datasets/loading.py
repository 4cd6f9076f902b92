"""Creating datasets from uploads and loading their records, atomically and in batches."""

from __future__ import annotations

import time
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import IO, Any

from dramatiq.message import generate_unique_id
from sqlalchemy import delete, insert, update
from sqlalchemy.orm import Session

from app import db
from app.config import load_settings
from app.context import current_job_or_none
from app.errors import DatasetNotFound, PermanentError
from app.jobs import submit
from app.models import Dataset, NameRecord
from app.timeutil import utcnow
from app.workloads.datasets.parsers import Record, parser_for, read_lines
from app.workloads.uploads import path_of, store_and_queue

BATCH = 5000
COLUMNS = ("dataset_id", "name", "sex", "count", "year", "country")


def create_dataset(source: IO[bytes], *, file_name: str, country: str, tenant: str) -> Dataset:
    """Store the file, record the dataset (``pending``) and queue its parsing, atomically."""
    parser_for(country)  # An unknown country is refused before anything is stored.
    return store_and_queue(
        source,
        lambda stored: Dataset(
            id=generate_unique_id(),
            tenant=tenant,
            country=country,
            file_name=file_name,
            sha256=stored.sha256,
            size_bytes=stored.size,
            status="pending",
            created_at=utcnow(),
            updated_at=utcnow(),
        ),
        "datasets.parse_dataset",
        tenant,
    )


def queue_reprocess(dataset_id: str, tenant: str) -> Dataset:
    session = db.new_session()
    try:
        dataset = session.get(Dataset, dataset_id)
        if dataset is None or dataset.tenant != tenant:
            raise DatasetNotFound(f"no dataset with id {dataset_id}")
        job = submit("datasets.reprocess_dataset", [dataset_id], session=session, tenant=tenant)
        dataset.job_id = job.id
        dataset.status = "pending"
        dataset.updated_at = utcnow()
        session.commit()
        return dataset
    finally:
        session.close()


def _update(dataset_id: str, **values: Any) -> None:
    with db.session_scope() as session:
        session.execute(
            update(Dataset).where(Dataset.id == dataset_id).values(**values, updated_at=utcnow())
        )


def _copy(session: Session, rows: list[tuple[str, str, str, int, int, str]]) -> None:
    """PostgreSQL's COPY: the fastest way in."""
    raw: Any = session.connection().connection.dbapi_connection
    with (
        raw.cursor() as cursor,
        cursor.copy(
            "COPY name_records (dataset_id, name, sex, count, year, country) FROM STDIN"
        ) as copy,
    ):
        for row in rows:
            copy.write_row(row)


def _batches(records: Iterator[Record]) -> Iterator[list[Record]]:
    while batch := list(islice(records, BATCH)):
        yield batch


def load_dataset(dataset_id: str) -> dict[str, Any]:
    """Parse the dataset's file and replace its records in one transaction.

    A malformed file fails at once (DatasetError, a PermanentError, with the line): the
    parser refuses whatever the database would (a count out of its column's range), so
    that what is left to retry is the database and storage being away.
    """
    with db.session_scope() as session:
        dataset = session.get(Dataset, dataset_id)
    if dataset is None:
        raise DatasetNotFound(f"no dataset with id {dataset_id}")
    _update(dataset_id, status="processing", error=None)
    started = time.monotonic()
    job = current_job_or_none()
    path = path_of(Path(load_settings().storage_dir), dataset.sha256)
    try:
        parse, year_of = parser_for(dataset.country)
        year = year_of(dataset.file_name)
        # First pass: validate every line, with no transaction open (a bad file changes
        # nothing, and progress can be written).
        with path.open("rb") as file:
            for count, _record in enumerate(parse(read_lines(file)), start=1):
                if job is not None and count % BATCH == 0:
                    job.progress(
                        min(49, 50 * file.tell() // max(dataset.size_bytes, 1)),
                        f"checked {count} rows",
                    )
        total = 0
        with db.session_scope() as session, path.open("rb") as file:
            session.execute(delete(NameRecord).where(NameRecord.dataset_id == dataset_id))
            postgres = session.get_bind().dialect.name == "postgresql"
            for batch in _batches(parse(read_lines(file))):
                rows = [(dataset_id, r.name, r.sex, r.count, year, dataset.country) for r in batch]
                if postgres:
                    _copy(session, rows)
                else:
                    session.execute(
                        insert(NameRecord), [dict(zip(COLUMNS, row, strict=True)) for row in rows]
                    )
                total += len(rows)
                # SQLite has one writer: this transaction. Progress would wait for it.
                if job is not None and postgres:
                    job.progress(
                        50 + min(49, 50 * file.tell() // max(dataset.size_bytes, 1)),
                        f"{total} rows",
                    )
            seconds = time.monotonic() - started
            session.execute(
                update(Dataset)
                .where(Dataset.id == dataset_id)
                .values(
                    status="completed",
                    year=year,
                    rows=total,
                    seconds=round(seconds, 3),
                    rows_per_second=round(total / seconds, 1) if seconds > 0 else None,
                    updated_at=utcnow(),
                )
            )
    except PermanentError as error:
        _update(dataset_id, status="failed", error=str(error))
        raise
    except Exception as error:
        _update(
            dataset_id,
            status="pending",
            error=f"{type(error).__name__} (will retry; the worker's log has the details)",
        )
        raise
    return {"rows": total, "seconds": round(time.monotonic() - started, 3)}
