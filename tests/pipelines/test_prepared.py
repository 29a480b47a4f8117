"""The prepared-dataset contract: records, vocabulary and atomic output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from qslr.pipelines.atomic_output import OutputExistsError, atomic_directory, write_text_atomic
from qslr.pipelines.prepared import (
    DatasetFormatError,
    PreparedDataset,
    VideoRecord,
    build_vocab,
    read_records,
    read_vocab,
    write_records,
    write_vocab,
)

RECORD = VideoRecord("v1", "videos/train/v1.webm", 40, "Signer01", "KALU MIRO", 25.0, 72, 72)


def row(**change) -> str:
    data = {**RECORD.__dict__, **change}
    return json.dumps({k: v for k, v in data.items() if v is not ...})


def test_records_round_trip(tmp_path):
    records = [RECORD, VideoRecord("v2", "videos/train/v2.webm", 12, "Signer02", "", 25.0, 72, 72)]
    write_records(tmp_path / "train.jsonl", records)
    assert read_records(tmp_path / "train.jsonl") == records


@pytest.mark.parametrize("line, message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    (row(num_frames=...), "missing field(s) num_frames"),
    (row(extra=1), "unknown field(s) extra"),
    (row(num_frames=0), "invalid num_frames 0"),
    (row(num_frames=True), "invalid num_frames True"),
    (row(video="/abs/path.webm"), "invalid video"),
    (row(id="has space"), "invalid id"),
    (row(fps="25"), "invalid fps"),
])
def test_bad_rows_name_the_file_and_line(tmp_path, line, message):
    path = tmp_path / "dev.jsonl"
    path.write_text(row() + "\n" + line + "\n")
    with pytest.raises(DatasetFormatError) as error:
        read_records(path)
    assert str(error.value).startswith(f"{path}:2: ") and message in str(error.value)


def test_duplicate_ids_are_refused(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(row() + "\n" + row() + "\n")
    with pytest.raises(DatasetFormatError, match="duplicate id 'v1' \\(first on line 1\\)"):
        read_records(path)


def test_vocab_is_the_sorted_union_numbered_from_one(tmp_path):
    vocab = build_vocab([["MIRO", "KALU"], ["__ON__", "KALU", "loc-NORD"], []])
    assert vocab == {"KALU": 1, "MIRO": 2, "__ON__": 3, "loc-NORD": 4}
    write_vocab(tmp_path / "vocab.json", vocab)
    assert read_vocab(tmp_path / "vocab.json") == vocab


@pytest.mark.parametrize("content", ['{"A": 0}', '{"A": 1, "B": 3}', "[]", "{}", '{"A": "1"}'])
def test_vocab_ids_must_be_one_to_n(tmp_path, content):
    (tmp_path / "vocab.json").write_text(content)
    with pytest.raises(DatasetFormatError, match="vocab.json"):
        read_vocab(tmp_path / "vocab.json")


def test_a_folder_without_vocab_is_not_a_dataset(tmp_path):
    with pytest.raises(DatasetFormatError, match="vocab.json is missing"):
        PreparedDataset(tmp_path)


def test_atomic_directory_appears_only_on_success(tmp_path):
    with pytest.raises(RuntimeError), atomic_directory(tmp_path / "out") as staging:
        (staging / "half.txt").write_text("x")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with atomic_directory(tmp_path / "out") as staging:
        (staging / "done.txt").write_text("x")
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and (tmp_path / "out" / "done.txt").exists()
    with pytest.raises(OutputExistsError, match="not empty"), atomic_directory(tmp_path / "out"):
        pass
    with atomic_directory(tmp_path / "out", overwrite=True) as staging:
        (staging / "new.txt").write_text("y")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_write_text_atomic_replaces_whole_files(tmp_path):
    target = tmp_path / "a" / "f.txt"
    write_text_atomic(target, "one")
    write_text_atomic(target, "two")
    assert target.read_text() == "two" and [p.name for p in target.parent.iterdir()] == ["f.txt"]


class _RunsCode:
    """What a hostile gloss_dict.npy would hold: unpickling it calls a function of its choosing."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_the_original_gloss_dict_is_read_without_running_its_pickle(tmp_path):
    from qslr.pipelines.prepared import read_any_vocab

    original = tmp_path / "gloss_dict.npy"
    np.save(original, {"HALLO": [1, 12], "REGEN": [2, 7], "SONNE": [3, 1]})  # the original code's layout
    assert read_any_vocab(original) == {"HALLO": 1, "REGEN": 2, "SONNE": 3}
    hostile, marker = tmp_path / "hostile.npy", tmp_path / "ran"
    np.save(hostile, np.array({"HALLO": [1, 1], "X": _RunsCode(marker)}, dtype=object))
    with pytest.raises(DatasetFormatError, match=r"hostile.npy: not a gloss dictionary \(it names .*could run code"):
        read_any_vocab(hostile)
    assert not marker.exists()
    plain = tmp_path / "numbers.npy"
    np.save(plain, np.arange(3))
    with pytest.raises(DatasetFormatError, match="not a pickled dictionary"):
        read_any_vocab(plain)
