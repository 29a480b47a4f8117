"""Local recognition, without a server: a checkpoint (PyTorch) or an exported graph (onnxruntime) and the
served decoder, on video files.

Every step is the server's own: the video is decoded and framed as the `preprocess` model's clip decoder does
(any container and codec FFmpeg reads; shown upright, placed on the model's frame rate, cropped to its training
aspect or letterboxed, resized), padded to the served minimum, run through the served signature
(`ServedModel`, or the graph exported from it), and decoded by the `ctc_decoder` model's `ServedDecoder`
with the same defaults; so a video gets the answer a repository built from the same checkpoint gives.
What the model needs (frame size and rate, how its training frames were made, vocabulary, decoding defaults)
comes from the checkpoint's input section and config, or from the metadata `qslr export onnx` writes into the
graph.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from qslr.deploy import tensor_names as names
from qslr.deploy.served import ModelLoadError, frame_size, served_from_checkpoint
from qslr.deploy.served_limits import ServedLimits
from qslr.deploy.served_video import frame_target
from qslr.deploy.serving.buffered import BufferedOutput, VisualRunner, WindowPlan, video_log_probs
from qslr.deploy.serving.recognition import Recognition
from qslr.deploy.serving.served_decoding import DecodeOptions, DecoderSettings, ServedDecoder
from qslr.model.checkpoints import InputSpec
from qslr.pipelines.framing import FrameTarget, FramingOptions, FramingRecord
from qslr.pipelines.source_framing import SourceFraming
from qslr.pipelines.temporal_padding import stride

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocalModel:
    source: Path
    run: VisualRunner
    vocab: dict[str, int]
    height: int
    width: int
    decoder: DecoderSettings
    windows: WindowPlan  # how a video longer than one window is recognised
    framing: SourceFraming  # how the training frames were made from their source videos

    @property
    def target(self) -> FrameTarget:
        """What every video is brought to: the frame size, the model's rate, the training aspect."""
        return frame_target(self.height, self.width, self.decoder.fps, self.framing)


def _decoder_settings(config: Mapping, kernels, fps: float | None) -> DecoderSettings:
    return DecoderSettings.for_model(config.get("decode", {}), stride(kernels), fps)


def _window_plan(config: Mapping, kernels) -> WindowPlan:
    return WindowPlan.for_model(config.get("decode", {}), stride(kernels))


