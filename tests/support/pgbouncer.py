"""A real PgBouncer (Debian's ``pgbouncer`` package) in transaction mode in front of the
test PostgreSQL, on a free port with its own configuration, for one test."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psycopg

from tests.support.ports import free_port
from tests.support.services import postgres_admin_url, require
from tests.support.waiting import wait_until

#: Where Debian installs it (/usr/sbin is not on every user's PATH).
DEBIAN_BINARY = Path("/usr/sbin/pgbouncer")
#: PgBouncer refuses to run as root; started by root it is told to switch to this user.
UNPRIVILEGED_USER = "nobody"


def pgbouncer_binary() -> Path | None:
    found = shutil.which("pgbouncer")
    if found:
        return Path(found)
    return DEBIAN_BINARY if DEBIAN_BINARY.exists() else None


@dataclass
class PgBouncer:
    """A running PgBouncer; ``url()`` is a SQLAlchemy URL of a database through it."""

    process: subprocess.Popen[bytes]
    port: int
    user: str
    log: Path

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    def libpq_url(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def transactions(self, database: str) -> int:
        """Transactions PgBouncer has passed to ``database`` so far (its admin console's
        SHOW STATS, which it updates every few seconds)."""
        with psycopg.connect(self.libpq_url("pgbouncer"), autocommit=True) as admin:
            # The admin console speaks the simple query protocol only.
            cursor = admin.cursor()
            cursor.execute("SHOW STATS")
            names = [column.name for column in cursor.description or []]
            for row in cursor.fetchall():
                stats = dict(zip(names, row, strict=True))
                if stats["database"] == database:
                    return int(stats["total_xact_count"])
        return 0


@contextmanager
def running_pgbouncer(directory: Path, database: str, *, pool_size: int) -> Iterator[PgBouncer]:
    """PgBouncer in transaction mode, passing ``database`` to the test PostgreSQL over at
    most ``pool_size`` server connections; stopped afterwards. Fails in CI without it."""
    binary = pgbouncer_binary()
    require(binary is not None, "the pgbouncer program (Debian package pgbouncer)")
    assert binary is not None
    server = urlsplit(postgres_admin_url())
    user = server.username or "postgres"
    port = free_port()
    directory.mkdir(parents=True, exist_ok=True)
    users = directory / "users.txt"
    users.write_text(f'"{user}" ""\n')
    config = directory / "pgbouncer.ini"
    config.write_text(
        "[databases]\n"
        f"{database} = host={server.hostname or '127.0.0.1'} port={server.port or 5432} "
        f"dbname={database} user={user}\n"
        "[pgbouncer]\n"
        "listen_addr = 127.0.0.1\n"
        f"listen_port = {port}\n"
        "unix_socket_dir =\n"
        "auth_type = trust\n"
        f"auth_file = {users}\n"
        f"admin_users = {user}\n"
        "pool_mode = transaction\n"
        f"default_pool_size = {pool_size}\n"
        "max_client_conn = 500\n"
        # Its log goes to stderr, into the log file this process opened.
        "logfile =\n"
        "pidfile =\n"
    )
    command = [str(binary), str(config)]
    if os.geteuid() == 0:
        # It reads both files before switching, so they may stay private to root.
        command[1:1] = ["-u", UNPRIVILEGED_USER]
    log = directory / "pgbouncer.log"
    with log.open("ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    bouncer = PgBouncer(process, port, user, log)
    try:
        wait_until(lambda: _answers(bouncer, database), 15, "PgBouncer to accept connections")
        yield bouncer
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def _answers(bouncer: PgBouncer, database: str) -> bool:
    if bouncer.process.poll() is not None:
        raise AssertionError(f"pgbouncer exited:\n{bouncer.log.read_text()}")
    try:
        with psycopg.connect(bouncer.libpq_url(database), connect_timeout=2) as connection:
            return connection.execute("SELECT 1").fetchone() == (1,)
    except psycopg.OperationalError:
        return False
