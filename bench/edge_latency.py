#!/usr/bin/env python3
"""Edge latency benchmark: engines side by side, then the node as a real process.

1. Engines: torch eager fp32, ONNX Runtime fp32 and ONNX Runtime INT8 (static
   QDQ quantization, calibrated on other synthetic frames than the timed one), and
   TensorRT fp16 and int8 with --backend tensorrt, on the same preprocessed RGB-D
   frame, interleaved run by run so machine noise hits them alike; medians reported.
1b. With --miou: the mIoU of ONNX Runtime INT8 against fp32 on the main job's generated
   daylight_campus test bag, with the main job's base model (runs/cache, made by
   seg_eval if missing: about 5 minutes), at the model's own input size. INT8 is
   calibrated on the daylight_campus val split, never on test frames.
2. Node, paced: a synthetic camera publishes slower than the engine runs, so
   no frame waits; node_paced_ms is camera stamp -> labels received by a
   subscriber in another process. overhead_pct = node_paced_ms_p50 against
   the engine time the node itself reports for the same frames.
3. Node, flooded: the camera publishes at 30 Hz while the engine is slower;
   with keep-latest the latency stays bounded (node_ms_p99 vs node_ms_p50).

Weights are random (speed does not depend on them) unless --checkpoint is given.

  .venv/bin/python bench/edge_latency.py --json [--height 480 --width 640] [--miou]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "ros2_ws" / "src" / "seg_edge_node"))

from rfnet.checkpoint import save_checkpoint  # noqa: E402
from rfnet.engines import BACKENDS, Calibration, EngineConfig, ModelSpec, load_engine  # noqa: E402
from rfnet.network import RFNet  # noqa: E402
from rfnet.preprocessing import PreprocessConfig, preprocess_depth, preprocess_rgb  # noqa: E402
from seg_harness.processes import Proc, node_command, python_module, ros_env, wait_serving  # noqa: E402
from seg_harness.synthetic_camera import synthetic_frame  # noqa: E402

NODE_EXE = ROOT / ".venv" / "lib" / "seg_edge_node" / "seg_edge_node"
PARAMS_FILE = ROOT / "launch" / "edge_params.yaml"
DDS_PROFILE = ROOT / "launch" / "fastdds_profile.xml"


def log(msg: str) -> None:
    print(f"[edge_latency] {msg}", file=sys.stderr, flush=True)


def bench_engines(checkpoint: Path, spec: ModelSpec, cache: Path, backends: list[str], device: str,
                  torch_device: str, runs: int) -> dict[str, float]:
    """Median ms per engine; names are backend[/precision] (e.g. onnxruntime/int8)."""
    cfg = PreprocessConfig(spec.input_height, spec.input_width)

    def inputs(seed):
        rgb, depth = synthetic_frame(seed, spec.input_height, spec.input_width)
        return preprocess_rgb(rgb, cfg), preprocess_depth(depth, cfg)[0]

    calibration = Calibration(tuple(inputs(seed) for seed in range(101, 109)), "8 synthetic frames")
    engines = {}
    for name in backends:
        backend, _, precision = name.partition("/")
        engines[name] = load_engine(EngineConfig(
            str(checkpoint), spec, backend, str(cache), device=torch_device if backend == "torch" else device,
            precision=precision or "auto", calibration=calibration if precision == "int8" else None)).engine
    x, d = inputs(1)
    times: dict[str, list[float]] = {b: [] for b in backends}
    for i in range(runs + 2):
        for b, engine in engines.items():
            t = time.perf_counter()
            engine.infer(x, d)
            if i >= 2:  # first runs warm caches and allocators
                times[b].append((time.perf_counter() - t) * 1e3)
    for e in engines.values():
        e.close()
    return {b: float(np.median(v)) for b, v in times.items()}


def int8_miou_drop(threads: int) -> dict:
    """mIoU of ORT fp32 and INT8 on the main job's daylight_campus test bag, base model, model input size."""
    from rfnet.classes import load_class_list
    from seg_edge_node.bag_io import from_cdr, message_class, open_reader
    from seg_edge_node.image_conversion import image_to_depth_m, image_to_rgb
    from seg_edge_node.int8_calibration import Int8Config, calibration_from_index
    from seg_edge_node.pipeline import SegmentationPipeline
    from seg_eval.base_model import ensure_base_model
    from seg_eval.job_config import PRESETS
    from seg_eval.job_data import prepare_data
    from segmetrics import ConfusionMatrix

    job = PRESETS["full"]
    cache = ROOT / "runs" / "cache"
    data = prepare_data(job, cache, log)
    model = ensure_base_model(job, data, cache, log, progress=False)
    classes = load_class_list()
    spec = ModelSpec(classes.num_classes, job.base.input_height, job.base.input_width, use_depth=True)
    pre = PreprocessConfig(spec.input_height, spec.input_width)
    int8 = Int8Config(calibration_frames=32)
    calibration = calibration_from_index(data.old_val, int8, pre, use_depth=True)
    pipelines = {}
    for precision in ("fp32", "int8"):
        engine = load_engine(EngineConfig(str(model), spec, "onnxruntime", str(cache / "edge_latency"), "cpu", threads,
                                          precision, calibration if precision == "int8" else None)).engine
        pipelines[precision] = SegmentationPipeline(engine, pre)
    frames: dict[int, dict] = {}
    with open_reader(data.old_test_bag) as reader:
        for connection, _, raw in reader.messages():
            msg = from_cdr(raw, message_class(connection.msgtype))
            stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            frames.setdefault(stamp, {})[connection.topic] = msg
    matrices = {p: ConfusionMatrix(classes.num_classes) for p in pipelines}
    agree = []
    for parts in frames.values():
        rgb = image_to_rgb(parts["/camera/color/image_raw"])
        depth = image_to_depth_m(parts["/camera/aligned_depth_to_color/image_raw"])
        truth = image_to_rgb(parts["/ground_truth/labels"])[..., 0]
        labels = {p: pipe.run(rgb, depth).labels for p, pipe in pipelines.items()}
        for p, lab in labels.items():
            matrices[p].update(lab, truth)
        agree.append(float((labels["fp32"] == labels["int8"]).mean()))
    miou = {p: m.miou() for p, m in matrices.items()}
    return {"miou_model": str(model.relative_to(ROOT)), "miou_bag": str(data.old_test_bag.relative_to(ROOT)),
            "miou_frames": len(frames), "miou_input": f"{spec.input_height}x{spec.input_width}",
            "int8_calibration": f"{len(calibration)} frames of {data.old_val.relative_to(ROOT)}",
            "ort_fp32_miou": round(100 * miou["fp32"], 2), "ort_int8_miou": round(100 * miou["int8"], 2),
            "int8_miou_drop": round(100 * (miou["fp32"] - miou["int8"]), 2),
            "int8_label_agreement": round(float(np.mean(agree)), 4)}


