"""The served decoder without Triton: request options checked one by one, settings from a training config
and back from config parameters, the frame rate a clip's spans use, and the output of several windows decoded in
segments as a live stream is."""

from __future__ import annotations

import math
from dataclasses import asdict

import numpy as np
import pytest
import torch

from qslr.deploy.serving.served_decoding import DecodeOptions, DecoderSettings, ServedDecoder
from qslr.model.decoding import CTCDecoder
from qslr.model.streaming_decoding import SegmentRule, decode_in_segments

VOCAB = {f"G{i}": i for i in range(1, 9)}


@pytest.fixture(scope="module")
def decoder() -> ServedDecoder:
    return ServedDecoder(VOCAB, DecoderSettings(beam_size=4, max_beam_size=6, max_top_k=5, fps=25.0))


@pytest.mark.parametrize("parameters, expected", [
    ({}, DecodeOptions(4, 1)),
    ({"beam_size": 0}, DecodeOptions(0, 1)),
    ({"beam_size": 6, "top_k": 5}, DecodeOptions(6, 5)),
    ({"top_k": 4}, DecodeOptions(4, 4)),
    ({"beam_size": 0, "top_k": 1}, DecodeOptions(0, 1)),
])
def test_good_options(decoder, parameters, expected):
    assert decoder.options(parameters) == expected


@pytest.mark.parametrize("parameters, message", [
    ({"beam_size": 7}, r"beam_size must be an integer in 0\.\.6 \(0: greedy\), got 7"),
    ({"beam_size": True}, "beam_size must be an integer"),
    ({"beam_size": "3"}, "beam_size must be an integer"),
    ({"top_k": 0}, r"top_k must be an integer in 1\.\.5, got 0"),
    ({"top_k": 6, "beam_size": 6}, r"top_k must be an integer in 1\.\.5, got 6"),
    ({"top_k": False}, "top_k must be an integer"),
    ({"top_k": 2.0}, "top_k must be an integer"),
    ({"top_k": 5}, "top_k 5 needs a beam at least as wide, got beam_size 4$"),
    ({"top_k": 2, "beam_size": 0}, r"got beam_size 0 \(greedy gives one answer\)"),
])
def test_bad_options(decoder, parameters, message):
    with pytest.raises(ValueError, match=message):
        decoder.options(parameters)


def test_settings_follow_the_training_config_and_survive_the_config_parameters():
    greedy = DecoderSettings.for_model({"method": "greedy", "beam_size": 10, "beam_size_token": 30}, 4, 25.0)
    assert (greedy.beam_size, greedy.max_beam_size, greedy.beam_size_token, greedy.max_top_k) == (0, 10, 30, 10)
    wide = DecoderSettings.for_model({"method": "beam", "beam_size": 12}, 2, None, max_beam_size=10, max_top_k=20)
    assert (wide.beam_size, wide.max_beam_size, wide.max_top_k, wide.fps, wide.frames_per_step) == (12, 12, 12, 0.0, 2)
    narrow = DecoderSettings.for_model({}, 4, 30.0, beam_size=3, max_beam_size=3)
    assert (narrow.beam_size, narrow.max_top_k) == (3, 3)  # no more alternatives than the widest beam holds
    for settings in (greedy, wide, narrow):
        # As the repository builder writes them into the ctc_decoder config: strings.
        assert DecoderSettings.from_parameters({k: str(v) for k, v in asdict(settings).items()}) == settings
    with pytest.raises(ValueError, match="outside"):
        DecoderSettings(beam_size=11, max_beam_size=10)


def test_the_repeat_rule_follows_the_training_config_and_a_repository_without_it_merges():
    assert DecoderSettings.for_model({}, 4, 25.0).merge_repeats  # the original's rule
    kept = DecoderSettings.for_model({"merge_repeats": False}, 4, 25.0)
    assert not kept.merge_repeats
    parameters = {k: str(v) for k, v in asdict(kept).items()}
    assert DecoderSettings.from_parameters(parameters) == kept
    del parameters["merge_repeats"]  # a repository built before the setting existed
    assert DecoderSettings.from_parameters(parameters).merge_repeats
    with pytest.raises(ValueError, match="merge_repeats must be True or False, got 'no'"):
        DecoderSettings.from_parameters({**parameters, "merge_repeats": "no"})


