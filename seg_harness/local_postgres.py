"""A private PostgreSQL cluster for tests, benchmarks and demos, like LocalBroker for
mosquitto: initdb in a temporary directory, a server on a free port, password login.

PostgreSQL refuses to run as root. Started by root (CI runs as root), the cluster runs
as the `postgres` system user that Debian's package creates (through setpriv), in a
directory that user owns; started by anyone else, as that user. The superuser's password
is random and kept in `password_file` (mode 0600, readable by the clients' user).
"""
from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from .local_cloud import STARTED, end_process, free_port

SERVER_USER = "postgres"   # Debian's package creates it


def postgres_bindir() -> Path:
    """The newest installed PostgreSQL's bin directory (Debian: /usr/lib/postgresql/<v>/bin)."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"),
                      key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    if versions:
        return versions[-1].parent
    found = shutil.which("postgres")
    if found is None:
        raise FileNotFoundError("PostgreSQL is not installed; run scripts/setup.sh (apt-get install postgresql)")
    return Path(found).resolve().parent


class LocalPostgres:
    """`listen` are the addresses the server listens on (default 127.0.0.1); `allow` the
    client networks pg_hba admits with a password (default: the listen addresses).
    `register`: listed in local_cloud.STARTED, so a test's teardown stops it; a fixture
    wider than one test passes False and destroys it itself."""

    def __init__(self, listen: tuple[str, ...] = ("127.0.0.1",), port: int | None = None,
                 allow: tuple[str, ...] | None = None, user: str = "seg", database: str = "segdog",
                 register: bool = True):
        self.register = register
        self.listen, self.port = tuple(listen), port or free_port()
        self.allow = tuple(allow) if allow else tuple(f"{a}/32" for a in self.listen)
        self.user, self.database = user, database
        self.bindir = postgres_bindir()
        self._as_root = os.geteuid() == 0
        # Not under pytest's tmp_path: its parents are private to root, the server user
        # could not reach its data directory there.
        self.directory = Path(tempfile.mkdtemp(prefix="seg-pg-"))
        self.data_dir = self.directory / "data"
        self.log_path = self.directory / "postgres.log"
        self.password_file = self.directory / "password"
        self.password = secrets.token_urlsafe(18)
        self.process: subprocess.Popen | None = None
        self._initdb()

    # -- set-up ------------------------------------------------------------------------
    def _run_as_server(self, cmd: list, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(self._server_cmd(cmd), check=True, capture_output=True, text=True, **kwargs)

    def _server_cmd(self, cmd: list) -> list[str]:
        cmd = [str(c) for c in cmd]
        # setpriv execs the command (runuser would stay in between and not pass on signals).
        return ["setpriv", f"--reuid={SERVER_USER}", f"--regid={SERVER_USER}", "--init-groups", "--", *cmd] \
            if self._as_root else cmd

    def _initdb(self) -> None:
        server_pwfile = self.directory / "initdb-pw"
        server_pwfile.write_text(self.password + "\n")
        if self._as_root:
            entry = pwd.getpwnam(SERVER_USER)
            for path in (self.directory, server_pwfile):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self.password_file.write_text(self.password + "\n")
        self.password_file.chmod(0o600)
        try:
            self._run_as_server([self.bindir / "initdb", "-D", self.data_dir, "-U", self.user, "--pwfile",
                                 server_pwfile, "--auth=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8",
                                 "--no-sync"], timeout=120)
        except subprocess.CalledProcessError as e:
            raise RuntimeError(f"initdb failed:\n{e.stdout}\n{e.stderr}") from e
        finally:
            server_pwfile.unlink()
        hba = "".join(f"host all all {net} scram-sha-256\n" for net in self.allow)
        (self.data_dir / "pg_hba.conf").write_text(hba)
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write(f"listen_addresses = '{','.join(self.listen)}'\nport = {self.port}\n"
                       "unix_socket_directories = ''\n"   # TCP only: the tests reach it as a remote server
                       "max_connections = 60\nshared_buffers = 32MB\n"
                       "fsync = on\nsynchronous_commit = on\n"
                       "log_min_messages = warning\n")

    # -- lifecycle ---------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> "LocalPostgres":
        with open(self.log_path, "a") as log:
            if self._as_root:
                os.chown(self.log_path, pwd.getpwnam(SERVER_USER).pw_uid, -1)
            self.process = subprocess.Popen(self._server_cmd([self.bindir / "postgres", "-D", self.data_dir]),
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        if self.register and self not in STARTED:
            STARTED.append(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited at start:\n{self.log()}")
            if self._accepts():
                self._create_database()
                return self
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"postgres did not accept connections on {self.listen[0]}:{self.port}:\n{self.log()}")

    def _accepts(self) -> bool:
        import psycopg
        try:
            psycopg.connect(self.admin_dsn("postgres"), password=self.password, connect_timeout=2).close()
            return True
        except psycopg.OperationalError:
            return False

    def _create_database(self) -> None:
        self.create_database(self.database, exist_ok=True)

    def create_database(self, name: str, exist_ok: bool = False) -> str:
        """A new empty database; returns its DSN (without the password)."""
        import psycopg
        from psycopg import sql
        with psycopg.connect(self.admin_dsn("postgres"), password=self.password, autocommit=True,
                             connect_timeout=5) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            elif not exist_ok:
                raise ValueError(f"database {name} exists")
        return self.admin_dsn(name)

    def admin_dsn(self, database: str | None = None, host: str | None = None) -> str:
        return (f"host={host or self.listen[0]} port={self.port} dbname={database or self.database} "
                f"user={self.user}")

    @property
    def dsn(self) -> str:
        return self.admin_dsn()

    def stop(self, timeout: float = 30.0) -> None:
        """A fast shutdown (SIGINT: active transactions roll back, clients are cut off)."""
        if self.process is not None:
            end_process(self.process, signal.SIGINT, timeout)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        self.stop()
        if self in STARTED:
            STARTED.remove(self)
        shutil.rmtree(self.directory, ignore_errors=True)

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.destroy()

