"""TensorRTEngine's own logic, on machines without a GPU.

tensorrt and pycuda are replaced by small fakes with the same API names (checked
against tensorrt 10.16 and pycuda 2026.1). The fake "engine" runs the ONNX file
with onnxruntime, reading and writing fake device memory at the addresses the
engine bound, so the whole data path is exercised: pinned staging, copies,
bindings, output selection. The fakes also enforce the CUDA context discipline:
every GPU call must happen with the engine's context pushed in the calling
thread, and pushes and pops must balance. What this cannot check is the real
TensorRT build and kernels; tests/gpu/test_tensorrt_engine.py does that.
"""
from __future__ import annotations

import enum
import sys
import threading
import time
import types
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
import pytest
import torch

from rfnet.engines import tensorrt_engine as te
from rfnet.engines.base import EngineError, ModelSpec
from rfnet.onnx_export import export_onnx

SPEC = ModelSpec(num_classes=5, input_height=8, input_width=12, use_depth=True)
RGB_SPEC = ModelSpec(num_classes=5, input_height=8, input_width=12, use_depth=False)
MAGIC = b"FAKEPLAN"


class TinyBackbone(torch.nn.Module):
    """Features at 1/4 resolution, like RFNet's decoder output."""

    def __init__(self):
        super().__init__()
        self.rgb = torch.nn.Conv2d(3, 8, 4, stride=4)
        self.depth = torch.nn.Conv2d(1, 8, 4, stride=4)

    def forward(self, rgb, depth=None):
        out = self.rgb(rgb)
        return out if depth is None else out + self.depth(depth.unsqueeze(1))


