"""Live recognition (deploy/serving/streaming.py): a stream's answer is the buffered recognition of its frames with
the same windows, bit for bit (the model's log-probabilities and the glosses), for several window settings and
streams ending at every phase of a window; final glosses never change, tentative ones lie within the newest
window; a 10-minute stream holds a window of frames and decodes a bounded number of steps per update."""

from __future__ import annotations

import numpy as np
import pytest

from qslr.deploy.frontends.recognise import load_checkpoint_model
from qslr.deploy.serving.buffered import WindowPlan, run_buffered
from qslr.deploy.serving.served_decoding import DecodeOptions, DecoderSettings, ServedDecoder
from qslr.deploy.serving.streaming import StreamingRecogniser
from qslr.pipelines.prepared import PreparedDataset
from qslr.pipelines.video_io import read_video, resize_frames


class RecordingRunner:
    """A model's runner that keeps every call's frames, counts and outputs."""

    def __init__(self, run):
        self.inner, self.calls = run, []

    def __call__(self, frames: np.ndarray, lengths: np.ndarray):
        log_probs, steps = self.inner(frames, lengths)
        self.calls.append((frames.copy(), lengths.copy(), log_probs.copy(), steps.copy()))
        return log_probs, steps


@pytest.fixture(scope="module")
def model(checkpoint):
    return load_checkpoint_model(checkpoint)


@pytest.fixture(scope="module")
def signing(tiny_corpus, model) -> np.ndarray:
    """Four clips of the tiny corpus one after the other, at the model's frame size."""
    dataset = PreparedDataset(tiny_corpus[0])
    clips = [read_video(dataset.video_path(record))[0] for record in dataset.records("train")[:4]]
    return resize_frames(np.concatenate(clips), model.height, model.width)


def _pieces(frames: np.ndarray, seed: int):
    rng = np.random.default_rng(seed)
    start = 0
    while start < len(frames):
        size = int(rng.integers(1, 10))
        yield frames[start:start + size]
        start += size


def _buffered(run, decoder, frames, plan, options):
    """What `qslr recognise` answers for these frames: the windows one a call, decoded in segments when several."""
    runner = RecordingRunner(run)
    output = run_buffered(iter([frames]), plan, runner, batch=1, min_frames=16)
    answer = decoder.recognise(output.log_probs, output.steps, output.frames, 25.0, options,
                               in_segments=output.windows > 1)
    return answer, runner.calls


def _streamed(run, decoder, frames, plan, options, seed):
    runner = RecordingRunner(run)
    stream = StreamingRecogniser(plan, runner, decoder, options, 25.0, min_frames=16)
    updates = [update for piece in _pieces(frames, seed) for update in stream.push(piece)]
    return stream.finish(), runner.calls, updates


def _same_calls(streamed, buffered) -> None:
    """The model saw the same windows and gave the same log-probabilities, bit for bit: the stream's last calls
    are the buffered recognition's (before them, while it might still be a clip, it ran its frames so far)."""
    assert len(streamed) >= len(buffered)
    for (frames, lengths, log_probs, steps), (b_frames, b_lengths, b_log_probs, b_steps) in zip(
            streamed[len(streamed) - len(buffered):], buffered, strict=True):
        assert np.array_equal(frames, b_frames) and np.array_equal(lengths, b_lengths)
        assert np.array_equal(log_probs, b_log_probs) and np.array_equal(steps, b_steps)