def run_node_phase(tmp: Path, checkpoint: Path, spec: ModelSpec, backend: str, device: str,
                   rate: float, seconds: float, name: str) -> dict:
    env = ros_env(tmp / f"ros_{name}", str(DDS_PROFILE))
    node = Proc(f"node_{name}", node_command(NODE_EXE, PARAMS_FILE, {
        "model_path": checkpoint, "backend": backend, "device": device, "cache_dir": tmp / "cache",
        "input_height": spec.input_height, "input_width": spec.input_width}), env, tmp)
    try:
        wait_serving(node)
        count = int(rate * seconds)
        recorder = Proc(f"recorder_{name}", python_module(
            "seg_harness.result_recorder", "--out", tmp / name, "--no-labels",
            "--duration", seconds + 20), env, tmp)
        camera = Proc(f"camera_{name}", python_module(
            "seg_harness.synthetic_camera", "--width", spec.input_width, "--height", spec.input_height,
            "--rate", rate, "--count", count, "--distinct", 8), env, tmp)
        camera.wait(seconds + 60)
        time.sleep(1.5)      # last frames and one more diagnostics message
        recorder.stop()
        rec = np.load(tmp / f"{name}.npz")
        lat = (rec["received_ns"] - rec["stamps_ns"]) / 1e6
        lat = lat[min(3, len(lat) // 4):]   # drop the first frames (engine warm-up)
        summary = json.loads((tmp / f"{name}.json").read_text())
        diag = summary["diagnostics"]
        return {"sent": count, "received": len(rec["stamps_ns"]),
                "ms_p50": float(np.percentile(lat, 50)), "ms_p99": float(np.percentile(lat, 99)),
                "fps": summary["rate_hz"], "engine_ms_p50": float(diag.get("engine_ms_p50", "nan")),
                "skipped_stale": int(diag.get("frames_skipped_stale", 0))}
    finally:
        node.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print one JSON line on stdout")
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--backend", default="onnxruntime", choices=list(BACKENDS))
    ap.add_argument("--device", default="auto", help="onnxruntime/tensorrt device; torch runs on cuda when the "
                                                      "backend is tensorrt, else cpu")
    ap.add_argument("--checkpoint", type=Path, help="RFNet .pth (default: random weights)")
    ap.add_argument("--runs", type=int, default=15, help="timed engine runs per backend")
    ap.add_argument("--seconds", type=float, default=12.0, help="length of each node phase")
    ap.add_argument("--flood-hz", type=float, default=30.0)
    ap.add_argument("--threads", type=int, default=0, help="onnxruntime threads for --miou (0: library default)")
    ap.add_argument("--miou", action="store_true", help="also the INT8 mIoU drop on the main job's test bag")
    ap.add_argument("--engines-only", action="store_true", help="skip the node phases")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="edge_latency_"))
    try:
        checkpoint = args.checkpoint
        if checkpoint is None:
            torch.manual_seed(0)
            checkpoint = save_checkpoint(RFNet(), tmp / "random_rfnet.pth")
        spec = ModelSpec(30, args.height, args.width, use_depth=True)
        backends = ["torch", "onnxruntime", "onnxruntime/int8"] + (
            ["tensorrt", "tensorrt/int8"] if args.backend == "tensorrt" else [])
        log(f"engines {backends} at {args.height}x{args.width}, {args.runs} interleaved runs each")
        torch_device = "cuda" if args.backend == "tensorrt" else "cpu"
        medians = bench_engines(checkpoint, spec, tmp / "cache", backends, args.device, torch_device, args.runs)
        engine_ms = medians[args.backend]
        log(f"engine medians (ms): {medians}")

        result = {
            "resolution": f"{args.height}x{args.width}",
            "backend": args.backend,
            "engine_ms_p50": round(engine_ms, 2),
            "torch_ms_p50": round(medians["torch"], 2),
            "ort_ms_p50": round(medians["onnxruntime"], 2),
            "ort_int8_ms_p50": round(medians["onnxruntime/int8"], 2),
            **({"trt_ms_p50": round(medians["tensorrt"], 2), "trt_int8_ms_p50": round(medians["tensorrt/int8"], 2)}
               if "tensorrt" in medians else {}),
            "ort_speedup_vs_torch": round(medians["torch"] / medians["onnxruntime"], 2),
            "ort_int8_speedup_vs_torch": round(medians["torch"] / medians["onnxruntime/int8"], 2),
            "ort_int8_speedup_vs_ort": round(medians["onnxruntime"] / medians["onnxruntime/int8"], 2),
        }
        if args.miou:
            log("INT8 mIoU drop on the main job's daylight_campus test bag")
            result.update(int8_miou_drop(args.threads))
        if not args.engines_only:
            paced_hz = min(args.flood_hz, 0.5 * 1000.0 / engine_ms)
            log(f"node paced at {paced_hz:.2f} Hz for {args.seconds}s")
            paced = run_node_phase(tmp, checkpoint, spec, args.backend, args.device, paced_hz, args.seconds, "paced")
            log(f"paced: {paced}")
            log(f"node flooded at {args.flood_hz} Hz for {args.seconds}s")
            flood = run_node_phase(tmp, checkpoint, spec, args.backend, args.device, args.flood_hz, args.seconds,
                                   "flood")
            log(f"flood: {flood}")
            result.update({
                "node_paced_ms_p50": round(paced["ms_p50"], 2),
                "node_engine_ms_p50": round(paced["engine_ms_p50"], 2),
                "overhead_pct": round(100.0 * (paced["ms_p50"] - paced["engine_ms_p50"]) / paced["engine_ms_p50"], 1),
                "camera_hz": args.flood_hz,
                "node_ms_p50": round(flood["ms_p50"], 2),
                "node_ms_p99": round(flood["ms_p99"], 2),
                "p99_over_p50": round(flood["ms_p99"] / flood["ms_p50"], 2),
                "fps": round(flood["fps"], 2),
                "frames_sent": flood["sent"],
                "frames_segmented": flood["received"],
                "frames_skipped_stale": flood["skipped_stale"],
            })
        result["weights"] = "random" if args.checkpoint is None else str(args.checkpoint)
        print(json.dumps(result) if args.json else json.dumps(result, indent=1))
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