class TinyNet(torch.nn.Module):
    """Stands in for RFNet with the parts the export uses: `backbone` and the `logits` head."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.backbone = TinyBackbone()
        self.logits = torch.nn.Conv2d(8, num_classes, 1)


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory):
    torch.manual_seed(0)
    net = TinyNet(SPEC.num_classes).eval()
    d = tmp_path_factory.mktemp("onnx")
    return {"rgbd": export_onnx(net, SPEC, d / "rgbd.onnx"),
            "rgb": export_onnx(net, RGB_SPEC, d / "rgb.onnx")}


# --- fakes -------------------------------------------------------------------

class GpuState:
    def __init__(self):
        self.local = threading.local()
        self.memory: dict[int, bytearray] = {}
        self.next_ptr = 0x1000
        self.retained = self.detached = 0
        self.builds = 0
        self.calibration_batches = 0
        self.dtoh: list[int] = []
        self.fail_parse = self.fail_build = self.reject_plans = False

    def stack(self) -> list:
        if not hasattr(self.local, "stack"):
            self.local.stack = []
        return self.local.stack

    def require_context(self):
        assert self.stack(), "CUDA call without a current context in this thread"

    def read(self, ptr, shape, dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        n = int(np.prod(shape)) * dtype.itemsize
        return np.frombuffer(bytes(self.memory[ptr][:n]), dtype).reshape(shape)


def make_cuda(state: GpuState) -> types.ModuleType:
    cuda = types.ModuleType("pycuda.driver")

    class Context:
        def push(self):
            state.stack().append(self)

        @staticmethod
        def pop():
            assert state.stack(), "pop with an empty context stack"
            state.stack().pop()

        def detach(self):
            state.detached += 1

    class Device:
        def __init__(self, ordinal):
            self.ordinal = ordinal

        @staticmethod
        def count():
            return 1

        def name(self):
            return "Fake GPU"

        def compute_capability(self):
            return (8, 7)

        def retain_primary_context(self):
            state.retained += 1
            return Context()

    class DeviceAllocation:
        def __init__(self, nbytes):
            state.require_context()
            self.ptr = state.next_ptr
            state.next_ptr += nbytes + 256
            state.memory[self.ptr] = bytearray(nbytes)

        def __int__(self):
            return self.ptr

        def free(self):
            state.require_context()
            del state.memory[self.ptr]

    class Stream:
        handle = 0xBEEF

        def __init__(self):
            state.require_context()

        def synchronize(self):
            state.require_context()

    def memcpy_htod(dev, host):
        state.require_context()
        data = np.ascontiguousarray(host).tobytes()
        state.memory[int(dev)][:len(data)] = data

    def memcpy_htod_async(dev, host, stream):
        assert isinstance(stream, Stream)
        memcpy_htod(dev, host)

    def memcpy_dtoh_async(host, dev, stream):
        state.require_context()
        assert isinstance(stream, Stream)
        state.dtoh.append(int(dev))
        host[...] = state.read(int(dev), host.shape, host.dtype)

    def pagelocked_empty(shape, dtype):
        state.require_context()
        return np.empty(shape, dtype)

    cuda.init = lambda: None
    cuda.Device, cuda.Context, cuda.Stream = Device, Context, Stream
    cuda.mem_alloc = DeviceAllocation
    cuda.memcpy_htod, cuda.memcpy_htod_async = memcpy_htod, memcpy_htod_async
    cuda.memcpy_dtoh_async = memcpy_dtoh_async
    cuda.pagelocked_empty = pagelocked_empty
    return cuda


def make_trt(state: GpuState) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.16.1.11"

    class Severity(enum.Enum):
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

    class ILogger:
        pass

    ILogger.Severity = Severity
    trt.ILogger = ILogger
    trt.BuilderFlag = enum.Enum("BuilderFlag", "FP16 INT8 TF32")
    trt.MemoryPoolType = enum.Enum("MemoryPoolType", "WORKSPACE")
    trt.TensorIOMode = enum.Enum("TensorIOMode", "NONE INPUT OUTPUT")
    trt.nptype = lambda dtype: np.dtype(dtype).type

    class IInt8EntropyCalibrator2:
        pass

    trt.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2

    class Tensor:
        def __init__(self, arg):
            self.name = arg.name
            self.shape = tuple(arg.shape)

    class Network:
        def __init__(self):
            self.inputs, self.outputs, self.onnx = [], [], None

        num_inputs = property(lambda self: len(self.inputs))
        num_outputs = property(lambda self: len(self.outputs))
        get_input = lambda self, i: self.inputs[i]  # noqa: E731
        get_output = lambda self, i: self.outputs[i]  # noqa: E731

    class OnnxParser:
        def __init__(self, network, logger):
            self.network = network

        def parse_from_file(self, path):
            if state.fail_parse:
                return False
            data = open(path, "rb").read()
            session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
            self.network.inputs = [Tensor(a) for a in session.get_inputs()]
            self.network.outputs = [Tensor(a) for a in session.get_outputs()]
            self.network.onnx = data
            return True

        num_errors = property(lambda self: 1 if state.fail_parse else 0)

        def get_error(self, i):
            return "In node 3 (Foo): UNSUPPORTED_NODE: no importer for op Foo"

    class Config:
        def __init__(self):
            self.flags = {trt.BuilderFlag.TF32}
            self.int8_calibrator = None
            self.pools = {}

        def set_flag(self, flag):
            self.flags.add(flag)

        def clear_flag(self, flag):
            self.flags.discard(flag)

        def set_memory_pool_limit(self, pool, size):
            self.pools[pool] = size

    class Builder:
        def __init__(self, logger):
            self.logger = logger

        def create_network(self, flags):
            assert flags == 0
            return Network()

        def create_builder_config(self):
            return Config()

        def build_serialized_network(self, network, config):
            state.require_context()
            state.builds += 1
            state.last_config = config
            if state.fail_build:
                self.logger.log(Severity.ERROR, "Out of device memory while building")
                return None
            if trt.BuilderFlag.INT8 in config.flags:
                self._calibrate(network, config.int8_calibrator)
            return MAGIC + network.onnx

        @staticmethod
        def _calibrate(network, calibrator):
            assert calibrator.get_batch_size() == 1
            if calibrator.read_calibration_cache() is not None:
                return
            names = [t.name for t in network.inputs]
            while ptrs := calibrator.get_batch(names):
                for t, ptr in zip(network.inputs, ptrs):
                    assert np.isfinite(state.read(ptr, t.shape, np.float32)).all()
                state.calibration_batches += 1
            calibrator.write_calibration_cache(memoryview(b"calibration table"))

    class Engine:
        def __init__(self, onnx):
            self.session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
            self.io = {a.name: (trt.TensorIOMode.INPUT, a) for a in self.session.get_inputs()}
            self.io.update({a.name: (trt.TensorIOMode.OUTPUT, a)
                            for a in self.session.get_outputs()})

        num_io_tensors = property(lambda self: len(self.io))
        get_tensor_name = lambda self, i: list(self.io)[i]  # noqa: E731
        get_tensor_mode = lambda self, name: self.io[name][0]  # noqa: E731
        get_tensor_shape = lambda self, name: tuple(self.io[name][1].shape)  # noqa: E731

        def get_tensor_dtype(self, name):
            return {"tensor(float)": "float32", "tensor(int32)": "int32"}[self.io[name][1].type]

        def create_execution_context(self):
            state.require_context()
            return ExecutionContext(self)

    class ExecutionContext:
        def __init__(self, engine):
            self.engine, self.addresses = engine, {}

        def set_tensor_address(self, name, ptr):
            self.addresses[name] = ptr
            return True

        def execute_async_v3(self, stream_handle):
            state.require_context()
            assert stream_handle == 0xBEEF
            e = self.engine
            feeds = {a.name: state.read(self.addresses[a.name], a.shape, np.float32)
                     for a in e.session.get_inputs()}
            for arg, value in zip(e.session.get_outputs(), e.session.run(None, feeds)):
                data = np.ascontiguousarray(value).tobytes()
                state.memory[self.addresses[arg.name]][:len(data)] = data
            return True

    class Runtime:
        def __init__(self, logger):
            self.logger = logger

        def deserialize_cuda_engine(self, blob):
            state.require_context()
            blob = bytes(blob)
            if state.reject_plans or not blob.startswith(MAGIC):
                self.logger.log(Severity.ERROR, "Serialization assertion failed")
                return None
            return Engine(blob[len(MAGIC):])

    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, OnnxParser, Runtime
    return trt


@pytest.fixture
def gpu(monkeypatch):
    state = GpuState()
    cuda = make_cuda(state)
    pycuda = types.ModuleType("pycuda")
    pycuda.driver = cuda
    monkeypatch.setitem(sys.modules, "pycuda", pycuda)
    monkeypatch.setitem(sys.modules, "pycuda.driver", cuda)
    monkeypatch.setitem(sys.modules, "tensorrt", make_trt(state))
    monkeypatch.setattr(te, "_trt_logger", None)  # the shared logger belongs to one trt module
    yield state
    assert state.stack() == [], "context left pushed"


def frame(spec: ModelSpec, seed: int = 0):
    rng = np.random.default_rng(seed)
    h, w = spec.input_hw
    rgb = rng.standard_normal((1, 3, h, w)).astype(np.float32)
    depth = rng.standard_normal((1, h, w)).astype(np.float32) if spec.use_depth else None
    return rgb, depth


def reference(onnx_path, rgb, depth):
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    feeds = {"rgb": rgb} if depth is None else {"rgb": rgb, "depth": depth}
    return dict(zip(["labels", "confidence", "logits", "logits_lowres"], session.run(None, feeds)))


# --- tests -------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["rgbd", "rgb"])
def test_outputs_travel_through_the_bound_buffers(gpu, onnx_files, tmp_path, mode):
    spec = SPEC if mode == "rgbd" else RGB_SPEC
    with te.TensorRTEngine(onnx_files[mode], spec, cache_dir=tmp_path) as engine:
        for seed in range(2):  # the second frame must not see the first one's data
            rgb, depth = frame(spec, seed)
            out = engine.infer(rgb, depth, return_logits=True)
            ref = reference(onnx_files[mode], rgb, depth)
            assert out.labels.dtype == np.uint8 and out.labels.shape == spec.input_hw
            np.testing.assert_array_equal(out.labels, ref["labels"][0])
            np.testing.assert_array_equal(out.confidence, ref["confidence"][0])
            np.testing.assert_array_equal(out.logits, ref["logits"][0])
            np.testing.assert_array_equal(out.logits_lowres, ref["logits_lowres"][0])
    assert gpu.memory == {}, "device buffers leaked"
    assert gpu.retained == gpu.detached == 1


def test_logits_are_not_copied_back_unless_asked(gpu, onnx_files, tmp_path):
    with te.TensorRTEngine(onnx_files["rgbd"], SPEC, cache_dir=tmp_path) as engine:
        logits_ptr = int(engine._buffers["logits"].device)
        gpu.dtoh.clear()
        out = engine.infer(*frame(SPEC))
        assert out.logits is None
        assert logits_ptr not in gpu.dtoh and len(gpu.dtoh) == 3  # labels, confidence, logits_lowres
        assert out.logits_lowres.shape == (SPEC.num_classes, *SPEC.lowres_hw)
        first = out.labels.copy()
        engine.infer(*frame(SPEC, seed=1))
        np.testing.assert_array_equal(out.labels, first)  # results do not alias pinned buffers


def test_second_construction_loads_from_cache(gpu, onnx_files, tmp_path):
    with te.TensorRTEngine(onnx_files["rgbd"], SPEC, cache_dir=tmp_path) as first:
        assert not first.built_from_cache
        assert first.engine_path.is_file()
    with te.TensorRTEngine(onnx_files["rgbd"], SPEC, cache_dir=tmp_path) as second:
        assert second.built_from_cache
        assert second.engine_path == first.engine_path
    assert gpu.builds == 1
    with te.TensorRTEngine(onnx_files["rgbd"], SPEC, cache_dir=tmp_path, precision="fp32") as e:
        assert not e.built_from_cache  # another precision is another engine
    assert gpu.builds == 2


def test_precision_flags(gpu, onnx_files, tmp_path):
    trt = sys.modules["tensorrt"]
    te.TensorRTEngine(onnx_files["rgbd"], SPEC, cache_dir=tmp_path, precision="fp32",
                      workspace_mb=64).close()
    assert gpu.last_config.flags == set()  # TF32 cleared: fp32 means fp32
    assert gpu.last_config.pools == {trt.MemoryPoolType.WORKSPACE: 64 << 20}
    te.TensorRTEngine(onnx_files["rgbd"], SPEC, cache_dir=tmp_path, precision="fp16").close()
    assert gpu.last_config.flags == {trt.BuilderFlag.TF32, trt.BuilderFlag.FP16}


def test_undeserializable_cache_entry_is_rebuilt(gpu, onnx_files, tmp_path):
    te.TensorRTEngine(onnx_files["rgbd"], SPEC, cache_dir=tmp_path).close()
    engine_path = next(tmp_path.glob("*.engine"))
    key_files = sorted(p.name for p in tmp_path.iterdir())
    # A plan from another TensorRT build: intact on disk, refused by the runtime.
    gpu.reject_plans = True
    with pytest.raises(EngineError, match="freshly built engine did not deserialize"):
        te.TensorRTEngine(onnx_files["rgbd"], SPEC, cache_dir=tmp_path)
    assert gpu.builds == 2 and not engine_path.exists()
    gpu.reject_plans = False
    with te.TensorRTEngine(onnx_files["rgbd"], SPEC, cache_dir=tmp_path) as engine:
        assert not engine.built_from_cache
    assert sorted(p.name for p in tmp_path.iterdir()) == key_files


def test_int8_calibrates_once_and_keys_on_the_data(gpu, onnx_files, tmp_path):
    batches = [frame(SPEC, seed) for seed in range(3)]
    with te.TensorRTEngine(onnx_files["rgbd"], SPEC, cache_dir=tmp_path, precision="int8",
                           calibration_inputs=iter(batches)) as engine:
        out = engine.infer(*frame(SPEC, 9))
        assert np.isfinite(out.confidence).all()
        calib = engine.engine_path.with_suffix(".calib")
    trt = sys.modules["tensorrt"]
    assert {trt.BuilderFlag.INT8, trt.BuilderFlag.FP16} <= gpu.last_config.flags
    assert gpu.calibration_batches == 3
    assert calib.read_bytes() == b"calibration table"
    assert gpu.memory == {}, "calibration buffers leaked"

    # Engine gone, table kept: rebuild without running calibration again.
    engine.engine_path.unlink()
    te.TensorRTEngine(onnx_files["rgbd"], SPEC, cache_dir=tmp_path, precision="int8",
                      calibration_inputs=batches).close()
    assert gpu.builds == 2 and gpu.calibration_batches == 3

    # Other calibration data: another engine.
    with te.TensorRTEngine(onnx_files["rgbd"], SPEC, cache_dir=tmp_path, precision="int8",
                           calibration_inputs=batches[:2]) as other:
        assert not other.built_from_cache and other.engine_path != engine.engine_path


def test_infer_and_close_from_a_worker_thread(gpu, onnx_files, tmp_path):
    engine = te.TensorRTEngine(onnx_files["rgbd"], SPEC, cache_dir=tmp_path)
    rgb, depth = frame(SPEC)
    expected = reference(onnx_files["rgbd"], rgb, depth)["labels"][0]

    def work():
        out = engine.infer(rgb, depth)
        assert gpu.stack() == [], "context left pushed in the worker"
        return out

    with ThreadPoolExecutor(1) as pool:
        outs = [pool.submit(work).result() for _ in range(3)]
        pool.submit(engine.close).result()
    for out in outs:
        np.testing.assert_array_equal(out.labels, expected)
    assert gpu.memory == {}
    with pytest.raises(EngineError, match="closed"):
        engine.infer(rgb, depth)
    engine.close()  # idempotent


def test_parse_errors_are_reported(gpu, onnx_files, tmp_path):
    gpu.fail_parse = True
    with pytest.raises(EngineError, match="could not parse .*no importer for op Foo"):
        te.TensorRTEngine(onnx_files["rgbd"], SPEC, cache_dir=tmp_path)
    assert gpu.detached == gpu.retained == 1


def test_build_failure_is_reported(gpu, onnx_files, tmp_path):
    gpu.fail_build = True
    with pytest.raises(EngineError, match="failed: Out of device memory while building"):
        te.TensorRTEngine(onnx_files["rgbd"], SPEC, cache_dir=tmp_path)
    assert not list(tmp_path.glob("*.engine"))


def test_spec_mismatch_is_caught_before_building(gpu, onnx_files, tmp_path):
    for spec in (RGB_SPEC, ModelSpec(5, 16, 12), ModelSpec(7, 8, 12)):
        with pytest.raises(EngineError, match="Export the model again"):
            te.TensorRTEngine(onnx_files["rgbd"], spec, cache_dir=tmp_path)
    assert gpu.builds == 0


def test_argument_errors(gpu, onnx_files, tmp_path):
    with pytest.raises(EngineError, match="precision"):
        te.TensorRTEngine(onnx_files["rgbd"], SPEC, cache_dir=tmp_path, precision="bf16")
    with pytest.raises(EngineError, match="int8 needs calibration_inputs"):
        te.TensorRTEngine(onnx_files["rgbd"], SPEC, cache_dir=tmp_path, precision="int8")
    with pytest.raises(EngineError, match="empty"):
        te.TensorRTEngine(onnx_files["rgbd"], SPEC, cache_dir=tmp_path, precision="int8",
                          calibration_inputs=[])
    with pytest.raises(EngineError, match="calibration batch 1: .*depth"):
        te.TensorRTEngine(onnx_files["rgbd"], SPEC, cache_dir=tmp_path, precision="int8",
                          calibration_inputs=[frame(SPEC), (frame(SPEC)[0], None)])
    with pytest.raises(EngineError, match="not found"):
        te.TensorRTEngine(tmp_path / "missing.onnx", SPEC, cache_dir=tmp_path)
    with pytest.raises(EngineError, match="device 3 requested, 1 present"):
        te.TensorRTEngine(onnx_files["rgbd"], SPEC, cache_dir=tmp_path, device=3)
    with te.TensorRTEngine(onnx_files["rgbd"], SPEC, cache_dir=tmp_path) as engine:
        with pytest.raises(EngineError, match="built for RGB-D"):
            engine.infer(frame(SPEC)[0], None)


def test_missing_gpu_stack_is_explained(monkeypatch, onnx_files, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` fail
    with pytest.raises(EngineError, match="needs an NVIDIA GPU with tensorrt and pycuda; "
                                          "install requirements-gpu.txt or use backend onnxruntime"):
        te.TensorRTEngine(onnx_files["rgbd"], SPEC, cache_dir=tmp_path)


# --- int8 from the node: calibration frames reach the engine build ---------------

def test_load_engine_passes_calibration_frames_to_tensorrt(gpu, onnx_files, tmp_path):
    from rfnet.engines import Calibration, EngineConfig, load_engine, save_calibration
    calibration = Calibration(tuple(frame(SPEC, seed) for seed in range(4)), "test frames")
    loaded = load_engine(EngineConfig(str(onnx_files["rgbd"]), SPEC, "tensorrt", str(tmp_path), precision="int8",
                                      calibration=calibration))
    assert loaded.precision == "int8" and gpu.calibration_batches == 4
    loaded.engine.close()
    # Without frames given, the set stored for this input spec is used: the same engine, from the cache.
    save_calibration(tmp_path, SPEC, calibration)
    again = load_engine(EngineConfig(str(onnx_files["rgbd"]), SPEC, "tensorrt", str(tmp_path), precision="int8"))
    assert again.engine.built_from_cache and gpu.builds == 1
    again.engine.close()
    with pytest.raises(EngineError, match="tensorrt int8 needs calibration frames"):
        load_engine(EngineConfig(str(onnx_files["rgb"]), RGB_SPEC, "tensorrt", str(tmp_path), precision="int8"))
    with pytest.raises(EngineError, match="precision='bf16' is not available with backend tensorrt"):
        load_engine(EngineConfig(str(onnx_files["rgbd"]), SPEC, "tensorrt", str(tmp_path), precision="bf16"))


def test_the_node_runtime_calibrates_tensorrt_int8_on_camera_frames(gpu, tmp_path):
    """EdgeRuntime with backend tensorrt, precision int8: it serves fp16, gathers frames, and the
    int8 build gets them (the fake builder counts the batches it calibrates on)."""
    from seg_edge_node.config import EdgeNodeConfig
    from seg_edge_node.int8_calibration import Int8Config
    from seg_edge_node.runtime import EdgeRuntime

    spec = ModelSpec(num_classes=5, input_height=32, input_width=64, use_depth=True)
    torch.manual_seed(0)
    onnx_path = export_onnx(TinyNet(5).eval(), spec, tmp_path / "tiny.onnx")
    classes = tmp_path / "classes.yaml"
    classes.write_text("classes:\n" + "".join(f"  - {{id: {i}, name: c{i}, color: [{i}, 0, 0]}}\n"
                                              for i in range(5)))
    cfg = EdgeNodeConfig(model_path=str(onnx_path), backend="tensorrt", precision="int8", class_file=str(classes),
                         input_height=32, input_width=64, cache_dir=str(tmp_path / "cache"),
                         int8=Int8Config(calibration_frames=3, sample_every=1, min_agreement=0.0))
    runtime = EdgeRuntime(cfg)
    assert runtime.precision == "fp16" and gpu.builds == 1
    rng = np.random.default_rng(0)
    for i in range(3):
        rgb = rng.integers(0, 256, (64, 128, 3), dtype=np.uint8)
        assert runtime.process(rgb, rng.uniform(0.5, 5, (64, 128)).astype(np.float32), i, "f") is not None
    deadline = time.monotonic() + 30
    while runtime.precision != "int8" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert runtime.precision == "int8", runtime.health().message
    assert gpu.builds == 2 and gpu.calibration_batches == 3
    trt = sys.modules["tensorrt"]
    assert trt.BuilderFlag.INT8 in gpu.last_config.flags
    runtime.stop()
    runtime.pipeline.engine.close()
