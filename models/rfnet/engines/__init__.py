from .base import EngineError, ModelSpec, SegmentationEngine, SegmentationOutput
from .factory import BACKENDS, EngineConfig, LoadedEngine, load_engine

__all__ = ["BACKENDS", "EngineConfig", "EngineError", "LoadedEngine", "ModelSpec",
           "SegmentationEngine", "SegmentationOutput", "load_engine"]
