"""Loading a 1,000,000-row SSA file: a benchmark, kept out of the normal run.

make bench-datasets     # PostgreSQL (COPY); JOBSTACK_TEST_DB=sqlite for executemany
"""

from __future__ import annotations

import io
import random
import time
from pathlib import Path

import pytest

import actors  # noqa: F401  (registers datasets.parse_dataset)
from app import db
from app.jobs import get_job
from app.models import Dataset
from app.workloads.datasets.loading import create_dataset, load_dataset

ROWS = 1_000_000

pytestmark = pytest.mark.bench


def _ssa_file(rows: int) -> bytes:
    names = [
        f"Name{chr(65 + i % 26)}{chr(97 + i // 26 % 26)}{chr(97 + i // 676 % 26)}"
        for i in range(rows // 2)
    ]
    random.Random(7).shuffle(names)
    lines = [
        f"{name.replace('0', '')},{sex},{1 + i % 9000}"
        for i, name in enumerate(names)
        for sex in ("F", "M")
    ]
    return ("\n".join(lines[:rows]) + "\n").encode()


def test_a_million_row_dataset_loads(
    clean_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOBSTACK_STORAGE_DIR", str(tmp_path / "storage"))
    monkeypatch.setenv("JOBSTACK_UPLOAD_MAX_BYTES", str(1 << 30))
    data = _ssa_file(ROWS)
    dataset = create_dataset(
        io.BytesIO(data), file_name="yob2023.txt", country="US", tenant="bench"
    )

    started = time.monotonic()
    result = load_dataset(dataset.id)
    elapsed = time.monotonic() - started

    with db.session_scope() as session:
        loaded = session.get(Dataset, dataset.id)
    assert loaded is not None and (loaded.status, loaded.rows) == ("completed", ROWS)
    assert result["rows"] == ROWS
    backend = db.get_engine().dialect.name
    rate = ROWS / elapsed
    print(
        f"\n{ROWS} rows on {backend}: {elapsed:.1f}s, {rate:,.0f} rows/s, {len(data) / 1e6:.1f} MB"
    )
    assert get_job(dataset.job_id or "").state == "queued"  # loaded here, not by a worker
