"""Push a lifelong candidate that passed the gate to the fleet: export it to ONNX at
the robots' model spec, check the export against torch, and publish it as the next
model version.

    publisher = ModelPublisher(broker, "default", "/srv/models", load_private_key(key), "fleet-2026")
    publisher.start()
    pusher = CandidatePusher(publisher, ModelSpec(30, 480, 640, use_depth=True))
    trainer = LifelongTrainer(config, store, "current.pth", on_publish=pusher)
    trainer.run("nightly")          # a published candidate reaches the robots as version N+1

The version is one above the publisher's latest, which it reloads from its model
directory at start, so versions keep growing across restarts. Robots fetch the
chunks from the publisher: it has to keep running after the push for them to get it.
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import torch

from rfnet.checkpoint import load_checkpoint
from rfnet.engines import EngineConfig, ModelSpec, load_engine
from rfnet.onnx_export import export_onnx

from .model_push import ModelPublisher

log = logging.getLogger(__name__)

__all__ = ["CandidatePushError", "CandidatePusher", "candidate_notes", "manifest_spec"]


class CandidatePushError(RuntimeError):
    """The candidate cannot go to the fleet (wrong classes, an export that computes something else)."""


def manifest_spec(spec: ModelSpec) -> dict:
    """The spec as a manifest carries it; robots refuse a model whose spec is not theirs."""
    return {"num_classes": spec.num_classes, "input_height": spec.input_height,
            "input_width": spec.input_width, "use_depth": spec.use_depth}


def candidate_notes(candidate_path: Path, decision) -> str:
    """For people reading the manifest: which candidate, and the figures that let it through."""
    if decision is None:
        return f"lifelong candidate {Path(candidate_path).name}"
    old, new = decision.old_task, decision.new_task
    trained_from = decision.record.get("current", {}).get("version", "?")
    return (f"lifelong candidate {decision.candidate_id} (fine-tuned from checkpoint {trained_from}): "
            f"new-task mIoU {new.current:.4f} -> {new.candidate:.4f} ({new.delta:+.4f}), "
            f"old-task mIoU {old.current:.4f} -> {old.candidate:.4f} ({old.delta:+.4f}), BWT {decision.bwt:+.4f}")


def check_export(model, spec: ModelSpec, onnx_path: Path, min_agreement: float = 0.999, seed: int = 0) -> float:
    """Run the exported file with ONNX Runtime, as a CPU robot would, and compare its
    labels with torch's on a seeded random input; CandidatePushError below min_agreement.
    Returns the agreement."""
    rng = np.random.default_rng(seed)
    h, w = spec.input_hw
    rgb = rng.standard_normal((1, 3, h, w), dtype=np.float32)
    depth = rng.standard_normal((1, h, w), dtype=np.float32) if spec.use_depth else None
    engine = load_engine(EngineConfig(str(onnx_path), spec, "onnxruntime", device="cpu", threads=1)).engine
    try:
        out = engine.infer(rgb, depth)
    finally:
        engine.close()
    if not np.isfinite(out.confidence).all():
        raise CandidatePushError(f"{onnx_path}: the exported model gives non-finite outputs")
    with torch.no_grad():
        inputs = [torch.from_numpy(rgb)] + ([torch.from_numpy(depth)] if depth is not None else [])
        reference = model.eval()(*inputs).argmax(1).numpy()
    agreement = float((out.labels.reshape(reference.shape) == reference).mean())
    if agreement < min_agreement:
        raise CandidatePushError(f"{onnx_path}: ONNX Runtime and torch agree on only {agreement:.4%} of pixels "
                                 f"(need {min_agreement:.2%}); not published")
    return agreement


class CandidatePusher:
    """LifelongTrainer's on_publish: ``pusher(candidate_path, decision) -> version``.

    Raises CandidatePushError (the candidate is unfit for the robots) or
    model_push.PublishError (the publisher refused it); nothing is published then."""

    def __init__(self, publisher: ModelPublisher, spec: ModelSpec, min_agreement: float = 0.999, versions=None):
        self.publisher, self.spec, self.min_agreement = publisher, spec, min_agreement
        # A lifelong_ledger.TrainingLedger: allocates the version where every trainer sees it
        # (PostgreSQL); None: one above the publisher's own latest.
        self.versions = versions

    def __call__(self, candidate_path: str | Path, decision=None) -> int:
        candidate_path = Path(candidate_path)
        checkpoint = load_checkpoint(candidate_path)
        if checkpoint.num_classes != self.spec.num_classes:
            raise CandidatePushError(f"{candidate_path} predicts {checkpoint.num_classes} classes, the robots' "
                                     f"model spec {self.spec.num_classes}: not published")
        # The export lives only until the publisher has its own copy under model_dir/<version>/.
        with tempfile.TemporaryDirectory(prefix="push-", dir=candidate_path.parent) as tmp:
            onnx_path = export_onnx(checkpoint.model, self.spec, Path(tmp) / "model.onnx")
            agreement = check_export(checkpoint.model, self.spec, onnx_path, self.min_agreement)
            fleet = self.publisher.fleet
            if self.versions is None:
                version = self.publisher.latest_version + 1
            else:
                version = self.versions.reserve_version(fleet, self.publisher.latest_version,
                                                        getattr(decision, "candidate_id", None))
            try:
                manifest = self.publisher.publish(onnx_path, version, manifest_spec(self.spec),
                                                  notes=candidate_notes(candidate_path, decision))
            except BaseException:
                if self.versions is not None:
                    self.versions.cancel_version(fleet, version)
                raise
            if self.versions is not None:
                self.versions.confirm_version(fleet, version, manifest.model_sha256)
        log.info("pushed %s to fleet %r as model version %d (%s, %dx%d, sha256 %s; ONNX/torch agreement %.4f)",
                 candidate_path.name, self.publisher.fleet, version, self.spec.mode, self.spec.input_height,
                 self.spec.input_width, manifest.model_sha256[:12], agreement)
        return version
