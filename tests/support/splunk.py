"""Splunk add-ons for the ingestion tests: the sample written for this project, and the
opt-in corpus of real ones.

The sample (tests/data/splunk/TA-jobstack-sample) exercises every parsing rule and is
always there. The corpus is a folder of real add-ons outside the repository, named by
``JOBSTACK_TEST_SPLUNK_CORPUS``; its tests are skipped without it (a new clone has no
corpus beside it, CI or not), and fail under CI=true when it names no add-ons.
"""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from pathlib import Path

import pytest

from app.workloads.ingest.archive import extracted
from tests.support.services import in_ci

SAMPLE_ADD_ON = Path(__file__).resolve().parents[1] / "data/splunk/TA-jobstack-sample"
CORPUS_VARIABLE = "JOBSTACK_TEST_SPLUNK_CORPUS"


def corpus_add_ons() -> list[Path]:
    """The add-ons of the corpus (folders with a default/ folder); skipped when the
    variable is unset, failed under CI=true when it names no add-ons."""
    folder = os.environ.get(CORPUS_VARIABLE, "")
    add_ons = (
        sorted(p for p in Path(folder).glob("*") if (p / "default").is_dir()) if folder else []
    )
    if add_ons:
        return add_ons
    message = (
        f"{CORPUS_VARIABLE}={folder!r} names no folder of Splunk add-ons"
        if folder
        else f"{CORPUS_VARIABLE} is not set (the folder of real Splunk add-ons)"
    )
    if folder and in_ci():
        pytest.fail(f"{message}, and CI=true: the corpus test must run", pytrace=False)
    pytest.skip(message)


def conf_files(add_on: Path) -> list[Path]:
    """Every .conf file of ``add_on`` (default/ and local/), sorted."""
    return sorted(add_on.rglob("*.conf"))


def add_on_tgz(add_on: Path) -> bytes:
    """``add_on`` as a .tgz archive, as Splunk packages ship."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(add_on, arcname=add_on.name)
    return buffer.getvalue()


def assert_extracts_whole(add_on: Path, tmp_path: Path) -> None:
    """``add_on`` packed as .tgz and as .zip extracts to the same files, byte for byte,
    into a folder that is removed afterwards."""
    files = {p.relative_to(add_on.parent).as_posix(): p for p in add_on.rglob("*") if p.is_file()}
    tgz = tmp_path / f"{add_on.name}.tgz"
    tgz.write_bytes(add_on_tgz(add_on))
    packed_zip = tmp_path / f"{add_on.name}.zip"
    with zipfile.ZipFile(packed_zip, "w", zipfile.ZIP_DEFLATED) as zipped:
        for name, path in files.items():
            zipped.writestr(name, path.read_bytes())
    for archive in (tgz, packed_zip):
        with extracted(archive) as root:
            found = {p.relative_to(root).as_posix(): p for p in root.rglob("*") if p.is_file()}
            assert sorted(found) == sorted(files), archive.name
            for name, path in files.items():
                assert found[name].read_bytes() == path.read_bytes(), name
            kept = root
        assert not kept.exists()  # removed afterwards
