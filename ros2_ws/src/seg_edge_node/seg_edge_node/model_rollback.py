"""Robot side of the cloud's signed rollback command (segwire.model_command; no ROS here).

A command is acted on only when its signature verifies under a trusted key, it is for
this fleet (and robot), and its sequence is above the last one acted on. Then:

  * the versions it withdraws are refused from now on, even after a restart (the
    retained manifest of a withdrawn version keeps arriving until a newer one replaces it);
  * a robot serving a withdrawn version goes back to the target version, which must be
    kept on disk intact (``versions/<N>/`` with the file matching its manifest's sha256,
    or the installed model for 0); a robot already at or below the target, or already
    past the withdrawn versions, has nothing to do.

What was acted on is kept in ``<directory>/rollback.json`` (written atomically), so a
restart neither forgets a withdrawal nor takes a replayed command. The same command
delivered again (the retained copy) is recognised by its signature and re-checked: a
robot killed during the rollback's swap finishes it when it is back.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from durable_files import file_sha256, makedirs_durable, write_atomic
from segwire import fleet_command_topic
from segwire.model_command import CommandError, RollbackCommand, verify_command

log = logging.getLogger(__name__)

STATE_FILE = "rollback.json"
MODEL_FILE = "model.onnx"        # the downloader's layout (model_download)
MANIFEST_FILE = "manifest.json"


@dataclass(frozen=True)
class CommandOutcome:
    action: str      # "rolling_back", "nothing_to_do", "not_addressed" or "refused"
    reason: str      # short code: unknown_key, bad_signature, malformed, other_fleet, replayed, unknown_version, ...
    message: str     # for people

    @property
    def refused(self) -> bool:
        return self.action == "refused"


class RollbackCommands:
    """Checks commands and remembers what it acted on. `roll_back(number, path)` starts
    the swap (ModelManager.offer with rollback=True); `serving_number()` is the release
    in service; `installed_model` is the model the robot started with (release 0)."""

    def __init__(self, directory: str | Path, trusted_keys: dict, robot_id: str, fleet: str,
                 serving_number: Callable[[], int], roll_back: Callable[[int, Path], bool],
                 installed_model: str | Path | None = None,
                 on_refused: Callable[[str], None] = lambda message: None):
        self.directory = Path(directory).expanduser()
        self.topic = fleet_command_topic(fleet)
        self.robot_id, self.fleet = robot_id, fleet
        self._trusted = dict(trusted_keys)
        self._serving_number, self._roll_back = serving_number, roll_back
        self._installed = Path(installed_model) if installed_model else None
        self._on_refused = on_refused
        self._state = self._load()

    # -- state ------------------------------------------------------------------------------
    def _load(self) -> dict:
        path = self.directory / STATE_FILE
        try:
            state = json.loads(path.read_text())
            return {"sequence": int(state["sequence"]), "signature": str(state["signature"]),
                    "withdrawn": [(int(lo), int(hi)) for lo, hi in state["withdrawn"]]}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError) as e:
            # Forgetting withdrawals is the lesser harm than not starting; say so loudly.
            log.error("%s is unreadable (%s): no rollback command remembered", path, e)
        return {"sequence": 0, "signature": "", "withdrawn": []}

    def _save(self, command: RollbackCommand) -> None:
        withdrawn = self._state["withdrawn"] + [(command.target_version + 1, command.withdrawn_through)]
        state = {"sequence": command.sequence, "signature": command.signature, "withdrawn": withdrawn,
                 "target_version": command.target_version, "issued_at": command.issued_at,
                 "reason": command.reason}
        makedirs_durable(self.directory)
        write_atomic(self.directory / STATE_FILE, (json.dumps(state) + "\n").encode())
        self._state = {"sequence": command.sequence, "signature": command.signature, "withdrawn": withdrawn}

    @property
    def last_sequence(self) -> int:
        return self._state["sequence"]

    def withdrawn(self, version: int) -> bool:
        """Was `version` withdrawn by a command acted on here?"""
        return any(lo <= version <= hi for lo, hi in self._state["withdrawn"])

    # -- commands ---------------------------------------------------------------------------
    def handle(self, payload: bytes) -> CommandOutcome:
        try:
            command = verify_command(payload, self._trusted)
        except CommandError as e:
            return self._refuse(e.reason, f"rollback command refused: {e}")
        if command.fleet != self.fleet:
            return self._refuse("other_fleet", f"rollback command {command.sequence} is for fleet "
                                               f"{command.fleet!r}, this robot is in {self.fleet!r}; ignored")
        if not command.addresses(self.robot_id):
            return CommandOutcome("not_addressed", "", f"rollback command {command.sequence} is for other robots")
        last = self.last_sequence
        again = command.sequence == last and command.signature == self._state["signature"]
        if command.sequence <= last and not again:
            return self._refuse("replayed", f"rollback command {command.sequence} refused: its sequence is not "
                                            f"above the last command acted on ({last}); a replayed or old command")
        serving = self._serving_number()
        if not command.withdraws(serving):
            if not again:
                self._save(command)
            where = "at or below" if serving <= command.target_version else "past"
            return CommandOutcome("nothing_to_do", "", f"rollback command {command.sequence} withdraws versions "
                                  f"{command.target_version + 1}..{command.withdrawn_through}; serving {serving}, "
                                  f"{where} them: nothing to roll back")
        path, problem = self._kept(command.target_version)
        if path is None:
            return self._refuse("unknown_version", f"rollback command {command.sequence} to version "
                                                   f"{command.target_version} refused: {problem}; still serving "
                                                   f"{serving}")
        if not again:
            self._save(command)   # before the swap: a crash during it must not forget the withdrawal
        log.warning("rollback command %d (%s): going back from model %d to %d", command.sequence,
                    command.reason or "no reason given", serving, command.target_version)
        if not self._roll_back(command.target_version, path):
            return self._refuse("refused_by_manager", f"rollback to version {command.target_version} could not "
                                                      "start (see the model status)")
        return CommandOutcome("rolling_back", "", f"rolling back from model {serving} to "
                                                  f"{command.target_version} (command {command.sequence})")

    def _kept(self, version: int) -> tuple[Path | None, str]:
        """The intact file of a kept version, or None and why not."""
        if version == 0:
            if self._installed is not None and self._installed.is_file():
                return self._installed, ""
            return None, "the installed model (version 0) is not on disk"
        folder = self.directory / "versions" / str(version)
        model, manifest = folder / MODEL_FILE, folder / MANIFEST_FILE
        if not (model.is_file() and manifest.is_file()):
            kept = sorted(int(p.name) for p in (self.directory / "versions").glob("*")
                          if p.name.isdigit() and (p / MANIFEST_FILE).is_file())
            return None, f"this robot does not keep version {version} (kept: {kept or 'none'})"
        try:
            expected = json.loads(manifest.read_bytes())["model_sha256"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            return None, f"the manifest of kept version {version} is unreadable ({e})"
        if file_sha256(model) != expected:
            return None, f"the kept file of version {version} no longer matches its manifest (disk damage?)"
        return model, ""

    def _refuse(self, reason: str, message: str) -> CommandOutcome:
        log.error("%s", message)
        self._on_refused(message)
        return CommandOutcome("refused", reason, message)
