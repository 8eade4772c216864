"""report.json and a self-contained report.html for one evaluation run.

The HTML carries everything inline (CSS, plots and overlays as base64 PNG data URIs), so
it opens from a robot's disk, a CI artifact or an e-mail without any network access.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.image as mpimg
import numpy as np
# Figures are built without pyplot: no global backend or figure state is touched (the
# importing process may use pyplot itself), and PNGs are rendered by Agg, with no display.
from matplotlib.figure import Figure

from durable_files import write_atomic
from segmetrics import latency_percentiles

__all__ = ["write_report", "table_html"]

Series = Mapping[str, Sequence[float]]  # mode or task name -> values

# PNGs would otherwise carry matplotlib's URL in a tEXt chunk.
_PNG_METADATA = {"Software": None}

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f0f0f0; }
td.na { color: #888; background: #eee; }
figure { display: inline-block; margin: 0.5em 1em 0.5em 0; vertical-align: top; }
figcaption { font-size: 0.9em; color: #444; }
img { max-width: 100%; border: 1px solid #ddd; }
"""


def _jsonable(value: Any) -> Any:
    """Plain JSON types, NaN/inf as None (JSON has no NaN; null reads as 'undefined')."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if value is None or isinstance(value, str):
        return value
    raise ValueError(f"report value of type {type(value).__name__} is not JSON-serialisable")


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(_fmt(v) for v in value)
    return str(value)


def _flatten(d: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dicts become dotted keys, so the headline is one flat two-column table."""
    rows: list[tuple[str, Any]] = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        rows.extend(_flatten(v, key + ".") if isinstance(v, dict) else [(key, v)])
    return rows


def _png_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _figure_uri(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata=_PNG_METADATA)
    return _png_uri(buf.getvalue())


def _image_uri(rgb: np.ndarray) -> str:
    buf = io.BytesIO()
    mpimg.imsave(buf, rgb, format="png", metadata=_PNG_METADATA)
    return _png_uri(buf.getvalue())


def _iou_colour(v: float) -> str:
    """Red (0) through yellow to green (1), light enough to read black text on."""
    return f"hsl({120 * min(max(v, 0.0), 1.0):.0f}, 70%, 75%)"


def _mean_iou(a: np.ndarray) -> float:
    """mIoU from per-class IoUs: mean over classes that are not NaN (as ConfusionMatrix.miou)."""
    present = a[~np.isnan(a)]
    return float(present.mean()) if present.size else math.nan


def _miou_plot(per_class_iou: Mapping[str, np.ndarray]) -> str:
    names = list(per_class_iou)
    mious = [_mean_iou(v) for v in per_class_iou.values()]
    fig = Figure(figsize=(max(4.0, 1.1 * len(names) + 1.5), 3.6))
    ax = fig.add_subplot()
    bars = ax.bar(names, [0.0 if math.isnan(m) else m for m in mious], color="#4c72b0")
    ax.bar_label(bars, labels=[_fmt(m) for m in mious], padding=2)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("mIoU")
    ax.set_title("mIoU per mode / task")
    ax.grid(axis="y", alpha=0.3)
    ax.tick_params(axis="x", labelrotation=20 if len(names) > 4 else 0)
    return _figure_uri(fig)


def _latency_plot(latency: Mapping[str, np.ndarray]) -> str:
    """Empirical CDF per mode: shows the whole distribution and the tail the percentiles summarise."""
    fig = Figure(figsize=(6.4, 3.6))
    ax = fig.add_subplot()
    for name, values in latency.items():
        v = np.sort(values)
        ax.step(v, np.arange(1, v.size + 1) / v.size, where="post",
                label=f"{name} (p99 {_fmt(latency_percentiles(v)['p99'])} ms)")
    for q in (0.5, 0.95, 0.99):  # the levels the p50/p95/p99 table reads off
        ax.axhline(q, color="#999", lw=0.7, ls=":")
        ax.annotate(f"p{round(q * 100)}", (1.0, q), xycoords=("axes fraction", "data"),
                    xytext=(3, 0), textcoords="offset points", va="center", fontsize=8, color="#666")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("fraction of frames ≤ x")
    ax.set_ylim(0, 1.02)
    ax.set_title("Latency CDF per mode")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return _figure_uri(fig)


def table_html(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain HTML table; numbers formatted like the headline's, text escaped."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _headline_html(report: Mapping[str, Any]) -> str:
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(_fmt(v))}</td></tr>"
                   for k, v in _flatten(report))
    return f"<table><tr><th>metric</th><th>value</th></tr>{rows}</table>"


