"""The synthetic corpus: determinism, the prepared format, decodable videos, held-out signers."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from qslr.pipelines.prepared import PreparedDataset, build_vocab
from qslr.pipelines.stm import read_stm
from qslr.pipelines.synthetic import phoenix_raw
from qslr.pipelines.synthetic.choreography import choreograph
from qslr.pipelines.synthetic.corpus import plan_corpus, video_rng
from qslr.pipelines.synthetic.generator import MANIFEST, generate_corpus, rendered_frames
from qslr.pipelines.synthetic.spec import SynthSpec, SynthSpecError
from qslr.pipelines.synthetic.vocabulary import ANCHORS, MOTIONS, make_vocabulary, max_vocabulary_size
from qslr.pipelines.video_io import read_frames


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_same_seed_gives_identical_files_whatever_the_worker_count(tiny_corpus, tiny_spec, tmp_path):
    prepared, raw = tiny_corpus
    generate_corpus(tiny_spec, tmp_path / "again", workers=1, phoenix_raw_out=tmp_path / "raw", show_progress=False)
    assert tree_digest(tmp_path / "again") == tree_digest(prepared)
    assert tree_digest(tmp_path / "raw") == tree_digest(raw)


def test_another_seed_gives_another_corpus(tiny_corpus, tiny_spec, tmp_path):
    generate_corpus(replace(tiny_spec, seed=tiny_spec.seed + 1), tmp_path / "other", workers=2, show_progress=False)
    first, second = tree_digest(tiny_corpus[0]), tree_digest(tmp_path / "other")
    assert first.keys() == second.keys()
    assert all(first[k] != second[k] for k in first if k.endswith(".webm"))


def test_prepared_format(tiny_corpus, tiny_spec):
    dataset = PreparedDataset(tiny_corpus[0])
    assert dataset.splits() == ["train", "dev", "test"]
    records = {split: dataset.records(split) for split in dataset.splits()}
    assert {s: len(r) for s, r in records.items()} == tiny_spec.split_sizes()
    all_glosses = [r.gloss_list() for rs in records.values() for r in rs]
    assert dataset.vocab == build_vocab(all_glosses)
    for split, rows in records.items():
        stm = read_stm(dataset.stm_path(split))
        expected = [(r.id, r.signer, r.gloss_list()) for r in rows]
        assert [(e.utterance, e.speaker, list(e.words)) for e in stm] == expected
        for r in rows:
            assert r.video == f"videos/{split}/{r.id}.webm" and dataset.video_path(r).is_file()
            assert (r.height, r.width, r.fps) == (tiny_spec.size, tiny_spec.size, tiny_spec.fps)
            glosses = r.gloss_list()
            assert tiny_spec.min_glosses <= len(glosses) <= tiny_spec.max_glosses
            assert all(a != b for a, b in zip(glosses, glosses[1:], strict=False)), "no gloss repeats back to back"
    manifest = json.loads((dataset.root / MANIFEST).read_text())
    assert manifest["spec"]["seed"] == tiny_spec.seed and len(manifest["signs"]) == tiny_spec.vocab


def test_every_video_decodes_to_its_declared_frame_count(tiny_corpus):
    dataset = PreparedDataset(tiny_corpus[0])
    for split in dataset.splits():
        for record in dataset.records(split):
            frames = read_frames(dataset.video_path(record))
            assert frames.shape == (record.num_frames, record.height, record.width, 3), record.id


def test_decoded_video_is_close_to_the_rendered_frames(tiny_corpus, tiny_spec):
    plan = plan_corpus(tiny_spec)
    utterance = plan.split("test")[0]
    decoded = read_frames(tiny_corpus[0] / f"videos/test/{utterance.id}.webm").astype(np.float32)
    rendered = rendered_frames(tiny_spec, utterance).astype(np.float32)
    # Lossy VP9 of noisy frames: the error stays around the camera-noise level, far below the content.
    assert np.abs(decoded - rendered).mean() < 8.0
    assert np.abs(rendered - rendered.mean(axis=0)).mean() > 1.0


def test_no_test_or_dev_signer_appears_in_train(tiny_corpus, tiny_spec):
    dataset = PreparedDataset(tiny_corpus[0])
    signers = {split: {r.signer for r in dataset.records(split)} for split in dataset.splits()}
    assert signers["train"].isdisjoint(signers["test"]) and signers["train"].isdisjoint(signers["dev"])
    assert len(signers["test"]) == tiny_spec.heldout_signers
    assert len(signers["train"]) == tiny_spec.signers - tiny_spec.heldout_signers


def test_the_hands_move_and_the_rest_of_the_frame_does_not(tiny_spec):
    utterance = plan_corpus(replace(tiny_spec, noise=0.0)).split("train")[0]
    frames = rendered_frames(replace(tiny_spec, noise=0.0), utterance).astype(np.int16)
    moving = (np.abs(np.diff(frames, axis=0)).max(axis=(0, 3)) > 0)
    # Hands and arms sweep part of the frame; the head and background corners stay still.
    assert 0.02 < moving.mean() < 0.6
    assert not moving[:4, :4].any() and not moving[:4, -4:].any()


@pytest.mark.parametrize("seed", [0, 1])
def test_signing_pace_is_that_of_the_real_corpora(seed):
    """About 12 frames per running gloss, as in Phoenix-2014's training set: slower signing costs the demo's
    rendering, decoding and training time in proportion, and lengthens CTC's all-blank stage."""
    spec = SynthSpec(videos=300, vocab=40, seed=seed)
    plan = plan_corpus(spec)
    frames = glosses = 0
    for utterance in plan.utterances:
        frames += choreograph(list(utterance.signs), utterance.signer.speed, video_rng(spec, utterance, 0)).num_frames
        glosses += len(utterance.signs)
    assert 10.0 <= frames / glosses <= 15.0


