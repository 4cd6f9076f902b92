"""Safe extraction: real archives extract; hostile and broken ones are refused, writing
nothing outside the temporary directory."""

from __future__ import annotations

import gzip
import io
import random
import struct
import tarfile
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from app.workloads.ingest.archive import Limits, UnsafeArchive, extracted
from app.workloads.ingest.rules import CHUNK
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


# Hostile headers and directories: each is refused before it costs what it claims.


def _blocks(info: tarfile.TarInfo, data: bytes = b"") -> bytes:
    """A tar member as written, GNU format (long names and links as extra blocks)."""
    info.size = len(data)
    padding = -len(data) % tarfile.BLOCKSIZE
    return info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape") + data + b"\0" * padding


def _long_name_header(size: int) -> bytes:
    """The header of a GNU long name of ``size`` bytes, without the name."""
    info = tarfile.TarInfo("././@LongLink")
    info.type, info.size = tarfile.GNUTYPE_LONGNAME, size
    return info.tobuf(tarfile.GNU_FORMAT)


def test_a_gnu_long_name_of_64_mib_is_refused_before_it_is_read(tmp_path: Path) -> None:
    # The attacker's upload: 65 KB that tarfile would inflate to a 64 MiB name (NULs after
    # a short one, so that the name it keeps looks harmless).
    size = 64 << 20
    archive = tmp_path / "long.tgz"
    with gzip.open(archive, "wb") as out:
        out.write(_long_name_header(size) + b"app/default/x.conf")
        zeros = bytes(CHUNK)
        for _ in range((size - len("app/default/x.conf")) // CHUNK):
            out.write(zeros)
        out.write(b"\0" * (-(size - len("app/default/x.conf")) % CHUNK + -size % 512))
        out.write(_blocks(tarfile.TarInfo("app/default/x.conf"), b"[s]\na = 1\n") + bytes(1024))
    assert archive.stat().st_size < 100_000

    tracemalloc.start()
    try:
        with pytest.raises(UnsafeArchive, match="tar headers over 65536 bytes"), extracted(archive):
            pass
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20


def test_chained_long_names_are_refused_rather_than_recursed_into(tmp_path: Path) -> None:
    # tarfile reads each chained header by recursing: 400 of them overflow Python's stack.
    link = _long_name_header(512) + b"a" * 511 + b"\0"
    archive = tmp_path / "chain.tar"
    archive.write_bytes(
        link * 400 + _blocks(tarfile.TarInfo("app/x.conf"), b"x = 1\n") + bytes(1024)
    )
    with pytest.raises(UnsafeArchive, match="tar headers over"), extracted(archive):
        pass


def _pax_tgz(path: Path, members: int, header_bytes: int) -> Path:
    """Members of one byte, each after a PAX header of about ``header_bytes``."""
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for n in range(members):
            info = tarfile.TarInfo(f"app/{n}.conf")
            info.pax_headers = {"comment": "c" * header_bytes}
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    return path


def test_header_bytes_count_against_the_size_cap(tmp_path: Path) -> None:
    archive = _pax_tgz(tmp_path / "pax.tgz", members=5, header_bytes=50_000)
    with (
        pytest.raises(UnsafeArchive, match="over 200000 bytes"),
        extracted(archive, Limits(max_total_bytes=200_000)),
    ):
        pass


def test_header_bytes_count_against_the_ratio(tmp_path: Path) -> None:
    # 2.4 MB of headers in a few KB, for 40 bytes of files.
    archive = _pax_tgz(tmp_path / "pax.tgz", members=40, header_bytes=60_000)
    assert archive.stat().st_size < 24_000
    with pytest.raises(UnsafeArchive, match="compression ratio over 100"), extracted(archive):
        pass


def test_global_pax_headers_are_bounded(tmp_path: Path) -> None:
    archive = tmp_path / "global.tgz"
    with tarfile.open(
        archive, "w:gz", format=tarfile.PAX_FORMAT, pax_headers={"comment": "g" * 9000}
    ) as tar:
        info, data = _file("app/x.conf")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(UnsafeArchive, match="PAX global headers over 8192"), extracted(archive):
        pass


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("app/default/caf\udce9.conf", r"b'app/default/caf\\xe9\.conf': its name is not UTF-8"),
        ("app/" + "d/" * 600 + "x.conf", "name longer than 1024 bytes"),
        ("app/" + "d" * 300 + "/x.conf", "a part of its path over 255 bytes"),
    ],
    ids=["not UTF-8", "too long", "part too long"],
)
def test_a_tar_member_name_no_database_can_store_is_refused(
    tmp_path: Path, name: str, reason: str
) -> None:
    archive = tmp_path / "names.tar"
    archive.write_bytes(_blocks(tarfile.TarInfo(name), b"x = 1\n") + bytes(1024))
    with pytest.raises(UnsafeArchive, match=reason), extracted(archive):
        pass


def test_a_sparse_tar_member_is_refused(tmp_path: Path) -> None:
    info = tarfile.TarInfo("app/x.conf")
    info.type = tarfile.GNUTYPE_SPARSE
    archive = tmp_path / "sparse.tar"
    archive.write_bytes(_blocks(info, b"x = 1\n") + bytes(1024))
    with pytest.raises(UnsafeArchive, match="sparse files are not allowed"), extracted(archive):
        pass