class SigningRunner:
    """A model without a network whose output depends on every frame of its clip and on where the clip ends, as
    a BiLSTM's does: frame value v > 0 is gloss v being signed, 0 a pause; step j is its frames' gloss (or the
    blank), less sure the further the clip's end, and tilted by the clip's mean frame value."""

    def __init__(self, classes: int):
        self.classes = classes

    def __call__(self, frames: np.ndarray, lengths: np.ndarray):
        steps = -(-lengths // 4)
        log_probs = np.full((len(frames), int(steps.max()) + 2, self.classes), -9.0, np.float32)
        for row, count in enumerate(lengths):
            labels = frames[row, :count, 0, 0, 0].astype(np.int64)
            # No two labellings of equal score: flashlight ranks those as it pleases, from one call to the next.
            log_probs[row] -= np.random.default_rng([int(labels.sum()), int(count)]).random(log_probs.shape[1:]) / 50
            for step in range(int(steps[row])):
                log_probs[row, step, labels[4 * step:4 * step + 4].max()] = -0.05 * (int(steps[row]) - step)
                log_probs[row, step, 1 + step % (self.classes - 1)] += labels.mean() / 100
        return log_probs, steps


def _signing(frames: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = []
    while len(labels) < frames:
        labels += [int(rng.integers(1, 7))] * int(rng.integers(3, 9)) + [0] * int(rng.integers(1, 8))
    return np.array(labels[:frames], np.uint8)[:, None, None, None].repeat(3, axis=3)


@pytest.mark.parametrize(("window", "context"), [(32, 8), (48, 12), (24, 4)])
@pytest.mark.slow
def test_a_stream_ends_with_the_buffered_answer_of_its_frames_at_every_phase_of_a_window(window, context):
    """Every length from a frame to past the fourth window (so every phase of a window's middle part), pushed a
    few frames at a time; beam (committing at its pauses, and eagerly), greedy, and three alternatives."""
    plan = WindowPlan(window, context, 4)
    runner = SigningRunner(7)
    vocab = {f"S{i}": i for i in range(1, 7)}
    decoders = [ServedDecoder(vocab, DecoderSettings(beam_size=4, fps=25.0, commit_blank=blank, max_segment_steps=6))
                for blank in (0.9, 0.6)]
    cuts = 0
    for length in range(1, window + 3 * plan.middle + 1):
        frames = _signing(length, length)
        for decoder in decoders:
            for options in (DecodeOptions(4, 1), DecodeOptions(0, 1), DecodeOptions(4, 3)):
                answer, buffered_calls = _buffered(runner, decoder, frames, plan, options)
                streamed, streamed_calls, _ = _streamed(runner, decoder, frames, plan, options, seed=length)
                assert streamed == answer, (length, options)
                _same_calls(streamed_calls, buffered_calls)
                cuts += _decoded_whole(runner, decoder, frames, plan, options) != answer
    assert cuts > 100, "answers in segments differ from decoding the joined output whole: the decoding was compared"


def _decoded_whole(run, decoder, frames, plan, options):
    output = run_buffered(iter([frames]), plan, run, batch=1, min_frames=16)
    return decoder.recognise(output.log_probs, output.steps, output.frames, 25.0, options)


def test_with_the_trained_model_too(model, signing):
    window = 32
    plan = WindowPlan(window, 8, model.windows.stride)
    decoder = ServedDecoder(model.vocab, DecoderSettings(beam_size=4, fps=25.0, commit_blank=0.55,
                                                         max_segment_steps=6))
    for length in (5, window, 2 * window + 3, 150):
        for options in (DecodeOptions(4, 1), DecodeOptions(0, 1)):
            answer, buffered_calls = _buffered(model.run, decoder, signing[:length], plan, options)
            streamed, streamed_calls, _ = _streamed(model.run, decoder, signing[:length], plan, options, seed=length)
            assert streamed == answer, (length, options)
            _same_calls(streamed_calls, buffered_calls)


def test_final_glosses_never_change_and_tentative_ones_lie_in_the_newest_window(model, signing):
    plan = WindowPlan(32, 8, model.windows.stride)
    # A decoder that commits early: the tiny model's blank is rarely 0.9 sure.
    decoder = ServedDecoder(model.vocab, DecoderSettings(beam_size=4, fps=25.0, commit_blank=0.55,
                                                         max_segment_steps=6))
    answer, _, updates = _streamed(model.run, decoder, signing, plan, decoder.options({}), seed=3)
    final: dict[int, tuple] = {}
    for update in updates:
        for gloss in update.final:
            if gloss.index in final:  # only a repeat merged across a cut moves, and only its end
                assert final[gloss.index][:3] == (gloss.gloss, gloss.start_step, gloss.start_s)
            final[gloss.index] = (gloss.gloss, gloss.start_step, gloss.start_s, gloss.end_step)
        assert sorted(final) == list(range(len(final)))
        first_tentative_step = update.final_frames // plan.stride - decoder.settings.max_segment_steps
        newest = plan.window_at(update.windows - 1) if update.frames > plan.window else None
        for gloss in update.tentative:
            assert gloss.index >= len(final) and gloss.start_step >= first_tentative_step
            if newest is not None:
                assert gloss.end_step < -(-newest.stop // plan.stride)
    assert len(updates) >= len(signing) // plan.middle - 2
    assert [final[i][0] for i in sorted(final)] == answer.glosses[:len(final)]
    assert len(final) >= 3, "the stream committed glosses before it ended"


class PeakyRunner:
    """A model without a network: frame value v > 0 says gloss v is being signed, 0 a pause. Step j is the
    gloss of its frames (or the blank), sure of it; it records how many frames each call was given."""

    def __init__(self, classes: int):
        self.classes, self.frames_per_call = classes, []

    def __call__(self, frames: np.ndarray, lengths: np.ndarray):
        self.frames_per_call.append(frames.shape[1])
        steps = -(-lengths // 4)
        log_probs = np.full((len(frames), int(steps.max()), self.classes), -30.0, np.float32)
        for row, count in enumerate(lengths):
            labels = frames[row, :count, 0, 0, 0].reshape(-1)
            for step in range(-(-int(count) // 4)):
                log_probs[row, step, int(labels[4 * step:4 * step + 4].max())] = 0.0
        return log_probs, steps


def test_a_10_minute_stream_holds_a_window_and_decodes_a_bounded_number_of_steps_per_update():
    """25 fps for 10 minutes: 15,000 frames of signs of 8 frames between pauses of 4 to 12, a frame at a time."""
    rng = np.random.default_rng(0)
    labels, signs = [], []
    while len(labels) < 15000:
        signs.append(int(rng.choice([s for s in range(1, 9) if not signs or s != signs[-1]])))
        labels += [signs[-1]] * 8 + [0] * int(rng.integers(4, 13))
    frames = np.array(labels[:15000], np.uint8)[:, None, None, None].repeat(3, axis=3)
    plan = WindowPlan(48, 8, 4)
    runner = PeakyRunner(9)
    decoder = ServedDecoder({f"S{i}": i for i in range(1, 9)}, DecoderSettings(fps=25.0))
    stream = StreamingRecogniser(plan, runner, decoder, decoder.options({}), 25.0)
    work, held = [], []
    for frame in frames:
        before = stream.decoder.steps_decoded
        if stream.push(frame[None]):
            work.append(stream.decoder.steps_decoded - before)
        held.append(sum(len(chunk) for chunk in stream._held))
    answer = stream.finish()
    assert max(held) <= plan.window and max(runner.frames_per_call) == plan.window
    minute = len(work) // 10
    assert max(work) <= 2 * decoder.settings.max_segment_steps
    assert max(work[-minute:]) <= max(work[:minute]) + plan.middle // plan.stride
    assert answer.glosses == [f"S{s}" for s in signs[:len(answer.glosses)]] and len(answer.glosses) >= 700
