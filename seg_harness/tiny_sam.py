"""TEST UTILITY, not for production: a tiny Segment Anything model with random weights.

Built by segment-anything's own builder (``_build_sam``) with a 2-block, 64-wide image
encoder, so the whole automatic-mask-generator path runs on a CPU in about a second per
image. Its masks are meaningless; lower the quality thresholds (``tiny_sam_config``) or
random weights filter every mask out.

The mask decoder is SAM's full-size one (the builder fixes it) and its cost grows with
the number of point prompts (points_per_side ** 2); keep points_per_side small.
"""
from __future__ import annotations

import dataclasses

from cloud_bridge.mask_generators import SamConfig

TINY_ENCODER = dict(encoder_embed_dim=64, encoder_depth=2, encoder_num_heads=2,
                    encoder_global_attn_indexes=[1])


def build_tiny_sam(seed: int = 0):
    """A random-weight ``segment_anything.modeling.Sam``, deterministic per seed."""
    import torch
    from segment_anything.build_sam import _build_sam

    with torch.random.fork_rng():  # leave the caller's RNG stream alone
        torch.manual_seed(seed)
        return _build_sam(**TINY_ENCODER, checkpoint=None)


def tiny_sam_config(**overrides) -> SamConfig:
    """CPU, a 2x2 prompt grid and no quality filtering, so random weights yield masks."""
    base = SamConfig(device="cpu", points_per_side=2, pred_iou_thresh=0.0,
                     stability_score_thresh=0.0)
    return dataclasses.replace(base, **overrides)
