"""A live stream's frames, as a camera captures them, to recognition updates: each frame placed on the model's frame
rate by its capture time and framed as the model's training frames were made (pipelines/framing.py, as every video
file is), then recognised window by window (deploy/serving/streaming.py). The answer at the end says what was done
to the frames, as every recognition does.

One `LiveModel` serves every stream of a process (`qslr recognise --live`, the page's live mode): a model run
locally, or the server's `visual` model through tritonclient (deploy/serving/visual_client.py), one window a
request, so that live windows share the server's dynamic batching with uploads. Decoding stays here, beside each
stream's state: a stream's decoder holds its open segment between windows, which a stateless served decoder
could not, and its work per update is bounded (model/streaming_decoding.py).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qslr.deploy import model_names as models
from qslr.deploy.frontends.recognise import LocalModel
from qslr.deploy.served_limits import ServedLimits
from qslr.deploy.served_video import served_frame_target
from qslr.deploy.serving.buffered import VisualRunner, WindowPlan
from qslr.deploy.serving.recognition import Recognition
from qslr.deploy.serving.served_decoding import DecodeOptions, DecoderSettings, ServedDecoder
from qslr.deploy.serving.streaming import LiveUpdate, StreamingRecogniser
from qslr.deploy.serving.visual_client import ServedVisual, served_parameters
from qslr.pipelines.framing import FrameTarget, FramingError, VideoFramer
from qslr.pipelines.framing_options import FramingOptions


@dataclass(frozen=True)
class LiveModel:
    """What live streams are recognised with: a runner of the served signature (given one window a call), the
    served decoder, the frames the model takes, and the live windows."""

    run: VisualRunner
    decoder: ServedDecoder
    target: FrameTarget
    plan: WindowPlan
    min_frames: int = 1

    @classmethod
    def local(cls, model: LocalModel, plan: WindowPlan | None = None, limits: ServedLimits | None = None
              ) -> LiveModel:
        """A checkpoint's or graph's model, run in this process; ``plan``: the live windows (default: the live
        defaults at the model's stride)."""
        limits = limits or ServedLimits()
        plan = plan or WindowPlan.for_live({}, model.windows.stride)
        plan.check_fits(limits.max_frames)
        return cls(model.run, ServedDecoder(model.vocab, model.decoder), model.target, plan, limits.min_frames)

    @classmethod
    def served(cls, url: str, grpc: bool, repository: Path, window: int | None = None, context: int | None = None
               ) -> LiveModel:
        """The `visual` model of a running server (one window a request), with the frames its `cslr` takes and its
        `ctc_decoder`'s settings, read from the server; the vocabulary from the repository's folder (the server
        gives no model's files)."""
        frames = served_parameters(url, grpc, models.CSLR)
        decoding = DecoderSettings.from_parameters(served_parameters(url, grpc, models.CTC_DECODER))
        visual = served_parameters(url, grpc, models.VISUAL)
        vocab_file = Path(repository) / models.CTC_DECODER / "1" / "vocab.json"
        try:
            vocab = json.loads(vocab_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{vocab_file}: cannot read the served vocabulary ({exc})") from None
        plan = WindowPlan.for_live({}, int(frames["frames_per_step"]), window, context)
        plan.check_fits(int(visual["max_frames"]))
        return cls(ServedVisual(url, grpc), ServedDecoder(vocab, decoding), served_frame_target(frames), plan,
                   int(visual["min_frames"]))

    def stream(self, options: DecodeOptions, framing: FramingOptions | None = None, name: str = "stream"
               ) -> LiveStream:
        recogniser = StreamingRecogniser(self.plan, self.run, self.decoder, options, self.target.fps,
                                         self.min_frames)
        return LiveStream(recogniser, self.target, framing or FramingOptions(), name)


class LiveStream:
    """One stream: ``feed`` its frames as captured (any size, all alike), with their capture times in seconds, and
    take the updates; ``finish`` ends it with the answer."""

    def __init__(self, recogniser: StreamingRecogniser, target: FrameTarget, framing: FramingOptions,
                 name: str = "stream"):
        self.recogniser, self.target, self.framing, self.name = recogniser, target, framing, name
        self._framer: VideoFramer | None = None

    def feed(self, frames: np.ndarray, starts: Sequence[float], matrix: Sequence[int] | None = None,
             source_fps: float = 0.0) -> list[LiveUpdate]:
        """Frames (n, H, W, 3) uint8 as stored, with their capture times; the first frames set the stream's size,
        display matrix and stated rate. A frame of another size is refused (FramingError), the stream going on."""
        if self._framer is None:
            self._framer = VideoFramer(self.target, self.framing, matrix, tuple(frames.shape[1:3]), source_fps,
                                       self.name)
        elif tuple(frames.shape[1:3]) != self._framer.stored:
            raise FramingError(f"{self.name}: a frame of {frames.shape[2]}x{frames.shape[1]}, the stream's are "
                               f"{self._framer.stored[1]}x{self._framer.stored[0]}")
        return self.recogniser.push(self._framer.feed(frames, starts))

    @property
    def started(self) -> bool:
        return self._framer is not None

    def finish(self, end: float | None = None) -> Recognition:
        """The answer: the buffered recognition of the frames placed so far; ``end``: where the last frame ends
        (None: a frame period after it starts)."""
        if self._framer is None:
            raise ValueError(f"{self.name}: the stream ended before its first frame")
        self.recogniser.push(self._framer.finish(end))
        result = self.recogniser.finish()
        return dataclasses.replace(result, framing=self._framer.record().to_dict())
