"""Database fixtures: every storage test runs on SQLite and on a real PostgreSQL server.

The PostgreSQL server is Debian's (``postgresql`` in scripts/system-packages.txt), started once
per test session by ``initdb``/``pg_ctl`` in a temporary directory and listening only on a unix
socket there (``listen_addresses=''``): no TCP port, nothing outside the test. PostgreSQL
refuses to run as root, so as root the server runs as the ``postgres`` user.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _pg_bin() -> Path | None:
    if (PG_BIN / "initdb").exists():
        return PG_BIN
    found = shutil.which("pg_ctl")
    return Path(os.path.realpath(found)).parent if found else None


def _as_pg_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="session")
def postgres_socket_dir() -> Iterator[str]:
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not installed (scripts/system-packages.txt: postgresql)")
    base = tempfile.mkdtemp(prefix="trackmesh-pg-")
    data, sock = os.path.join(base, "data"), os.path.join(base, "sock")
    os.mkdir(sock)
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        shutil.chown(sock, "postgres")
    os.chmod(base, 0o755)
    subprocess.run(_as_pg_user([str(bindir / "initdb"), "-D", data, "-U", "trackmesh", "--auth=trust", "-E", "UTF8"]),
                   check=True, capture_output=True)
    opts = f"-k {sock} -c listen_addresses='' -c fsync=off"
    subprocess.run(_as_pg_user([str(bindir / "pg_ctl"), "-D", data, "-o", opts, "-w", "-l",
                                os.path.join(base, "log"), "start"]), check=True, capture_output=True)
    try:
        yield sock
    finally:
        subprocess.run(_as_pg_user([str(bindir / "pg_ctl"), "-D", data, "-m", "immediate", "stop"]),
                       capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def _new_pg_database(sock: str) -> str:
    import psycopg

    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(f"dbname=postgres user=trackmesh host={sock}", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql://trackmesh@/{name}?host={sock}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database URL on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'connector.db'}"
    sock = request.getfixturevalue("postgres_socket_dir")
    return _new_pg_database(sock)