def load_checkpoint_model(path: str | Path, height: int | None = None, width: int | None = None) -> LocalModel:
    """The served signature of a `qslr train` checkpoint, in PyTorch."""
    path = Path(path)
    try:
        served, extra = served_from_checkpoint(path)
    except ValueError as exc:
        raise ModelLoadError(str(exc)) from None
    spec = extra["input"]
    size = frame_size(path, (spec.height, spec.width), height, width)

    def run(frames: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            log_probs, steps = served(torch.from_numpy(frames), torch.from_numpy(lengths))
        return log_probs.numpy(), steps.numpy()

    return LocalModel(path, run, extra["vocab"], *size, _decoder_settings(extra["config"], spec.kernels, spec.fps),
                      _window_plan(extra["config"], spec.kernels), spec.source_framing(*size))


def load_onnx_model(path: str | Path, height: int | None = None, width: int | None = None,
                    threads: int = 1) -> LocalModel:
    """A graph from `qslr export onnx` (or a repository's visual/1/model.onnx), in onnxruntime."""
    # The exporter's module needs onnx, which a base install (enough for --checkpoint) does not have.
    from qslr.deploy.export.onnx_export import onnx_session, read_metadata

    path = Path(path)
    try:
        metadata = read_metadata(path)
        session = onnx_session(path, threads)
    except Exception as exc:  # noqa: BLE001 - onnx and onnxruntime raise their own types for unreadable graphs
        raise ModelLoadError(f"{path}: cannot load the graph: {str(exc).splitlines()[0]}") from None
    if "qslr_vocab" not in metadata or "qslr_config" not in metadata:
        raise ModelLoadError(f"{path}: not a graph from `qslr export onnx` (it holds no QSLR vocabulary and config)")
    config = json.loads(metadata["qslr_config"])
    spec = json.loads(metadata.get("qslr_input", "{}"))  # graphs exported before it was stored hold none
    kernels = spec.get("kernels") or config["model"]["temporal"]["kernels"]
    # The frame size is fixed in the graph (its crop offsets are constants): the metadata, else the input shape.
    shape = session.get_inputs()[0].shape
    stated = tuple(int(metadata[key]) if key in metadata else (dim if isinstance(dim, int) else None)
                   for key, dim in (("qslr_height", shape[2]), ("qslr_width", shape[3])))
    size = frame_size(path, stated, height, width)
    if all(stated) and size != stated:
        raise ModelLoadError(f"{path}: the graph takes {stated[0]}x{stated[1]} frames (its crop is fixed), "
                             f"not {size[0]}x{size[1]}; leave --height and --width out")

    def run(frames: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        log_probs, steps = session.run(list(names.OUTPUTS), dict(zip(names.INPUTS, (frames, lengths), strict=True)))[:2]
        return log_probs, steps

    # Graphs exported before the input section carried how the frames were made take the frame size's aspect.
    source = InputSpec.from_dict(spec).source_framing(*size) if spec else SourceFraming.of_size(size[1], size[0])
    return LocalModel(path, run, json.loads(metadata["qslr_vocab"]), *size,
                      _decoder_settings(config, kernels, spec.get("fps")), _window_plan(config, kernels), source)


class LocalRecogniser:
    """Videos -> Recognitions, one video at a time, as the server's models would answer them.

    A video of at most one window's frames runs whole, as the server runs it. A longer one, up to the limits'
    duration, runs in overlapping windows (deploy/serving/buffered.py), ``window_batch`` windows to a model call,
    its frames decoded a chunk at a time: memory follows the window, not the video. One window a call by default:
    a model's activations for a batch of windows are what a long video costs (docs/benchmarks.md, "Long videos"),
    and on a CPU a batch of windows runs no faster than the windows one after the other.
    """

    def __init__(self, model: LocalModel, limits: ServedLimits | None = None, windows: WindowPlan | None = None,
                 window_batch: int = 1):
        self.model, self.limits = model, limits or ServedLimits()
        self.windows = windows or model.windows
        self.windows.check_fits(self.limits.max_frames)
        if window_batch < 1:
            raise ValueError(f"window_batch must be at least 1, got {window_batch}")
        self.window_batch = window_batch
        self.decoder = ServedDecoder(model.vocab, model.decoder)

    def options(self, beam_size: int | None = None, top_k: int | None = None) -> DecodeOptions:
        """Checked as a served request's parameters are (ValueError)."""
        parameters = {names.BEAM_SIZE_PARAMETER: beam_size, names.TOP_K_PARAMETER: top_k}
        return self.decoder.options({key: value for key, value in parameters.items() if value is not None})

    def outputs(self, video: str | Path, framing: FramingOptions | None = None
                ) -> tuple[BufferedOutput, FramingRecord]:
        """The video's log-probabilities, whole or joined from windows, and what was done to its frames."""
        output, record = video_log_probs(video, self.model.target, self.limits, self.windows, self.model.run,
                                         self.window_batch, framing)
        log.debug("%s: %s; %d windows, %d output steps", video, record.summary(), output.windows, output.steps)
        return output, record

    def recognise(self, video: str | Path, options: DecodeOptions, framing: FramingOptions | None = None
                  ) -> Recognition:
        """One video file; a video that cannot be recognised raises the decoder's error (a ValueError)."""
        output, record = self.outputs(video, framing)
        result = self.decoder.recognise(output.log_probs, output.steps, output.frames, record.fps, options,
                                        in_segments=output.windows > 1)
        return dataclasses.replace(result, framing=record.to_dict())
