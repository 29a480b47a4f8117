"""How a dataset's frames were made from its sources, recorded by every preparation before vocab.json and carried
by the checkpoints of models trained on it (version 4; version 3 files migrate with a stated default)."""

from __future__ import annotations

import json

import pytest

from qslr.model.checkpoints import load_checkpoint, load_file, save_file
from qslr.pipelines.prepare import PrepareSettings, prepare_corpus
from qslr.pipelines.prepared import FRAMING_FILE, DatasetFormatError, PreparedDataset
from qslr.pipelines.source_framing import SourceFraming
from qslr.train.checkpointing import load_trained


def test_phoenix_keeps_its_squashed_frames_and_says_so(raw_phoenix, tmp_path):
    _, raw = raw_phoenix
    prepare_corpus("phoenix2014", raw, tmp_path / "out", PrepareSettings(48, 48, workers=1), show_progress=False)
    dataset = PreparedDataset(tmp_path / "out")
    assert dataset.source_framing() == SourceFraming(210 / 260, "resize")
    assert all(record.width == record.height == 48 for record in dataset.records("train"))


def test_the_synthetic_corpus_and_its_checkpoints_record_native_squares(tiny_corpus, checkpoint):
    assert PreparedDataset(tiny_corpus[0]).source_framing() == SourceFraming(1.0, "resize")
    spec = load_trained(checkpoint).input
    assert (spec.source_aspect, spec.framing_rule) == (1.0, "resize")


def test_a_version_3_checkpoint_takes_its_frame_size_s_aspect(checkpoint, tmp_path):
    data = load_file(checkpoint)
    old_input = {key: value for key, value in data["input"].items() if key not in ("source_aspect", "framing_rule")}
    save_file(tmp_path / "v3.pt", {**data, "version": 3, "input": {**old_input, "width": 96, "height": 72}})
    spec = load_checkpoint(tmp_path / "v3.pt").input
    assert (spec.source_aspect, spec.framing_rule) == (96 / 72, "resize")
    assert spec.source_framing(72, 96) == SourceFraming(96 / 72, "resize")


def test_a_broken_framing_file_is_named(tiny_corpus, tmp_path):
    dataset = PreparedDataset(tiny_corpus[0])
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("vocab.json", FRAMING_FILE):
        (copy / name).write_text((dataset.root / name).read_text())
    (copy / FRAMING_FILE).write_text(json.dumps({"aspect": -1, "rule": "resize"}))
    with pytest.raises(DatasetFormatError, match=r"framing\.json: a source aspect must be a positive number"):
        PreparedDataset(copy).source_framing()
    (copy / FRAMING_FILE).write_text(json.dumps({"aspect": 1.0, "rule": "stretch"}))
    with pytest.raises(DatasetFormatError, match="unknown framing rule 'stretch'"):
        PreparedDataset(copy).source_framing()
