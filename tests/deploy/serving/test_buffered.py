"""Buffered recognition's window plan: the kept steps of the windows are the whole video's steps, once each and
in order; with context at least a model's reach, the joined output is the whole video's output exactly (a model
of known reach, and the served model's convolutional branch, whose reach is its 16-frame receptive field);
a video no longer than a window is recognised whole; frames stream into windows, so what is held follows the
window, not the video."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qslr.deploy.served import served_from_checkpoint
from qslr.deploy.serving.buffered import Window, WindowPlan, run_buffered, stitch


@pytest.mark.parametrize(("window", "context"), [(64, 16), (32, 8), (400, 96), (12, 4)])
def test_the_windows_keep_every_step_of_the_video_once_in_order(window, context):
    plan = WindowPlan(window, context, 4)
    for frames in [1, 3, 4, 5, window - 1, window, window + 1, 2 * window + 3, 1000, 1001]:
        windows = plan.windows(frames)
        kept = [w.start // 4 + j for w in windows for j in range(w.keep_start, w.keep_stop)]
        assert kept == list(range(plan.steps(frames))), (frames, windows)
        assert all(w.stop - w.start <= window and 0 <= w.start < w.stop <= frames for w in windows)
        assert all(w.start % 4 == 0 for w in windows)
        if frames <= window:
            assert windows == [Window(0, frames, 0, plan.steps(frames))]


@pytest.mark.parametrize(("window", "context", "message"), [
    (30, 8, "multiples of the model's 4"), (32, 6, "multiples"), (32, 16, "no middle part"),
])
def test_a_plan_that_cannot_work_is_refused(window, context, message):
    with pytest.raises(ValueError, match=message):
        WindowPlan(window, context, 4)


def _reaching_model(frames: np.ndarray, reach: int) -> np.ndarray:
    """Step j: the sum of the frames from 4j - reach to 4j + 3 + reach that exist, and its square: an output
    that depends on the frames within ``reach`` of the step's own, and on where the clip ends."""
    steps = -(-len(frames) // 4)
    sums = np.array([frames[max(0, 4 * j - reach):4 * j + 4 + reach].sum() for j in range(steps)], dtype=np.float64)
    return np.stack([sums, sums ** 2], axis=1)


@pytest.mark.parametrize("reach", [0, 5, 12])
def test_context_as_long_as_the_model_s_reach_gives_the_whole_video_s_output(reach):
    frames = np.random.default_rng(0).integers(0, 100, 517)
    plan = WindowPlan(64, 12, 4)
    windows = plan.windows(len(frames))
    outputs = [_reaching_model(frames[w.start:w.stop], reach) for w in windows]
    joined = stitch(windows, outputs, [len(o) for o in outputs])
    whole = _reaching_model(frames, reach)
    assert joined.shape == whole.shape and np.array_equal(joined, whole)
    # Context shorter than the reach: windows see a clip edge where the video has frames, and the steps differ.
    short = WindowPlan(64, 4, 4)
    windows = short.windows(len(frames))
    outputs = [_reaching_model(frames[w.start:w.stop], 12) for w in windows]
    assert not np.array_equal(stitch(windows, outputs, [len(o) for o in outputs]), _reaching_model(frames, 12))


def test_a_window_with_fewer_steps_than_it_keeps_is_refused():
    windows = WindowPlan(32, 8, 4).windows(100)
    outputs = [np.zeros((w.keep_stop, 3)) for w in windows]
    with pytest.raises(ValueError, match="gave 2 steps"):
        stitch(windows, outputs, [len(o) for o in outputs[:-1]] + [2])


def test_the_served_model_s_steps_lie_on_the_video_s_grid(checkpoint):
    """The convolutional branch of the served model reaches 16 frames around each step: with 16 frames of context
    its windows' kept steps equal the whole clip's, which holds only if a window's step j is the video's step
    start / 4 + j."""
    served, _ = served_from_checkpoint(checkpoint)

    def conv_branch(frames: np.ndarray) -> np.ndarray:
        clip, lengths = torch.from_numpy(frames[None]), torch.tensor([len(frames)])
        with torch.no_grad():
            images = served.padded_images(clip, lengths)
            padded = -(-lengths // served.stride) * served.stride + served.margin
            features = served.model.frame_encoder(images).reshape(1, -1, served.model.frame_encoder.out_dim)
            visual, steps = served.temporal_features(features.transpose(1, 2), padded)
            return served.model.conv_classifier(visual.transpose(1, 2))[0, :int(steps[0])].numpy()

    frames = np.random.default_rng(1).integers(0, 256, (150, 72, 72, 3), dtype=np.uint8)
    whole = conv_branch(frames)
    for context, equal in ((16, True), (4, False)):
        windows = WindowPlan(48, context, 4).windows(len(frames))
        outputs = [conv_branch(frames[w.start:w.stop]) for w in windows]
        joined = stitch(windows, outputs, [len(o) for o in outputs])
        assert joined.shape == whole.shape
        assert np.allclose(joined, whole, atol=1e-5) == equal, context


class ReachingRunner:
    """The served signature around `_reaching_model`: padded uint8 frames (B, T, 1) and their counts in, padded
    outputs (B, T', 2) and their steps out; it records what each call was given and how many frames the video's
    chunks had produced by then."""

    def __init__(self, reach: int):
        self.reach, self.calls, self.produced = reach, [], 0

    def chunks(self, frames: np.ndarray, size: int):
        for start in range(0, len(frames), size):
            self.produced += len(frames[start:start + size])
            yield frames[start:start + size]

    def __call__(self, frames: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.calls.append((frames.shape, lengths.tolist(), self.produced))
        outputs = [_reaching_model(row[:n, 0].astype(np.int64), self.reach)
                   for row, n in zip(frames, lengths, strict=True)]
        padded = np.zeros((len(outputs), max(len(o) for o in outputs) + 3, 2))  # longer than any, as served
        for row, output in zip(padded, outputs, strict=True):
            row[:len(output)] = output
        return padded, np.array([len(o) for o in outputs])


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
@pytest.mark.parametrize("batch", [1, 3])
def test_streamed_windows_give_the_whole_video_s_output_holding_only_a_batch_of_windows(chunk, batch):
    frames = np.random.default_rng(2).integers(0, 100, (1003, 1), dtype=np.uint8)
    plan = WindowPlan(64, 12, 4)
    runner = ReachingRunner(reach=12)
    output = run_buffered(runner.chunks(frames, chunk), plan, runner, batch=batch, min_frames=16)
    whole = _reaching_model(frames[:, 0].astype(np.int64), 12)
    assert (output.frames, output.steps, output.windows) == (1003, 251, len(plan.windows(1003)))
    assert np.array_equal(output.log_probs, whole)
    assert sum(len(lengths) for _, lengths, _ in runner.calls) == output.windows
    for shape, lengths, _ in runner.calls:
        assert len(lengths) <= batch and max(lengths) <= 64 and shape[1] == max(16, max(lengths))
    # Each batch of windows runs within one chunk of its last frame's arrival (once the video is known to be
    # longer than a window), not at the video's end.
    for index, (_, _, produced) in enumerate(runner.calls):
        last = plan.window_at(min((index + 1) * batch, output.windows) - 1)
        assert produced <= min(1003, max(last.stop, plan.window + 1) + chunk - 1)


@pytest.mark.parametrize("frames", [5, 63, 64])
def test_a_video_no_longer_than_a_window_runs_whole_padded_to_the_minimum(frames):
    video = np.arange(frames, dtype=np.uint8)[:, None]
    runner = ReachingRunner(reach=100)
    output = run_buffered(runner.chunks(video, 7), WindowPlan(64, 12, 4), runner, batch=4, min_frames=16)
    assert runner.calls == [((1, max(16, frames), 1), [frames], frames)]
    assert output.windows == 1 and output.steps == -(-frames // 4)
    assert np.array_equal(output.log_probs[:output.steps], _reaching_model(video[:, 0].astype(np.int64), 100))


def test_a_video_without_frames_is_refused():
    with pytest.raises(ValueError, match="without frames"):
        run_buffered(iter([]), WindowPlan(64, 12, 4), ReachingRunner(0))
