"""Shared fixtures: checkpoints rebuilt from the documented rule, small specs."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

DATA = Path(__file__).parent / "data"
REFERENCE = DATA / "rfnet_reference"
REFERENCE_SEED = 20261121


def read_reference_keys() -> list[tuple[str, tuple[int, ...], str]]:
    rows = []
    for line in (REFERENCE / "state_dict_keys.tsv").read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        key, shape, dtype = line.split("\t")
        rows.append((key, tuple(int(s) for s in shape.strip("()").split(",") if s.strip()), dtype))
    return rows


def reference_state_dict(seed: int = REFERENCE_SEED) -> dict[str, torch.Tensor]:
    """The reference checkpoint's tensors, rebuilt from the rule in rfnet_reference/README.md."""
    rng = np.random.default_rng(seed)
    sd = {}
    for key, shape, dtype in read_reference_keys():
        if dtype == "int64":
            sd[key] = torch.zeros(shape, dtype=torch.int64)
            continue
        z = rng.standard_normal(shape)
        if key.endswith("running_var"):
            a = 1 + 0.1 * np.abs(z)
        elif key.endswith("running_mean"):
            a = 0.1 * z
        elif key.endswith("weight") and len(shape) == 1:
            a = 1 + 0.1 * z
        elif key.endswith("bias"):
            a = 0.05 * z
        else:
            a = z * math.sqrt(2.0 / math.prod(shape[1:]))
        sd[key] = torch.from_numpy(a.astype(np.float32))
    return sd


def write_ianvs_checkpoint(path: Path, state_dict: dict) -> Path:
    """Exactly the layout the Ianvs/RFNet trainer writes."""
    torch.save({"epoch": 1, "state_dict": state_dict, "optimizer": {}, "best_pred": 0.0}, path)
    return path


@pytest.fixture(autouse=True)
def no_processes_left_behind():
    """A failing test must not leave a node, bridge or broker running: it could share a DDS
    domain with a later test and answer for it. Processes of wider-scoped fixtures, started
    before this test, are left to their fixtures."""
    from seg_harness import local_cloud
    from seg_harness import processes
    marks = len(processes.STARTED), len(local_cloud.STARTED)
    yield
    processes.stop_started_since(marks[0])
    local_cloud.stop_started_since(marks[1])


@pytest.fixture
def broker(tmp_path):
    """A private mosquitto on a free loopback port, stopped after the test."""
    from seg_harness.local_cloud import LocalBroker
    with LocalBroker(tmp_path / "broker") as b:
        yield b


@pytest.fixture(scope="session")
def reference_checkpoint(tmp_path_factory) -> Path:
    return write_ianvs_checkpoint(tmp_path_factory.mktemp("ckpt") / "pretrain_model.pth",
                                  reference_state_dict())


@pytest.fixture(scope="session")
def reference_outputs() -> dict[str, np.ndarray]:
    with np.load(REFERENCE / "reference_outputs.npz") as z:
        return dict(z)


@pytest.fixture(scope="session")
def postgres_server():
    """A private PostgreSQL cluster on a free loopback port (seg_harness.local_postgres),
    shared by the session's tests; each test takes its own database (pg_database)."""
    from seg_harness.local_postgres import LocalPostgres
    server = LocalPostgres(register=False).start()
    yield server
    server.destroy()


@pytest.fixture
def pg_database(postgres_server):
    """A fresh, empty database on the session's PostgreSQL: (dsn, password_file)."""
    import uuid

    import psycopg

    name = f"t_{uuid.uuid4().hex[:16]}"
    dsn = postgres_server.create_database(name)
    yield dsn, str(postgres_server.password_file)
    if postgres_server.process is not None:   # a test may have stopped it
        with psycopg.connect(postgres_server.admin_dsn("postgres"), password=postgres_server.password,
                             autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
