"""INT8 export: the float32 served graph with its convolutional part quantised, as one QDQ graph for onnxruntime on
a CPU and for TensorRT's explicit quantisation on a GPU.

What is quantised is the frame encoder's and the temporal CNN's arithmetic: every convolution's input and weights,
the skip operand of each residual addition, pooling, and the Flatten after the small CNN's last ReLU. A
convolution's or an addition's output is not quantised itself: it is quantised after the ReLU that follows, where
the next quantised operator reads it, and a residual addition reads its convolution branch unquantised. That is
the placement TensorRT's guide asks for: it then fuses Conv + ReLU, and Conv + Add + ReLU, into INT8 kernels
(`qdq_layout.place_for_tensorrt`). onnxruntime, given the graph as `qdq_layout` gives it (the convolution branch's
pair put back in memory at the scale calibrated for it, kept in the file's metadata), runs the whole frame encoder
in INT8. Weights are int8, symmetric, one scale per output channel; activations int8, symmetric, one scale per
tensor; every zero point is 0, which is what TensorRT requires of a QDQ graph. The BiLSTM, the classifiers, the
length arithmetic and the input's uint8 -> float Cast stay float32.

Activation scales come from calibration: the float32 graph runs on clips of the training split, and a
calibration method (MinMax, Entropy or Percentile, onnxruntime's) turns the ranges it saw into scales. The method
and the clips used are recorded in the graph's metadata.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from qslr.deploy import tensor_names as names
from qslr.deploy.export.int8_choices import CALIBRATION_METHODS, DEFAULT_METHOD
from qslr.deploy.export.onnx_export import ExportInfo, export_onnx, graph_metadata, onnx_session, read_metadata
from qslr.deploy.export.qdq_layout import ONNXRUNTIME_SCALES, place_for_tensorrt
from qslr.deploy.served import Checkpoint, served_from_checkpoint
from qslr.deploy.served_limits import ServedLimits, pad_to_minimum
from qslr.deploy.served_video import DecodedClip, clip_decoder
from qslr.pipelines.atomic_output import atomic_path
from qslr.pipelines.prepared import PreparedDataset

log = logging.getLogger(__name__)

_POOLS = ("MaxPool", "AveragePool", "GlobalAveragePool")
QUANTISED_OPS = ("Conv", *_POOLS, "Add", "Flatten")  # Add and Flatten: only some, see `quantised_nodes`
# Quantised where the ReLU after them is (the next quantised operator's input), not at their own output; a Flatten
# only reshapes, and what reads it (the small CNN's Linear) is float. (A residual addition's operands are
# quantised by the addition, the convolution branch's pair then taken off again: `place_for_tensorrt`.)
UNQUANTISED_OUTPUTS = ("Conv", "Add", "Flatten")
# What a residual addition's operands are made by; the classifier's bias Add and the length arithmetic differ.
_ACTIVATION_MAKERS = frozenset({"Conv", "Relu", "Add", *_POOLS})
CALIBRATION_WINDOW = 32  # frames a calibration run sees
VIDEO_SUFFIXES = (".webm", ".mkv", ".mp4", ".avi", ".mov")


class CalibrationError(ValueError):
    """No usable calibration clips."""


@dataclass(frozen=True)
class CalibrationClip:
    name: str
    frames: np.ndarray  # uint8 (T, H, W, 3) at the graph's frame size


def calibration_videos(source: str | Path, count: int) -> list[Path]:
    """The first ``count`` videos of a prepared dataset's training split, or of a folder of video files."""
    source = Path(source)
    if (source / "vocab.json").is_file():
        dataset = PreparedDataset(source)
        videos = [dataset.video_path(r) for r in dataset.records("train")[:count]]
    elif source.is_dir():
        videos = sorted(p for p in source.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)[:count]
    else:
        raise CalibrationError(f"{source}: neither a prepared dataset nor a folder of videos")
    if not videos:
        raise CalibrationError(f"{source}: holds no videos to calibrate with")
    return videos


def calibration_clips(videos: Sequence[Path], height: int, width: int,
                      limits: ServedLimits | None = None) -> list[CalibrationClip]:
    """The clips as the served model receives them (decoded and resized as `preprocess` does, within the
    served limits); a video that cannot be read is skipped with a warning."""
    limits = limits or ServedLimits()
    decoder = clip_decoder("pyav", height, width, limits)
    clips = []
    for video, clip in zip(videos, decoder.decode(list(videos)), strict=True):
        if isinstance(clip, DecodedClip):
            clips.append(CalibrationClip(Path(video).name, pad_to_minimum(clip.frames, limits.min_frames)))
        else:
            log.warning("calibration: skipped %s (%s)", video, clip)
    if not clips:
        raise CalibrationError(f"none of the {len(videos)} calibration videos could be read")
    return clips


