from .base import EngineError, ModelSpec, SegmentationEngine, SegmentationOutput
from .calibration import Calibration, load_calibration, save_calibration
from .factory import EngineConfig, LoadedEngine, load_engine
from .registry import AUTO, BACKENDS, CALIBRATED, Backend, backend_named, engine_registry

__all__ = ["AUTO", "BACKENDS", "CALIBRATED", "Backend", "Calibration", "EngineConfig", "EngineError",
           "LoadedEngine", "ModelSpec", "SegmentationEngine", "SegmentationOutput", "backend_named",
           "engine_registry", "load_calibration", "load_engine", "save_calibration"]
