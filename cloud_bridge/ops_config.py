"""Settings for running the cloud side as a service (the `store:` and `http:` sections of
the bridge YAML): which sample store backend, how to reach PostgreSQL, and the HTTP port
for probes and Prometheus metrics.

Kept apart from the modules that use them (pg_store imports psycopg, service_http
prometheus_client) so that reading the config costs neither.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

BACKENDS = ("sqlite", "postgres")


@dataclass(frozen=True)
class PostgresConfig:
    # libpq connection string or URI without the password, e.g.
    # "host=db.lan port=5432 dbname=segdog user=bridge"; the environment variable named by
    # dsn_env, when set, is used instead (a Secret in Kubernetes).
    dsn: str = ""
    dsn_env: str = "SEG_STORE_DSN"
    password_file: str = ""        # first line is the password; read at each (re)connect
    connect_timeout_s: int = 10
    statement_timeout_s: float = 60.0
    application_name: str = ""     # default: the bridge id

    def __post_init__(self) -> None:
        if self.connect_timeout_s < 1:
            raise ValueError(f"postgres.connect_timeout_s={self.connect_timeout_s}: use 1 or more")
        if not self.statement_timeout_s > 0:
            raise ValueError(f"postgres.statement_timeout_s={self.statement_timeout_s}: use a time > 0")
        if self.dsn_env and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.dsn_env):
            raise ValueError(f"postgres.dsn_env={self.dsn_env!r} is not an environment variable name")


@dataclass(frozen=True)
class StoreConfig:
    # sqlite: <storage_dir>/samples, one host (the embedded default).
    # postgres: samples with their images (bytea), the lifelong trainer's bookkeeping and
    # lease, shared by replicas and trainers on any number of hosts.
    backend: str = "sqlite"
    postgres: PostgresConfig = field(default_factory=PostgresConfig)
    retry_s: float = 2.0           # while the store is unreachable a frame waits this long between tries

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"store.backend={self.backend!r}: use one of {BACKENDS}")
        if not self.retry_s > 0:
            raise ValueError(f"store.retry_s={self.retry_s}: use a time > 0")


@dataclass(frozen=True)
class HttpConfig:
    # /healthz, /readyz and /metrics (Prometheus); port 0 = no HTTP server.
    port: int = 0
    host: str = "0.0.0.0"

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"http.port={self.port}: use 0 (off) or a TCP port")
