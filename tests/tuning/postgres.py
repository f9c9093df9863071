"""A real PostgreSQL server for the storage tests, started and stopped by a fixture.

The server is the Debian package's (``/usr/lib/postgresql/<version>/bin``; CI installs
``postgresql`` in .ci/run). ``initdb`` refuses to run as root, so under root ``initdb``
and the server run as the ``postgres`` user (``runuser -u postgres --``); otherwise as
the test's own user. The cluster lives in a fresh temp dir (``/tmp``: the postgres user
cannot reach into pytest's 0700 tmp dirs), trusts local connections, listens on
127.0.0.1 on a free port and keeps its unix socket in the temp dir; fsync is off (a test
server need not survive a power cut, and restarts stay correct without it). The fixture
waits with ``pg_isready``, stops the server with ``pg_ctl stop -m fast`` and removes the
dir afterwards, also when the test failed.

Each test gets its own database (``pg_url``) on the module's server; under xdist each
worker process that runs one of these tests starts its own server (fixtures live in
their process), on its own port and in its own dir, so the tests spread over workers.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["PostgresServer", "pg_server", "pg_url"]


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version)
    return Path(found[-1]).parent if found else None


def _version(path: str) -> float:
    try:
        return float(Path(path).parent.parent.name)
    except ValueError:
        return 0.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One PostgreSQL cluster in a temp dir; :meth:`stop` / :meth:`start` restart it."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.as_postgres = os.geteuid() == 0
        self.root = Path(tempfile.mkdtemp(prefix="babysit-pg-"))
        self.root.chmod(0o755)  # the postgres user reaches its data dir and socket through it
        self.data, self.log = self.root / "data", self.root / "server.log"
        self.data.mkdir(mode=0o700)
        if self.as_postgres:
            shutil.chown(self.root, "postgres")
            shutil.chown(self.data, "postgres")
        self.port = _free_port()
        self.databases = 0
        self._run("initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync")

    def _run(self, tool: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin / tool), *map(str, args)]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, cwd=self.root)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{tool} failed: {done.stderr.strip()}\n{log}")
        return done

    def start(self) -> None:
        """Start (again, on the same port) and wait until it accepts connections."""
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -c fsync=off "
        options += f"-c unix_socket_directories={self.root} -c max_connections=200"
        self._run("pg_ctl", "start", "-w", "-D", self.data, "-l", self.log, "-o", options)
        self._run("pg_isready", "-h", "127.0.0.1", "-p", str(self.port), "-t", "60")

    def stop(self) -> None:
        """Stop now: sessions are ended (``-m fast``), as in an administrator's restart."""
        self._run("pg_ctl", "stop", "-w", "-m", "fast", "-D", self.data)

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def create_database(self) -> str:
        """A new empty database; its SQLAlchemy URL."""
        self.databases += 1
        name = f"babysit{self.databases}"
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{name}"

    def remove(self) -> None:
        if self.running():
            user = ["runuser", "-u", "postgres", "--"] if self.as_postgres else []
            stop = [str(self.bin / "pg_ctl"), "stop", "-w", "-m", "immediate", "-D", str(self.data)]
            subprocess.run([*user, *stop], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


def _why_not() -> str | None:
    """Why no server can be started here; None when one can."""
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return "psycopg2 is not installed (pip install 'babysit[postgresql]')"
    if _bin_dir() is None:
        return "no PostgreSQL server in /usr/lib/postgresql/*/bin (apt-get install postgresql)"
    if os.geteuid() == 0:
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root without a postgres user to run initdb as"
        if shutil.which("runuser") is None:
            return "running as root without runuser to run initdb as the postgres user"
    return None


@pytest.fixture(scope="module")
def pg_server() -> Iterator[PostgresServer]:
    """A running PostgreSQL server for this test module (skips with the reason when none
    can be started here)."""
    why = _why_not()
    if why is not None:
        pytest.skip(f"no PostgreSQL server: {why}")
    bin_dir = _bin_dir()
    assert bin_dir is not None
    server = PostgresServer(bin_dir)
    try:
        for attempt in range(3):  # the free port may be taken between the probe and the bind
            try:
                server.start()
                break
            except RuntimeError:
                if attempt == 2:
                    raise
                server.port = _free_port()
        yield server
    finally:
        server.remove()


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> Iterator[str]:
    """A fresh database on the module's server (running again if a test stopped it)."""
    if not pg_server.running():
        pg_server.start()
    yield pg_server.create_database()
    if not pg_server.running():  # a test that left it down: the next test gets it back
        pg_server.start()
