"""runs/<timestamp>/ folders of the main job and the demo, with runs/latest pointing at the newest."""
from __future__ import annotations

import time
from pathlib import Path


def new_run_dir(runs: Path) -> Path:
    run = Path(runs) / time.strftime("%Y%m%d-%H%M%S")
    run.mkdir(parents=True, exist_ok=False)
    latest = Path(runs) / "latest"
    if latest.is_symlink() or latest.exists():
        latest.unlink()
    latest.symlink_to(run.name)
    return run