@pytest.mark.parametrize("merge", [True, False])
def test_the_served_decoder_keeps_a_sign_made_twice_only_under_ctc_s_own_rule(merge):
    # G3, a blank, G3 again, then G5: the original's rule answers G3 G5, CTC's G3 G3 G5.
    labels = [0, 3, 3, 0, 0, 3, 0, 5, 0]
    log_probs = np.full((len(labels), len(VOCAB) + 1), -12.0, np.float32)
    log_probs[np.arange(len(labels)), labels] = 0.0
    served = ServedDecoder(VOCAB, DecoderSettings(beam_size=4, merge_repeats=merge))
    for width in (0, 4):
        result = served.recognise(log_probs, len(labels), 4 * len(labels), 25.0, DecodeOptions(width, 1))
        assert result.glosses == (["G3", "G5"] if merge else ["G3", "G3", "G5"])


def test_a_clip_is_decoded_as_ctc_decoder_decodes_it_with_its_or_the_models_rate(decoder):
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 1, (20, len(VOCAB) + 1)).astype(np.float32)
    logits[:, 0] += 1.5
    log_probs = torch.from_numpy(logits).log_softmax(-1).numpy()
    (alternatives,) = CTCDecoder(VOCAB, "beam", beam_size=6).decode_alternatives(log_probs[None], [18], 3)
    result = decoder.recognise(log_probs, 18, 70, 50.0, DecodeOptions(6, 3))
    assert (result.glosses, result.steps, result.score) == (alternatives[0].glosses, alternatives[0].steps,
                                                            alternatives[0].score)
    assert [a.glosses for a in result.alternatives] == [h.glosses for h in alternatives]
    assert result.glosses and result.start_s[0] == alternatives[0].steps[0] * 4 / 50.0
    unstated = decoder.recognise(log_probs, 18, 70, 0.0, DecodeOptions(6, 3))  # the model's 25 fps
    assert unstated.start_s == pytest.approx([2 * s for s in result.start_s])
    unknown = ServedDecoder(VOCAB, DecoderSettings()).recognise(log_probs, 18, 70, None, DecodeOptions(4))
    assert unknown.glosses and all(math.isnan(v) for v in unknown.start_s + unknown.end_s)


def test_the_output_of_several_windows_is_decoded_in_segments_as_a_stream_of_it_is(decoder):
    """Pauses (the blank nearly sure) between signs: the segmented answer is `decode_in_segments`' own, and a
    stream of the same steps pushed in two pieces ends with it; only the valid steps are read."""
    rng = np.random.default_rng(1)
    labels = [0, 0, 3, 3, 0, 0, 5, 0, 0, 0, 2, 0, 0, 7, 7, 0] * 3
    logits = rng.normal(0, 1, (len(labels) + 4, len(VOCAB) + 1)).astype(np.float32)
    logits[np.arange(len(labels)), labels] += 9.0
    log_probs = torch.from_numpy(logits).log_softmax(-1).numpy()
    options = DecodeOptions(6, 2)
    result = decoder.recognise(log_probs, len(labels), 4 * len(labels), 25.0, options, in_segments=True)
    expected = decode_in_segments(decoder.beams[6], log_probs[:len(labels)], decoder.settings.segment_rule, 2)
    assert (result.glosses, result.steps, result.score) == (expected[0].glosses, expected[0].steps, expected[0].score)
    assert result.glosses == ["G3", "G5", "G2", "G7"] * 3 and len(result.alternatives) == 2
    stream = decoder.streaming(options)
    stream.push(log_probs[:10])
    assert [g.gloss for g in stream.final] == ["G3", "G5"]  # committed at the pauses after them
    stream.push(log_probs[10:len(labels)])
    assert decoder.recognition(stream.finish(), 4 * len(labels), 25.0) == result


def test_a_repository_built_before_segments_takes_today_s_rule_and_a_bad_rule_fails_at_load():
    parameters = {k: str(v) for k, v in asdict(DecoderSettings(commit_blank=0.95, max_segment_steps=32)).items()}
    assert DecoderSettings.from_parameters(parameters).segment_rule == SegmentRule(0.95, 32)
    del parameters["commit_blank"], parameters["max_segment_steps"]
    assert DecoderSettings.from_parameters(parameters).segment_rule == SegmentRule()
    with pytest.raises(ValueError, match="must lie in"):
        DecoderSettings(commit_blank=0.3)
