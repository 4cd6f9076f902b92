"""Safe extraction: real archives extract; hostile and broken ones are refused, writing
nothing outside the temporary directory."""

from __future__ import annotations

import io
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from app.workloads.ingest.archive import Limits, UnsafeArchive, extracted
from tests.support.splunk import SAMPLE_ADD_ON, assert_extracts_whole


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes = b"x = 1\n") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _link(name: str, target: str, kind: bytes) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zipped:
        for name, data in members.items():
            zipped.writestr(name, data)
    return path


def test_an_add_on_extracts_from_tar_gz_and_zip(tmp_path: Path) -> None:
    assert_extracts_whole(SAMPLE_ADD_ON, tmp_path)


HOSTILE: dict[str, tuple[Callable[[Path], Path], str]] = {
    "tar traversal": (
        lambda d: _tar(d / "a.tgz", [_file("app/../../evil.conf")]),
        "'..' in its path",
    ),
    "tar absolute": (lambda d: _tar(d / "a.tgz", [_file("/tmp/evil.conf")]), "absolute path"),
    "tar symlink": (
        lambda d: _tar(d / "a.tgz", [_link("app/x.conf", "/etc/passwd", tarfile.SYMTYPE)]),
        "links are not allowed",
    ),
    "tar hardlink": (
        lambda d: _tar(d / "a.tgz", [_link("app/x.conf", "/etc/passwd", tarfile.LNKTYPE)]),
        "links are not allowed",
    ),
    "tar device": (
        lambda d: _tar(d / "a.tgz", [_link("app/dev", "", tarfile.CHRTYPE)]),
        "not a regular file",
    ),
    "zip traversal": (lambda d: _zip(d / "a.zip", {"../../evil.conf": b"x"}), "'..' in its path"),
    "zip absolute": (lambda d: _zip(d / "a.zip", {"/tmp/evil.conf": b"x"}), "absolute path"),
    "zip bomb": (
        lambda d: _zip(d / "a.zip", {"app/big.conf": b"\0" * (64 << 20)}),
        "compression ratio",
    ),
    "tar bomb": (
        lambda d: _tar(d / "a.tgz", [_file("app/big.conf", b"\0" * (64 << 20))]),
        "compression ratio",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_archive_is_refused_naming_the_member(tmp_path: Path, case: str) -> None:
    build, reason = HOSTILE[case]
    archive = build(tmp_path)
    before = set(tmp_path.parent.iterdir())

    with pytest.raises(UnsafeArchive, match=reason), extracted(archive):
        pass

    assert not (tmp_path.parent / "evil.conf").exists()
    assert not Path("/tmp/evil.conf").exists()
    assert set(tmp_path.parent.iterdir()) == before


def test_a_zip_symlink_member_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        info = zipfile.ZipInfo("app/x.conf")
        info.external_attr = 0o120777 << 16
        zipped.writestr(info, "/etc/passwd")
    with (
        pytest.raises(UnsafeArchive, match=r"'app/x\.conf': links are not allowed"),
        extracted(archive),
    ):
        pass


def test_a_truncated_archive_is_refused_as_corrupt(tmp_path: Path) -> None:
    whole = _tar(
        tmp_path / "whole.tgz", [_file(f"app/{n}.conf", bytes(range(256)) * 400) for n in range(5)]
    )
    cut = tmp_path / "cut.tgz"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(UnsafeArchive, match="corrupt or truncated"), extracted(cut):
        pass


def test_member_count_and_size_caps_are_enforced(tmp_path: Path) -> None:
    many = _tar(tmp_path / "many.tgz", [_file(f"app/{n}.conf") for n in range(6)])
    with (
        pytest.raises(UnsafeArchive, match="more than 5 members"),
        extracted(many, Limits(max_members=5)),
    ):
        pass
    big = _tar(tmp_path / "big.tgz", [_file("app/a.conf", b"a" * 5000)])
    with (
        pytest.raises(UnsafeArchive, match="over 4096 bytes"),
        extracted(big, Limits(max_total_bytes=4096)),
    ):
        pass


def test_a_file_that_is_no_archive_is_refused(tmp_path: Path) -> None:
    plain = tmp_path / "notes.txt"
    plain.write_text("hello")
    with pytest.raises(UnsafeArchive, match=r"not a \.tar"), extracted(plain):
        pass
