"""Bringing any video to a model's geometry and rate: display matrices, timestamps, crop, letterbox, region."""

from __future__ import annotations

import io

import numpy as np
import pytest

from qslr.pipelines.frame_placement import FramePlacer, place, placed_frames
from qslr.pipelines.framing import (
    CROP,
    LETTERBOX,
    FramedReader,
    FrameTarget,
    FramingError,
    VideoFramer,
    crop_box,
    frame_decoded,
    read_framed,
)
from qslr.pipelines.framing_options import FramingOptions, Region
from qslr.pipelines.orientation import Orientation, UnsupportedOrientationError
from qslr.pipelines.source_framing import SourceFraming
from qslr.pipelines.video_io import (
    StreamExtras,
    VideoReader,
    encode_video,
    probe_video,
    read_display_matrix,
    read_frames,
)

# A picture no quarter turn or mirror maps onto itself: four blocks of different shades, 48 wide and 32 high.
MARKED = np.zeros((32, 48, 3), np.uint8)
MARKED[:16, :24], MARKED[:16, 24:], MARKED[16:, :24], MARKED[16:, 24:] = 40, 100, 160, 220
LOSSLESS = {"qp": "0", "preset": "ultrafast"}
SETTINGS = [(degrees, hflip, vflip) for degrees in (0, 90, 180, 270) for hflip, vflip in
            ((False, False), (True, False), (False, True))]