def test_raw_phoenix_layout(tiny_corpus):
    prepared, raw = tiny_corpus
    dataset = PreparedDataset(prepared)
    for split in dataset.splits():
        lines = phoenix_raw.corpus_csv_path(raw, split).read_text().splitlines()
        assert lines[0] == "id|folder|signer|annotation"
        rows = [line.split("|") for line in lines[1:]]
        records = dataset.records(split)
        assert [(r[0], r[2], r[3]) for r in rows] == [(x.id, x.signer, x.glosses) for x in records]
        for (video_id, folder, _, _), record in zip(rows, records, strict=True):
            split_dir = raw / phoenix_raw.CORPUS_DIR / phoenix_raw.FRAMES_DIR / split
            pngs = sorted(split_dir.glob(folder))
            assert len(pngs) == record.num_frames, video_id
            with Image.open(pngs[0]) as image:
                assert image.size == (phoenix_raw.FRAME_WIDTH, phoenix_raw.FRAME_HEIGHT) and image.mode == "RGB"


def test_vocabulary_signs_are_distinct_and_spread_over_places_and_motions():
    signs = make_vocabulary(max_vocabulary_size(), np.random.default_rng(0))
    keys = {(s.anchor, s.motion, s.handshape, s.orientation, s.two_handed) for s in signs}
    assert len(keys) == len(signs) and len({s.gloss for s in signs}) == len(signs)
    small = make_vocabulary(len(ANCHORS) * len(MOTIONS), np.random.default_rng(1))
    assert len({(s.anchor, s.motion) for s in small}) == len(small)


@pytest.mark.parametrize("change, message", [
    ({"videos": 0}, "--videos"),
    ({"videos": 4, "dev_fraction": 0.5, "test_fraction": 0.5}, "no training video"),
    ({"vocab": 1}, "--vocab 1 is too small"),
    ({"vocab": 10**6}, "exceeds"),
    ({"min_glosses": 5, "max_glosses": 3}, "--max-glosses"),
    ({"size": -8}, "--size"),
    ({"size": 63}, "--size"),
    ({"signers": 2, "heldout_signers": 2}, "--signers"),
    ({"noise": -0.1}, "--noise"),
    ({"repeat_share": 1.0}, "--repeat-share"),
])
def test_impossible_parameters_are_refused(change, message):
    with pytest.raises(SynthSpecError, match=message):
        replace(SynthSpec(), **change).validate(max_vocabulary_size())


@pytest.mark.parametrize("share", [0.0, 0.25])
def test_signs_repeat_back_to_back_at_the_share_asked_for(share):
    spec = SynthSpec(videos=600, vocab=12, max_glosses=8, repeat_share=share)
    plan = plan_corpus(spec)
    pairs = [(a, b) for u in plan.utterances for a, b in zip(u.signs, u.signs[1:], strict=False)]
    repeats = sum(a.gloss == b.gloss for a, b in pairs)
    assert len(pairs) > 1000
    # Within three standard deviations of a binomial count of that share (none at all for a share of 0).
    assert abs(repeats - share * len(pairs)) <= 3 * (share * (1 - share) * len(pairs)) ** 0.5
