"""What the synthetic renderer knows of each sign, kept beside the corpus (sign_spans/<split>.jsonl), and its long
streams of one held-out signer signing sentences in a row (`qslr data synth --streams`)."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from qslr.pipelines.long_videos import JoinedVideo
from qslr.pipelines.prepared import DatasetFormatError, PreparedDataset
from qslr.pipelines.sign_spans import read_sign_spans, spans_path
from qslr.pipelines.synthetic.choreography import SENTENCE_PAUSE_FRAMES, choreograph
from qslr.pipelines.synthetic.corpus import plan_corpus, video_rng
from qslr.pipelines.synthetic.vocabulary import _AMPLITUDE, ANCHORS
from qslr.pipelines.video_io import read_video
from qslr.tools.cli import cli


def test_every_gloss_is_signed_where_its_span_says(tiny_corpus, tiny_spec):
    """Within a sign's frames the dominant hand stays around the sign's place (its motion's amplitude); the
    frames before and after it, transitions and rest, are elsewhere for some of them."""
    root = tiny_corpus[0]
    plan = plan_corpus(tiny_spec)
    utterances = {u.id: u for u in plan.utterances}
    checked = outside = 0
    for split in PreparedDataset(root).splits():
        spans = read_sign_spans(root, split)
        records = PreparedDataset(root).records(split)
        assert list(spans) == [r.id for r in records]
        for record in records:
            signs = spans[record.id]
            assert [s.gloss for s in signs] == record.gloss_list()
            assert all(a.stop <= b.first_frame for a, b in zip(signs, signs[1:], strict=False))
            assert signs[0].first_frame > 0 and signs[-1].stop < record.num_frames
            utterance = utterances[record.id]
            hand = choreograph(list(utterance.signs), utterance.signer.speed, video_rng(tiny_spec, utterance, 0))
            for span, sign in zip(signs, utterance.signs, strict=True):
                distance = np.hypot(*(hand.dominant.xy - ANCHORS[sign.anchor]).T)
                assert distance[span.first_frame:span.stop].max() < 1.6 * _AMPLITUDE, (record.id, span)
                outside += distance[max(0, span.first_frame - 3):span.first_frame].max() > 1.6 * _AMPLITUDE
                checked += 1
    assert checked >= 20 and outside >= checked // 4


@pytest.fixture(scope="module")
def streamed(tmp_path_factory):
    out = tmp_path_factory.mktemp("streams") / "ds"
    result = CliRunner().invoke(cli, ["data", "synth", "--out", str(out), "--videos", "40", "--vocab", "8",
                                      "--signers", "5", "--heldout-signers", "2", "--max-glosses", "4",
                                      "--dev-fraction", "0.1", "--test-fraction", "0.25", "--seed", "5",
                                      "--streams", "3", "--stream-sentences", "4", "--workers", "2"])
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.slow
def test_a_stream_is_one_held_out_signer_signing_their_test_sentences_in_a_row(streamed):
    dataset = PreparedDataset(streamed)
    test = {r.id: r for r in dataset.records("test")}
    heldout = sorted({r.signer for r in test.values()})
    assert len(heldout) == 2
    for index in range(3):
        video = streamed / "streams" / f"stream-{index}.webm"
        stream = JoinedVideo.read(video)
        frames, fps = read_video(video)
        assert len(frames) == stream.frames and fps == stream.fps == 25.0 and stream.video == video.name
        assert len(stream.parts) == 4 and {test[p.id].signer for p in stream.parts} == {heldout[index % 2]}
        assert stream.glosses == " ".join(test[p.id].glosses for p in stream.parts)
        assert [s.gloss for s in stream.signs] == stream.glosses.split()
        assert all(a.stop <= b.first_frame for a, b in zip(stream.signs, stream.signs[1:], strict=False))
        assert stream.signs[-1].stop < stream.frames
        for part, after in zip(stream.parts, stream.parts[1:], strict=False):
            # A pause between sentences: back to rest and a wait, then a transition into the next.
            assert after.first_frame - (part.first_frame + part.frames) >= SENTENCE_PAUSE_FRAMES[0] + 4
    # Stream 2 is signer 0 again, with the sentences after stream 0's.
    first, third = JoinedVideo.read(streamed / "streams" / "stream-0.webm"), JoinedVideo.read(
        streamed / "streams" / "stream-2.webm")
    own = [r.id for r in test.values() if r.signer == heldout[0]]
    assert [p.id for p in first.parts + third.parts] == [own[i % len(own)] for i in range(8)]


@pytest.mark.slow
def test_the_corpus_beside_the_streams_is_the_corpus_without_them(streamed, tmp_path):
    """Streams are drawn from generators of their own: the clips, annotations and spans are the same bit for bit."""
    CliRunner().invoke(cli, ["data", "synth", "--out", str(tmp_path / "ds"), "--videos", "40", "--vocab", "8",
                             "--signers", "5", "--heldout-signers", "2", "--max-glosses", "4", "--dev-fraction",
                             "0.1", "--test-fraction", "0.25", "--seed", "5", "--workers", "2"])
    for path in ["test.jsonl", "vocab.json", "sign_spans/test.jsonl", "videos/test/synth-test-00003.webm"]:
        assert (tmp_path / "ds" / path).read_bytes() == (streamed / path).read_bytes(), path
    assert not (tmp_path / "ds" / "streams").exists()


def test_a_bad_span_file_is_refused_naming_the_line(tmp_path):
    path = spans_path(tmp_path, "test")
    path.parent.mkdir()
    path.write_text('{"id": "a", "signs": [{"gloss": "KALU", "first_frame": 3, "frames": 4}]}\n'
                    '{"id": "b", "signs": [{"gloss": "KALU", "first_frame": -1, "frames": 4}]}\n')
    with pytest.raises(DatasetFormatError, match=r"test.jsonl:2: invalid sign"):
        read_sign_spans(tmp_path, "test")
    assert read_sign_spans(tmp_path, "dev") is None


@pytest.mark.parametrize(("args", "message"), [(["--streams", "-1"], "--streams must be 0 or more"),
                                               (["--stream-sentences", "0"], "--stream-sentences must be at least 1")])
def test_an_impossible_stream_request_is_refused_in_one_line(tmp_path, args, message):
    result = CliRunner().invoke(cli, ["data", "synth", "--out", str(tmp_path / "ds"), *args])
    assert result.exit_code == 1 and message in result.output and len(result.output.strip().splitlines()) == 1