def _shown(picture: np.ndarray, degrees: int, hflip: bool, vflip: bool) -> np.ndarray:
    """What PyAV's set_display_rotation(degrees, hflip, vflip) asks a player to show: the turn, then the mirrors."""
    shown = np.rot90(picture, k=degrees // 90)
    shown = shown[:, ::-1] if hflip else shown
    return shown[::-1] if vflip else shown


def _encoded(frames, fps=25.0, codec="libx264", container="mp4", options=LOSSLESS, **kwargs) -> bytes:
    buffer = io.BytesIO()
    encode_video(buffer, frames, fps, codec, container, options, **kwargs)
    return buffer.getvalue()


@pytest.mark.parametrize("container, codec, options", [("mp4", "libx264", LOSSLESS), ("matroska", "libx264", LOSSLESS),
                                                       ("webm", "libvpx-vp9", {"lossless": "1"})])
def test_every_display_matrix_shows_the_picture_as_a_player_would(container, codec, options):
    """The 12 settings (4 turns, each plain and mirrored either way: the 8 orientations, some twice) written by
    FFmpeg's muxers and read back from the decoded frames' side data; a marker picture decides."""
    for degrees, hflip, vflip in SETTINGS:
        data = _encoded([MARKED] * 2, codec=codec, container=container, options=options,
                        extras=StreamExtras(degrees, hflip, vflip))
        with VideoReader(data) as reader:
            (stored, _), = list(reader.timed_chunks(8))
            orientation = Orientation.from_display_matrix(reader.display_matrix)
        assert read_display_matrix(data) == reader.display_matrix
        upright = orientation.apply(stored)[0].astype(int)
        expected = _shown(MARKED, degrees, hflip, vflip)
        assert upright.shape == expected.shape, (degrees, hflip, vflip)
        assert np.abs(upright - expected).max() <= 3, (degrees, hflip, vflip)
        mirrored = hflip != vflip
        assert orientation.mirrored == mirrored
        if not mirrored:
            assert orientation.rotation == degrees % 360


def test_orientations_are_the_eight_quarter_turns_and_mirrors():
    pictures = {Orientation(*flags).apply(MARKED[None])[0].tobytes() for flags in np.ndindex(2, 2, 2)}
    assert len(pictures) == 8
    assert Orientation.from_display_matrix(None).upright
    assert Orientation.from_display_matrix((0,) * 9).upright
    with pytest.raises(UnsupportedOrientationError, match=r"tilted.mp4: .* turns the picture by 45 degrees or skews"):
        turn = round(65536 * 0.7071)
        Orientation.from_display_matrix((turn, turn, 0, -turn, turn, 0, 0, 0, 1 << 30), "tilted.mp4")


def test_placement_on_the_model_rate():
    # A video at the model's rate: every frame once.
    starts = [k / 25 for k in range(50)]
    assert placed_frames(starts, 2.0, 25.0) == 50
    frames = np.arange(50)[:, None]
    same, counts = place(frames, starts, 2.0, 25.0)
    assert same is frames and counts.dropped == counts.repeated == 0
    # 60 fps for 2 s: 50 model frames, the latest frame started at or before each model time.
    sixty = [k / 60 for k in range(120)]
    placed, counts = place(np.arange(120), sixty, 2.0, 25.0)
    assert placed.tolist() == [int(np.floor(k * 60 / 25 + 1e-9)) for k in range(50)]
    assert counts.frames_out == 50 and counts.dropped == 70
    # 30 fps: one frame in six dropped; 24 fps: one in 24 repeated.
    assert placed_frames([k / 30 for k in range(60)], 2.0, 25.0) == 50
    twenty_four, counts = place(np.arange(48), [k / 24 for k in range(48)], 2.0, 25.0)
    assert len(twenty_four) == 50 and counts.repeated == 2
    # Variable frame rate, starting late: a pause of 0.2 s repeats the frame shown through it.
    vfr = [1.0, 1.04, 1.08, 1.28, 1.32]
    assert place(np.arange(5), vfr, 1.36, 25.0)[0].tolist() == [0, 1, 2, 2, 2, 2, 2, 3, 4]
    # Millisecond timestamps of a 25-fps WebM, and a rate the model does not state.
    assert placed_frames([round(k * 0.04, 3) for k in range(100)], 4.0, 25.0) == 100
    assert placed_frames(vfr, 1.36, None) == 5


def test_placement_streams_one_frame_at_a_time():
    starts = np.cumsum(np.random.default_rng(0).uniform(0.005, 0.09, 400))
    whole = place(np.arange(400), starts, None, 25.0)[0]
    placer = FramePlacer(25.0)
    counts = np.concatenate([placer.take(starts[i:i + 7]) for i in range(0, 400, 7)] + [[placer.finish(None)]])
    assert np.repeat(np.arange(400), counts).tolist() == whole.tolist()


def test_crop_box_centres_the_picture_and_widens_a_region():
    assert crop_box(Region(0, 0, 1080, 1920), 1.0, 1080, 1920) == Region(0, 420, 1080, 1080)
    assert crop_box(Region(0, 0, 1920, 1080), 1.0, 1920, 1080) == Region(420, 0, 1080, 1080)
    assert crop_box(Region(0, 0, 1920, 1080), 210 / 260, 1920, 1080) == Region(524, 0, 872, 1080)
    # A tight region about a signer gets the background beside it, kept within the picture.
    assert crop_box(Region(100, 200, 300, 600), 1.0, 1280, 720) == Region(0, 120, 600, 600)
    assert crop_box(Region(1000, 100, 200, 200), 1.0, 1280, 720) == Region(1000, 100, 200, 200)


TARGET = FrameTarget(24, 24, 25.0, SourceFraming(1.0))


def _video(height: int, width: int, frames: int = 10) -> np.ndarray:
    """Frames of a bright square in the middle of a dark picture, getting brighter frame by frame."""
    video = np.full((frames, height, width, 3), 30, np.uint8)
    side = min(height, width) // 2
    top, left = (height - side) // 2, (width - side) // 2
    video[:, top:top + side, left:left + side] = (120 + 10 * np.arange(frames))[:, None, None, None]
    return video


def test_a_video_like_the_training_videos_comes_out_unchanged_bit_for_bit():
    video = _video(24, 24)
    frames, record = frame_decoded(video, [k / 25 for k in range(10)], 0.4, None, 25.0, TARGET)
    assert np.array_equal(frames, video)
    assert record.unchanged and record.summary() == "10 frames at 25 fps"


def test_portrait_landscape_and_letterbox():
    portrait = _video(64, 32)
    frames, record = frame_decoded(portrait, [k / 25 for k in range(10)], None, None, 25.0, TARGET)
    assert record.box == (0, 16, 32, 32) and record.framing == CROP
    # The square fills the middle half of the crop, as in training.
    assert frames[0, 12, 12, 0] > 100 and frames[0, 1, 1, 0] < 40
    boxed, record = frame_decoded(_video(32, 64), [k / 25 for k in range(10)], None, None, 25.0, TARGET,
                                  FramingOptions(LETTERBOX))
    assert record.padding == (0, 6, 0, 6) and record.box == (0, 0, 64, 32)
    assert boxed[:, :6].max() == 0 and boxed[:, -6:].max() == 0 and boxed[:, 12, 12, 0].min() > 100
    assert "letterboxed" in record.summary()


def test_the_model_aspect_is_the_source_pictures_not_the_frame_size():
    """Phoenix's frames are its 210x260 pictures squashed to 256x256: a phone video is cut to 210:260 first."""
    phoenix = FrameTarget(256, 256, 25.0, SourceFraming.of_size(210, 260))
    _, record = frame_decoded(_video(1080, 1920, 2), [0, 0.04], None, None, 25.0, phoenix)
    assert record.box == (524, 0, 872, 1080) and record.size == (256, 256)


def test_region_is_in_the_upright_picture_and_checked():
    video = _video(40, 80, 3)
    target = FrameTarget(20, 20, None, SourceFraming(1.0))
    frames, record = frame_decoded(video, [0, 0.04, 0.08], None, None, 25.0, target,
                                   FramingOptions(region=Region(50, 0, 30, 40)))
    assert record.box == (40, 0, 40, 40) and record.region == (50, 0, 30, 40)
    assert "region 50,0,30,40" in record.summary()
    # Stored landscape, shown portrait (90 degrees): the region is of the 40x80 upright picture.
    turned = (0, -65536, 0, 65536, 0, 0, 0, 0, 1 << 30)
    with pytest.raises(FramingError, match="reaches past the upright picture, 40x80"):
        VideoFramer(target, FramingOptions(region=Region(0, 0, 80, 40)), turned, (40, 80), 25.0, "phone.mp4")
    with pytest.raises(ValueError, match="x,y,width,height"):
        Region.parse("1,2,3")
    assert Region.parse(" 1, 2,3,4") == Region(1, 2, 3, 4)


def test_streamed_framing_equals_whole_and_holds_little(monkeypatch):
    """30 fps, rotated, with an audio track: read a chunk at a time (a few frames of 1080p-like size) as whole."""
    monkeypatch.setattr("qslr.pipelines.framing.CHUNK_PIXELS", 3 * 64 * 96)
    video = _video(64, 96, 30)
    data = _encoded(list(video), 30.0, extras=StreamExtras(270, audio=True))
    reader = FramedReader(data, TARGET)
    chunks = list(reader.chunks())
    assert max(len(c) for c in chunks) <= 3
    assert reader.record.rotation == 270 and reader.record.frames_in == 30 and reader.record.frames_out == 25
    probe = probe_video(data)
    whole, record = frame_decoded(read_frames(data), probe.starts, probe.end, read_display_matrix(data), probe.fps,
                                  TARGET)
    assert np.array_equal(np.concatenate(chunks), whole) and record == reader.record
    assert read_framed(data, TARGET)[0].shape == (25, 24, 24, 3)


def test_frames_decoded_by_dali_are_framed_where_they_lie_as_numpy_ones_are():
    """DALI hands its frames on as tensors (in GPU memory with NVDEC): turned, cut and placed the same."""
    torch = pytest.importorskip("torch")
    video = _video(40, 64, 12)
    turned = (0, 65536, 0, -65536, 0, 0, 0, 0, 1 << 30)  # 90 degrees clockwise
    starts = [k / 30 for k in range(12)]
    options = FramingOptions(LETTERBOX, Region(0, 8, 40, 40))
    as_numpy = frame_decoded(video, starts, 0.4, turned, 30.0, TARGET, options)
    as_tensor = frame_decoded(torch.from_numpy(video), starts, 0.4, turned, 30.0, TARGET, options)
    assert np.array_equal(as_numpy[0], as_tensor[0]) and as_numpy[1] == as_tensor[1]
    assert as_numpy[1].rotation == 270 and as_numpy[1].frames_out == 10