def calibration_set(source: str | Path, count: int, height: int, width: int) -> list[CalibrationClip]:
    """`calibration_clips` of `calibration_videos`: what every INT8 export calibrates on."""
    return calibration_clips(calibration_videos(source, count), height, width)


class _ClipReader:
    """onnxruntime's CalibrationDataReader protocol: the clips cut into windows of one length, one window a run
    (a run's cost is then bounded, and the convolutions' ranges do not depend on how long a clip is). It also
    serves a range of runs at a time (`set_range`), for onnxruntime's strided calibration (see
    `quantise_convolutions`)."""

    def __init__(self, clips: Sequence[CalibrationClip], window: int = CALIBRATION_WINDOW):
        self._runs = [{names.FRAMES: frames[None], names.LENGTHS: np.array([window], dtype=np.int64)}
                      for clip in clips for frames in _windows(clip.frames, window)]
        self._feeds: Iterator[dict[str, np.ndarray]] = iter(self._runs)

    def __len__(self) -> int:
        return len(self._runs)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._feeds = iter(self._runs[start_index:end_index])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def _windows(frames: np.ndarray, window: int) -> list[np.ndarray]:
    """Consecutive windows of ``window`` frames; a clip shorter than one is padded as the server pads it."""
    if len(frames) < window:
        return [pad_to_minimum(frames, window)]
    return [frames[start:start + window] for start in range(0, len(frames) - window + 1, window)]


def quantise_graph(fp32_graph: str | Path, out: str | Path, clips: Sequence[CalibrationClip],
                   method: str = DEFAULT_METHOD) -> None:
    """Write ``fp32_graph`` (from `export_onnx`) with its convolutional part quantised, calibrated on ``clips``."""
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"unknown calibration method {method!r} (known: {', '.join(CALIBRATION_METHODS)})")
    if not clips:
        raise CalibrationError(f"{fp32_graph}: no calibration clips to quantise with")
    metadata = read_metadata(fp32_graph)
    if metadata.get("qslr_precision", "fp32") != "fp32":
        raise ValueError(f"{fp32_graph}: quantisation starts from a float32 graph, this one is "
                         f"{metadata['qslr_precision']}")
    with tempfile.TemporaryDirectory(prefix="qslr-int8-") as work, atomic_path(out) as tmp:
        staged = Path(work) / "int8.onnx"
        quantise_convolutions(fp32_graph, staged, _ClipReader(clips), method)
        quantised = onnx.load(str(staged))
        layout = {key: value for key, value in graph_metadata(quantised).items() if key == ONNXRUNTIME_SCALES}
        del quantised.metadata_props[:]
        metadata.update({"qslr_precision": "int8", "qslr_int8_calibration": method,
                         "qslr_int8_calibration_clips": json.dumps([clip.name for clip in clips]), **layout})
        for key, value in metadata.items():
            quantised.metadata_props.add(key=key, value=value)
        onnx.checker.check_model(quantised, full_check=True)
        onnx.save(quantised, str(tmp))


def quantised_nodes(graph: onnx.GraphProto) -> list[str]:
    """The nodes `quantise_convolutions` quantises: every convolution and pooling, each addition of two
    activations (a residual block's; not the classifier's bias or the length arithmetic), and a Flatten of the
    frame encoder's last activation, so that the convolution that makes it has a quantised output too (the small
    CNN's last ReLU goes straight to a Flatten and a float Linear)."""
    made_by = {output: node.op_type for node in graph.node for output in node.output}
    return [node.name for node in graph.node
            if node.op_type in ("Conv", *_POOLS)
            or (node.op_type == "Add" and all(made_by.get(i) in _ACTIVATION_MAKERS for i in node.input))
            or (node.op_type == "Flatten" and made_by.get(node.input[0]) in ("Relu", *_POOLS))]