def _iou_table_html(class_names: Sequence[str], per_class_iou: Mapping[str, np.ndarray]) -> str:
    cols = list(per_class_iou)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)

    def cell(v: float) -> str:
        if math.isnan(v):
            return '<td class="na">n/a</td>'
        return f'<td style="background:{_iou_colour(v)}">{v:.3f}</td>'

    body = "".join(
        f"<tr><td>{html.escape(name)}</td>{''.join(cell(float(per_class_iou[c][i])) for c in cols)}</tr>"
        for i, name in enumerate(class_names))
    mious = (_mean_iou(per_class_iou[c]) for c in cols)
    miou = "".join(f"<th>{'n/a' if math.isnan(m) else f'{m:.3f}'}</th>" for m in mious)
    return f"<table><tr><th>class</th>{head}</tr>{body}<tr><th>mIoU</th>{miou}</tr></table>"


def _latency_table_html(latency: Mapping[str, np.ndarray]) -> str:
    rows = ""
    for name, values in latency.items():
        p = latency_percentiles(values)
        rows += (f"<tr><td>{html.escape(name)}</td><td>{len(values)}</td>"
                 + "".join(f"<td>{p[k]:.2f}</td>" for k in ("p50", "p95", "p99")) + "</tr>")
    return ("<table><tr><th>mode</th><th>frames</th><th>p50 ms</th><th>p95 ms</th>"
            f"<th>p99 ms</th></tr>{rows}</table>")


def _checked(report: Mapping[str, Any], class_names: Sequence[str], per_class_iou: Series,
             latency: Series, overlays: Sequence[tuple[str, np.ndarray]]
             ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Validate everything before writing anything; per-class IoUs and latencies as float
    arrays (None, as report.json stores NaN, becomes NaN again)."""
    if not class_names:
        raise ValueError("class_names is empty")
    if not isinstance(report, Mapping):
        raise ValueError(f"report must be a dict of metrics, got {type(report).__name__}")
    ious = {str(k): np.asarray(v, dtype=np.float64) for k, v in per_class_iou.items()}
    for key, a in ious.items():
        if a.shape != (len(class_names),):
            raise ValueError(f"per_class_iou[{key!r}] has shape {a.shape}, "
                             f"expected ({len(class_names)},) for the classes")
        if ((a < 0) | (a > 1)).any():  # NaN compares False: absent classes pass
            raise ValueError(f"per_class_iou[{key!r}] has values outside [0, 1]")
    lat = {str(k): np.asarray(v, dtype=np.float64) for k, v in latency.items()}
    for key, a in lat.items():
        try:
            latency_percentiles(a)
        except ValueError as e:
            raise ValueError(f"latency[{key!r}]: {e}") from None
    for title, img in overlays:
        a = np.asarray(img)
        if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3 or a.size == 0:
            raise ValueError(f"overlay {title!r} must be an H x W x 3 uint8 RGB image, "
                             f"got {a.dtype} {a.shape}")
    return ious, lat


def write_report(out_dir: str | Path, report: Mapping[str, Any], class_names: Sequence[str],
                 per_class_iou: Series, latency: Series,
                 overlays: Sequence[tuple[str, np.ndarray]],
                 lead: Sequence[tuple[str, str]] = ()) -> tuple[Path, Path]:
    """Write out_dir/report.json and out_dir/report.html; return their paths.

    report: headline metrics (nested dicts allowed), written to JSON as given, NaN as null.
    per_class_iou: one list of IoUs per mode or task, aligned with class_names (NaN: class
    absent). latency: per-mode latencies in ms. overlays: (title, H x W x 3 uint8 RGB).
    lead: (title, HTML) sections shown first, before the headline metrics (the caller
    escapes their text, e.g. with table_html).
    Everything is validated before anything is written.
    """
    ious, lat = _checked(report, class_names, per_class_iou, latency, overlays)
    plain = _jsonable(report)
    json_text = json.dumps(plain, indent=2, allow_nan=False)

    sections = [f"<h2>{html.escape(title)}</h2>{body}" for title, body in lead]
    sections.append(f"<h2>Headline metrics</h2>{_headline_html(plain)}")
    if ious:
        sections.append("<h2>Per-class IoU</h2>" + _iou_table_html(class_names, ious)
                        + f'<figure><img alt="mIoU per mode/task" src="{_miou_plot(ious)}"></figure>')
    if lat:
        sections.append("<h2>Latency</h2>" + _latency_table_html(lat)
                        + f'<figure><img alt="latency CDF" src="{_latency_plot(lat)}"></figure>')
    if overlays:
        figs = "".join(f'<figure><img alt="{html.escape(t)}" src="{_image_uri(np.asarray(img))}">'
                       f"<figcaption>{html.escape(t)}</figcaption></figure>" for t, img in overlays)
        sections.append(f"<h2>Overlays</h2>{figs}")
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>Segmentation evaluation report</title><style>{_CSS}</style></head>"
            "<body><h1>Segmentation evaluation report</h1>" + "".join(sections) + "</body></html>\n")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, html_path = out / "report.json", out / "report.html"
    # Atomic: a run killed mid-write leaves the previous report, never a truncated one.
    write_atomic(json_path, (json_text + "\n").encode("utf-8"))
    write_atomic(html_path, page.encode("utf-8"))
    return json_path, html_path
