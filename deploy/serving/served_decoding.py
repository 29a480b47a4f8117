"""The served decoder: per-request decoding options, checked, and one clip's log-probabilities to a Recognition.

The Triton `ctc_decoder` model and local recognition (`qslr recognise`) both decode through a
`ServedDecoder` built from the same `DecoderSettings`, so they answer alike. Its settings are the
`ctc_decoder` config's parameters, written by the repository builder from the checkpoint.

A clip is decoded whole. The output of a video recognised in windows (deploy/serving/buffered.py) is decoded in
segments (model/streaming_decoding.py), as a live stream of the same frames is decoded as it comes
(deploy/serving/streaming.py): so the two give the same answer, and neither decodes more than a segment at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

import numpy as np

from qslr.deploy import tensor_names as names
from qslr.deploy.serving.recognition import Alternative, Recognition
from qslr.model.decoding import CTCDecoder, Hypothesis
from qslr.model.decoding_defaults import (
    BACKEND,
    BEAM_SIZE,
    BEAM_SIZE_TOKEN,
    COMMIT_BLANK_PROBABILITY,
    GREEDY,
    MAX_SEGMENT_STEPS,
    MERGE_REPEATS,
)
from qslr.model.gloss_spans import frame_rate, gloss_spans
from qslr.model.streaming_decoding import SegmentRule, StreamingDecoder, decode_in_segments

MAX_BEAM_SIZE = 10  # the widest beam a request may ask for (a decoder per width is built at load)
MAX_TOP_K = 10  # the most alternatives one request may ask for


@dataclass(frozen=True)
class DecoderSettings:
    beam_size: int = BEAM_SIZE  # a request's beam width unless it asks for another (0: greedy)
    max_beam_size: int = MAX_BEAM_SIZE
    beam_size_token: int = BEAM_SIZE_TOKEN
    max_top_k: int = MAX_TOP_K
    frames_per_step: int = 4  # input frames per output step, which places the glosses in the video
    fps: float = 0.0  # the model's frame rate, for videos that state none (0: unknown)
    merge_repeats: bool = MERGE_REPEATS  # a gloss repeated across a blank is one gloss (model/decoding.py)
    backend: str = BACKEND  # the beam search's: flashlight, or ctcdecode where installed (model/decoding.py)
    # How outputs of several windows are cut into segments, each decoded once (model/streaming_decoding.py).
    commit_blank: float = COMMIT_BLANK_PROBABILITY
    max_segment_steps: int = MAX_SEGMENT_STEPS

    def __post_init__(self) -> None:
        if not 0 <= self.beam_size <= self.max_beam_size:
            raise ValueError(f"the default beam_size {self.beam_size} is outside 0..{self.max_beam_size}")
        if self.max_top_k < 1 or self.frames_per_step < 1 or self.beam_size_token < 1:
            raise ValueError(f"decoder settings: max_top_k, frames_per_step and beam_size_token must be at "
                             f"least 1 ({self})")
        SegmentRule(self.commit_blank, self.max_segment_steps)  # a rule that cannot work is refused at load

    @property
    def segment_rule(self) -> SegmentRule:
        return SegmentRule(self.commit_blank, self.max_segment_steps)

    @classmethod
    def for_model(cls, decode: Mapping, frames_per_step: int, fps: float | None, beam_size: int | None = None,
                  max_beam_size: int = MAX_BEAM_SIZE, beam_size_token: int | None = None,
                  max_top_k: int = MAX_TOP_K) -> DecoderSettings:
        """Defaults from a training config's decode section unless overridden, so that a served or local
        answer is what `qslr eval run` scores."""
        if beam_size is None:
            beam_size = 0 if decode.get("method") == GREEDY else int(decode.get("beam_size", BEAM_SIZE))
        max_beam_size = max(max_beam_size, beam_size)
        # A beam of width w holds at most w labellings.
        return cls(beam_size, max_beam_size, beam_size_token or int(decode.get("beam_size_token", BEAM_SIZE_TOKEN)),
                   min(max_top_k, max_beam_size), frames_per_step, float(fps or 0.0),
                   bool(decode.get("merge_repeats", MERGE_REPEATS)), str(decode.get("backend", BACKEND)),
                   float(decode.get("commit_blank", COMMIT_BLANK_PROBABILITY)),
                   int(decode.get("max_segment_steps", MAX_SEGMENT_STEPS)))

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, str]) -> DecoderSettings:
        """From the string parameters of the `ctc_decoder` config (a repository built before ``merge_repeats``
        or ``backend`` existed has neither: it merged, with flashlight; one built before outputs were decoded in
        segments takes today's segment rule)."""
        values = {}
        for field in fields(cls):
            if field.name not in parameters and field.name in _ADDED_LATER:
                continue
            raw = parameters[field.name]
            if isinstance(field.default, bool):
                if raw not in ("True", "False"):
                    raise ValueError(f"decoder setting {field.name} must be True or False, got {raw!r}")
                values[field.name] = raw == "True"
            else:
                values[field.name] = type(field.default)(raw)
        return cls(**values)


# Settings a repository built before them does not state.
_ADDED_LATER = ("merge_repeats", "backend", "commit_blank", "max_segment_steps")


@dataclass(frozen=True)
class DecodeOptions:
    beam_size: int
    top_k: int = 1


def _integer(parameters: Mapping[str, object], key: str, default: int, low: int, high: int, meaning: str) -> int:
    value = parameters.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{key} must be an integer in {low}..{high}{meaning}, got {value!r}")
    return value


class ServedDecoder:
    def __init__(self, vocab: Mapping[str, int], settings: DecoderSettings):
        self.vocab, self.settings = dict(vocab), settings
        self.greedy = self._built(0)
        # One decoder per beam width, built now so that a bad setting fails at load time, not at a request.
        self.beams = {width: self._built(width) for width in range(1, settings.max_beam_size + 1)}

    def _built(self, width: int) -> CTCDecoder:
        if width == 0:
            return CTCDecoder(self.vocab, "greedy", merge_repeats=self.settings.merge_repeats)
        return CTCDecoder(self.vocab, "beam", backend=self.settings.backend, beam_size=width,
                          beam_size_token=self.settings.beam_size_token, merge_repeats=self.settings.merge_repeats)

    def options(self, parameters: Mapping[str, object]) -> DecodeOptions:
        """A request's options from its parameters (JSON values); ValueError names what is wrong."""
        settings = self.settings
        width = _integer(parameters, names.BEAM_SIZE_PARAMETER, settings.beam_size, 0, settings.max_beam_size,
                         " (0: greedy)")
        top_k = _integer(parameters, names.TOP_K_PARAMETER, 1, 1, settings.max_top_k, "")
        if top_k > max(width, 1):
            raise ValueError(f"top_k {top_k} needs a beam at least as wide, got beam_size {width}"
                             + (" (greedy gives one answer)" if width == 0 else ""))
        return DecodeOptions(width, top_k)

    def _decoder(self, options: DecodeOptions) -> CTCDecoder:
        return self.greedy if options.beam_size == 0 else self.beams[options.beam_size]

    def streaming(self, options: DecodeOptions) -> StreamingDecoder:
        """A decoder for output steps that keep coming (a live stream), segment by segment. It searches with a
        beam of its own: a beam search holds its state while it runs, and streams run on threads side by side."""
        return StreamingDecoder(self._built(options.beam_size), self.settings.segment_rule, options.top_k)

    def recognise(self, log_probs: np.ndarray, steps: int, frames: int, video_fps: float | None,
                  options: DecodeOptions, in_segments: bool = False) -> Recognition:
        """One clip: log-probabilities (T', V) of which ``steps`` are valid, from ``frames`` video frames;
        ``in_segments``: the output of several windows, decoded in segments as a live stream of it is."""
        decoder = self._decoder(options)
        if in_segments:
            alternatives = decode_in_segments(decoder, log_probs[:steps], self.settings.segment_rule, options.top_k)
        else:
            (alternatives,) = decoder.decode_alternatives(log_probs[None], [steps], options.top_k)
        return self.recognition(alternatives, frames, video_fps)

    def recognition(self, alternatives: list[Hypothesis], frames: int, video_fps: float | None) -> Recognition:
        """The answer of the decoded labellings (best first) of ``frames`` video frames, placed in seconds."""
        best = alternatives[0]
        spans = gloss_spans(best.steps, best.ends, self.settings.frames_per_step, self.fps(video_fps), frames)
        return Recognition(best.glosses, best.steps, best.score, [start for start, _ in spans],
                           [end for _, end in spans], [Alternative(h.glosses, h.score) for h in alternatives])

    def fps(self, video_fps: float | None) -> float:
        """The rate that places glosses in seconds: the video's, else the model's (0.0: unknown)."""
        return frame_rate(video_fps, self.settings.fps)