def quantise_convolutions(fp32_graph: str | Path, out: str | Path, reader, method: str = DEFAULT_METHOD) -> None:
    """onnxruntime's static quantisation of ``fp32_graph``'s `quantised_nodes` as TensorRT takes them (int8
    weights per output channel, int8 activations per tensor, zero points 0, float biases, no quantisation at a
    convolution's or addition's own output, nor between a convolution and its residual addition), calibrated on
    what ``reader`` feeds: an onnxruntime CalibrationDataReader with a length and ``set_range``, read one run at a
    time."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    calibrate = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                 "percentile": CalibrationMethod.Percentile}[method]
    nodes = quantised_nodes(onnx.load(str(fp32_graph), load_external_data=False).graph)
    # The histogram calibrators print a line per calibration run (hundreds for a Phoenix calibration).
    with _without_advice(), contextlib.redirect_stdout(io.StringIO()):
        quantize_static(str(fp32_graph), str(out), reader, quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=list(QUANTISED_OPS), nodes_to_quantize=nodes,
                        per_channel=True, reduce_range=False, activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8, calibrate_method=calibrate,
                        # Biases stay float: TensorRT dequantizes only 8-bit and narrower types, never INT32.
                        # A max-pooling's input is quantised even where nothing quantised made it (the stem's
                        # ReLU), so that it pools integers.
                        # One calibration run at a time: unstrided, the histogram calibrators (Entropy,
                        # Percentile) hold every run's activations to the end, 1.3 GB a 32-frame run at 224x224
                        # (22 GB for 8 clips); strided, they fold each run into their histograms and drop it.
                        # (Their bins are then set by the first run, so their scales depend on the clips' order.)
                        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                                       "ForceQuantizeNoInputCheck": True,
                                       "OpTypesToExcludeOutputQuantization": list(UNQUANTISED_OUTPUTS),
                                       "CalibStridedMinMax": 1})
    quantised = onnx.load(str(out))
    place_for_tensorrt(quantised)
    onnx.save(quantised, str(out))


class _PreprocessingAdvice(logging.Filter):
    # The second: a bias shared by several convolutions (the exporter de-duplicates equal constants) is read
    # through an Identity; it matters only where biases are quantised, and here they stay float.
    _MESSAGES = ("pre-processing before quantization", "to be an initializer")

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(message in record.getMessage() for message in self._MESSAGES)


@contextlib.contextmanager
def _without_advice() -> Iterator[None]:
    """quantize_static advises onnxruntime's quant_pre_process on every call. It is left out on purpose: it
    rewrites the graph with onnxruntime's own optimisations, and this graph must stay what TensorRT imports (the
    exporter has already folded BatchNorm into the convolutions). Its warnings about float biases go too."""
    advice = _PreprocessingAdvice()
    logging.getLogger().addFilter(advice)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(advice)


def export_int8(checkpoint: Checkpoint, out: str | Path, height: int, width: int, clips: Sequence[CalibrationClip],
                method: str = DEFAULT_METHOD, top_k: int | None = None) -> ExportInfo:
    """`export_onnx` at float32, then `quantise_graph`."""
    with tempfile.TemporaryDirectory(prefix="qslr-int8-") as work:
        info = export_onnx(checkpoint, Path(work) / "fp32.onnx", height, width, top_k)
        quantise_graph(info.path, out, clips, method)
    return ExportInfo(Path(out), info.height, info.width, info.crop_size, info.num_classes, top_k, info.kernels,
                      "int8")


@dataclass(frozen=True)
class FloatComparison:
    steps: int  # output steps compared, over all clips
    agreement: float  # share of them whose greedy label is the float32 model's, or ties with it there
    max_probability_difference: float


# Labels whose float32 probabilities at a step lie this close are a tie that any rounding may break (an untrained
# model's near-uniform steps): the INT8 graph choosing either keeps the label. A misplaced scale or a padding leak
# moves probabilities by far more.
TIED_PROBABILITY = 1e-3


def agreeing_steps(int8_log_probs: np.ndarray, float_log_probs: np.ndarray) -> int:
    """Steps (rows) where the INT8 graph's greedy label is the float32 model's best or tied with it."""
    chosen = int8_log_probs.argmax(-1)
    reference = np.exp(float_log_probs)
    margin = reference.max(-1) - reference[np.arange(len(chosen)), chosen]
    return int((margin <= TIED_PROBABILITY).sum())


def compare_with_float(checkpoint: Checkpoint, int8_graph: str | Path, clips: Sequence[CalibrationClip]
                       ) -> FloatComparison:
    """The INT8 graph in onnxruntime against the float32 model in PyTorch, clip by clip at each clip's length."""
    import torch

    served, _ = served_from_checkpoint(checkpoint)
    session = onnx_session(int8_graph)
    steps = agree = 0
    worst = 0.0
    for clip in clips:
        frames, lengths = clip.frames[None], np.array([len(clip.frames)], dtype=np.int64)
        with torch.no_grad():
            expected, expected_steps = (t.numpy() for t in served(torch.from_numpy(frames),
                                                                   torch.from_numpy(lengths))[:2])
        got, got_steps = session.run(list(names.OUTPUTS), {names.FRAMES: frames, names.LENGTHS: lengths})[:2]
        if not np.array_equal(got_steps, expected_steps):
            raise AssertionError(f"{clip.name}: output lengths differ: int8 {got_steps}, float32 {expected_steps}")
        n = int(got_steps[0])
        steps += n
        agree += agreeing_steps(got[0, :n], expected[0, :n])
        worst = max(worst, float(np.abs(np.exp(got[0, :n]) - np.exp(expected[0, :n])).max()))
    return FloatComparison(steps, agree / max(steps, 1), worst)
