"""Label id remapping as one 256-entry lookup table, applied once per label image."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

IGNORE_LABEL = 255


@dataclass(frozen=True)
class LabelConfig:
    """How label ids on disk become the network's class ids.

    `label_map`: a {disk id: class id} dict, where ids it does not list become 255
    (ignore), or a 256-entry lookup table. `num_classes`: ids >= num_classes become
    255 after the map, as in the original RFNet pipeline.
    """

    num_classes: int | None = None
    label_map: Mapping[int, int] | Sequence[int] | np.ndarray | None = None

    def lut(self) -> np.ndarray:
        if self.label_map is None:
            table = np.arange(256, dtype=np.int64)
        elif isinstance(self.label_map, Mapping):
            table = np.full(256, IGNORE_LABEL, dtype=np.int64)
            for src, dst in self.label_map.items():
                if not 0 <= int(src) <= 255:
                    raise ValueError(f"label_map key {src} is not an 8-bit label id")
                table[int(src)] = int(dst)
        else:
            table = np.asarray(self.label_map, dtype=np.int64)
            if table.shape != (256,):
                raise ValueError(f"a label_map lookup table needs 256 entries, got shape {table.shape}")
        if table.min() < 0 or table.max() > 255:
            raise ValueError("label_map values must be class ids 0..255")
        if self.num_classes is not None:
            if not 0 < self.num_classes <= IGNORE_LABEL:
                raise ValueError(f"num_classes must be in 1..255, got {self.num_classes}")
            table[table >= self.num_classes] = IGNORE_LABEL
        return table.astype(np.uint8)
