"""`qslr data concat`: clips of a split joined into one long video (VP9 and H.264) with the reference beside it,
each clip's frames and its glosses' sign frames where the reference says, and one-line refusals that leave no file
behind."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from qslr.pipelines.long_videos import JoinedVideo
from qslr.pipelines.prepared import PreparedDataset
from qslr.pipelines.sign_spans import read_sign_spans
from qslr.pipelines.video_io import probe_video, read_video
from qslr.tools.cli import cli

# Re-encoding a lossy video at CRF 18: the mean absolute difference per clip measured 0.8-1.7 grey levels (VP9)
# and 1.2-2.6 (H.264) on five clips of the demo corpus; the same clips one frame off differ by 2.8-5.8. So the
# bound only catches a wrong clip; the boundary check below (exact beats one frame off) catches a shifted one.
MAX_MEAN_DIFFERENCE = 3.0


@pytest.mark.parametrize(("codec", "suffix"), [("vp9", ".webm"), ("h264", ".mp4")])
def test_the_joined_video_holds_each_clip_where_its_reference_says(tiny_corpus, tmp_path, codec, suffix):
    root = tiny_corpus[0]
    dataset = PreparedDataset(root)
    records = dataset.records("train")[1:4]
    out = tmp_path / f"long{suffix}"
    result = CliRunner().invoke(cli, ["data", "concat", "--data", str(root), "--split", "train", "--clips", "3",
                                      "--first", "1", "--codec", codec, "--out", str(out)])
    assert result.exit_code == 0, result.output
    joined = JoinedVideo.read(out)
    assert json.loads(out.with_suffix(".json").read_text())["video"] == out.name
    assert probe_video(out).codec == codec
    frames, fps = read_video(out)
    clips = [read_video(dataset.video_path(r)) for r in records]
    assert fps == pytest.approx(clips[0][1]) and joined.fps == pytest.approx(fps)
    assert len(frames) == joined.frames == sum(len(c[0]) for c in clips)
    assert joined.glosses == " ".join(r.glosses for r in records)
    assert [p.id for p in joined.parts] == [r.id for r in records]
    # Each gloss's sign frames (the renderer's), where its clip lands.
    spans = read_sign_spans(root, "train")
    assert joined.signs == tuple(span.shifted(part.first_frame) for part in joined.parts for span in spans[part.id])
    assert [span.gloss for span in joined.signs] == joined.glosses.split()
    start = 0
    for part, (clip, _) in zip(joined.parts, clips, strict=True):
        assert (part.first_frame, part.frames) == (start, len(clip))
        assert (part.start_s, part.end_s) == pytest.approx((start / fps, (start + len(clip)) / fps))
        segment = frames[start:start + len(clip)].astype(np.int16)
        assert np.abs(segment - clip).mean() < MAX_MEAN_DIFFERENCE, part.id
        if start:  # the boundary is where the reference puts it, not a frame off
            assert np.abs(frames[start - 1:start - 1 + len(clip)].astype(np.int16) - clip).mean() > \
                np.abs(segment - clip).mean()
        start += len(clip)


@pytest.mark.parametrize(("arguments", "message"), [
    (["--clips", "99"], "the train split has"),
    (["--clips", "0"], "need at least one clip"),
    (["--codec", "h264"], "a h264 video is written as .mp4"),
])
def test_a_request_that_cannot_be_met_is_refused_in_one_line_and_leaves_no_file(tiny_corpus, tmp_path, arguments,
                                                                                message):
    out = tmp_path / "long.webm"
    result = CliRunner().invoke(cli, ["data", "concat", "--data", str(tiny_corpus[0]), "--split", "train",
                                      "--out", str(out), *arguments])
    assert result.exit_code != 0 and message in result.output, result.output
    assert list(tmp_path.iterdir()) == []