def test_a_damaged_tar_gz_is_refused_by_its_checksum(tmp_path: Path) -> None:
    noise = random.Random(0).randbytes(200_000)  # stored, not compressed: damage goes unseen
    whole = _tar(tmp_path / "whole.tgz", [_file("app/a.conf", noise)]).read_bytes()
    damaged = tmp_path / "damaged.tgz"
    damaged.write_bytes(whole[:100_000] + bytes(50) + whole[100_050:])
    with pytest.raises(UnsafeArchive, match="corrupt or truncated"), extracted(damaged):
        pass


def _zip64_claiming(path: Path, entries: int) -> Path:
    """A one-member zip whose ZIP64 end records claim ``entries`` members."""
    small = _zip(path, {"app/x.conf": b"x = 1\n"}).read_bytes()
    _, _, _, _, _, size, offset, _ = struct.unpack("<4s4H2LH", small[-22:])
    end = len(small) - 22
    record = struct.pack(
        "<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, entries, entries, size, offset
    )
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, end, 1)
    eocd = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    path.write_bytes(small[:end] + record + locator + eocd)
    return path


def _no_zipfile(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("zipfile read the central directory")

    monkeypatch.setattr(zipfile, "ZipFile", refuse)


def test_a_zip_claiming_a_million_members_is_refused_before_zipfile_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = _zip64_claiming(tmp_path / "million.zip", 1_000_000)
    _no_zipfile(monkeypatch)
    with pytest.raises(UnsafeArchive, match="claims 1000000 members"), extracted(archive):
        pass


def test_a_zip_directory_holding_more_than_it_claims_is_refused_before_zipfile_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = _zip(tmp_path / "many.zip", {f"app/{n}.conf": b"x" for n in range(20)})
    data = bytearray(archive.read_bytes())
    struct.pack_into("<2H", data, len(data) - 22 + 8, 1, 1)  # the record says: 1 member
    archive.write_bytes(data)
    _no_zipfile(monkeypatch)
    with (
        pytest.raises(UnsafeArchive, match="more than 5 members"),
        extracted(archive, Limits(max_members=5)),
    ):
        pass


def test_zip_entries_with_large_extras_are_refused(tmp_path: Path) -> None:
    archive = tmp_path / "extras.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        info = zipfile.ZipInfo("app/x.conf")
        info.comment = b"c" * 5000
        zipped.writestr(info, b"x = 1\n")
    with pytest.raises(UnsafeArchive, match="comment over 4096 bytes"), extracted(archive):
        pass


def _patched_zip(path: Path, patch: Callable[[bytearray, int, int], None]) -> Path:
    """A one-member deflated zip, with ``patch(data, local header, central entry)`` applied."""
    data = bytearray(_zip(path, {"app/cafX.conf": b"x = 1\n" * 100}).read_bytes())
    patch(data, data.index(b"PK\x03\x04"), data.index(b"PK\x01\x02"))
    path.write_bytes(data)
    return path


def _non_utf8_name(data: bytearray, local: int, central: int) -> None:
    for header, flags in ((local, 6), (central, 8)):
        struct.pack_into("<H", data, header + flags, 0x800)
    data[:] = data.replace(b"cafX", b"caf\xff")


def _encrypted(data: bytearray, local: int, central: int) -> None:
    for header, flags in ((local, 6), (central, 8)):
        struct.pack_into("<H", data, header + flags, 0x1)


def _bad_deflate(data: bytearray, local: int, central: int) -> None:
    data[local + 30 + len("app/cafX.conf")] = 0xFF  # block type 3: not deflate


@pytest.mark.parametrize(
    ("patch", "reason"),
    [
        (_non_utf8_name, r"member b'app/caf\\xff\.conf': its name is not UTF-8"),
        (_encrypted, "'app/cafX.conf': encrypted"),
        (_bad_deflate, "corrupt or truncated zip archive"),
    ],
    ids=["name not UTF-8", "encrypted", "bad deflate data"],
)
def test_a_zip_member_that_cannot_be_read_fails_permanently_naming_it(
    tmp_path: Path, patch: Callable[[bytearray, int, int], None], reason: str
) -> None:
    archive = _patched_zip(tmp_path / "patched.zip", patch)
    with pytest.raises(UnsafeArchive, match=reason), extracted(archive):
        pass


def test_zip_members_compressed_with_lzma_are_refused(tmp_path: Path) -> None:
    archive = tmp_path / "lzma.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_LZMA) as zipped:
        zipped.writestr("app/x.conf", b"x = 1\n")
    with (
        pytest.raises(UnsafeArchive, match="compression method 14 is not allowed"),
        extracted(archive),
    ):
        pass


def test_a_zip_directory_larger_than_its_members_can_be_is_refused_before_it_is_walked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = tmp_path / "big-directory.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("app/x.conf", random.Random(0).randbytes(20_000))
    data = bytearray(archive.read_bytes())
    end = len(data) - 22
    struct.pack_into("<2L", data, end + 12, 10_000, end - 10_000)  # its size and offset
    archive.write_bytes(data)
    _no_zipfile(monkeypatch)
    with (
        pytest.raises(UnsafeArchive, match="central directory is over 5166 bytes"),
        extracted(archive, Limits(max_members=1)),
    ):
        pass
