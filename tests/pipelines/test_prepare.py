"""`qslr data prepare`: the Phoenix path end to end on a generated raw corpus, resuming, and bad rows."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

import pipelines.prepare as prepare_module
from pipelines.corpora import CorpusFormatError
from pipelines.prepare import PreparationStopped, PrepareSettings, prepare_corpus
from pipelines.prepared import DatasetFormatError, PreparedDataset, write_vocab
from pipelines.stm import read_stm
from pipelines.synthetic import phoenix_raw
from pipelines.video_io import read_frames
from tools.cli import cli

SMALL = PrepareSettings(width=48, height=48, workers=1)


def copy_raw(raw: Path, tmp_path: Path) -> Path:
    target = tmp_path / "raw"
    shutil.copytree(raw, target)
    return target


def frame_folder(raw: Path, split: str, video_id: str) -> Path:
    return phoenix_raw.frame_dir(raw, split, video_id)


def csv_path(raw: Path, split: str) -> Path:
    return phoenix_raw.corpus_csv_path(raw, split)


def test_prepared_phoenix_layout_matches_the_generated_dataset(raw_phoenix, tmp_path):
    synthetic, raw = raw_phoenix
    report = prepare_corpus("phoenix2014", raw, tmp_path / "out", PrepareSettings(width=48, height=48, workers=2),
                            show_progress=False)
    assert report.refused == [] and report.resumed == 0
    prepared, original = PreparedDataset(tmp_path / "out"), PreparedDataset(synthetic)
    assert prepared.vocab == original.vocab
    for split in ("train", "dev", "test"):
        ours, theirs = prepared.records(split), original.records(split)
        assert [(r.id, r.signer, r.glosses, r.num_frames) for r in ours] == \
            [(r.id, r.signer, r.glosses, r.num_frames) for r in theirs]
        assert read_stm(prepared.stm_path(split)) == read_stm(original.stm_path(split))
        for record in ours:
            frames = read_frames(prepared.video_path(record))
            assert frames.shape == (record.num_frames, 48, 48, 3) and (record.height, record.width) == (48, 48)


def test_a_crash_midway_leaves_no_dataset_and_a_rerun_resumes(raw_phoenix, tmp_path, monkeypatch):
    _, raw = raw_phoenix
    calls = {"n": 0}
    real = prepare_module.write_vp9

    def crashing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(prepare_module, "write_vp9", crashing)
    with pytest.raises(KeyboardInterrupt):
        prepare_corpus("phoenix2014", raw, tmp_path / "out", SMALL, show_progress=False)
    with pytest.raises(DatasetFormatError, match="not a prepared dataset"):
        PreparedDataset(tmp_path / "out")
    monkeypatch.setattr(prepare_module, "write_vp9", real)
    # A half-written file under the final name (say, copied by hand) is not taken as finished either.
    broken = next((tmp_path / "out" / "videos").rglob("*.webm"))
    broken.write_bytes(broken.read_bytes()[:100])
    report = prepare_corpus("phoenix2014", raw, tmp_path / "out", SMALL, show_progress=False)
    assert report.resumed == 2 and sum(report.videos.values()) == 6 and report.refused == []
    dataset = PreparedDataset(tmp_path / "out")
    for split in dataset.splits():
        for record in dataset.records(split):
            assert len(read_frames(dataset.video_path(record))) == record.num_frames


def test_bad_rows_are_reported_and_skipped(raw_phoenix, tmp_path):
    _, pristine = raw_phoenix
    raw = copy_raw(pristine, tmp_path)
    train = csv_path(raw, "train").read_text().splitlines()
    ids = [line.split("|")[0] for line in train[1:]]
    shutil.rmtree(frame_folder(raw, "train", ids[0]))  # missing frame folder
    for png in frame_folder(raw, "train", ids[1]).iterdir():  # empty frame folder
        png.unlink()
    first_png = sorted(frame_folder(raw, "train", ids[2]).iterdir())[0]  # corrupt frame
    first_png.write_bytes(b"not a png at all")
    csv_path(raw, "train").write_text("\n".join([*train, train[-1]]) + "\n")  # duplicate id
    report = prepare_corpus("phoenix2014", raw, tmp_path / "out", SMALL, show_progress=False)
    reasons = {(r.id, r.reason.split(" ")[0] + " " + r.reason.split(" ")[1]) for r in report.refused}
    assert reasons == {(ids[0], "missing frame"), (ids[1], "empty frame"), (ids[2], "corrupt frame"),
                       (ids[-1], "duplicate id")}
    assert all(r.where.startswith(str(csv_path(raw, "train"))) for r in report.refused)
    dataset = PreparedDataset(tmp_path / "out")
    assert [r.id for r in dataset.records("train")] == [ids[-1]]
    assert not list((tmp_path / "out").rglob("*.partial"))


def test_unknown_glosses_against_a_fixed_vocabulary(raw_phoenix, tmp_path):
    synthetic, raw = raw_phoenix
    vocab = PreparedDataset(synthetic).vocab
    test_row = csv_path(raw, "test").read_text().splitlines()[1].split("|")
    missing = test_row[3].split()[0]
    reduced = {g: i for i, g in enumerate((g for g in sorted(vocab) if g != missing), start=1)}
    write_vocab(tmp_path / "vocab.json", reduced)
    result = CliRunner().invoke(cli, ["data", "prepare", "phoenix2014", "--root", str(raw), "--out",
                                      str(tmp_path / "out"), "--size", "48x48", "--workers", "1", "--vocab",
                                      str(tmp_path / "vocab.json")])
    assert result.exit_code == 0, result.output
    assert f"gloss(es) not in the vocabulary: {missing}" in result.output
    assert PreparedDataset(tmp_path / "out").vocab == reduced


def test_strict_stops_at_the_first_bad_row(raw_phoenix, tmp_path):
    _, pristine = raw_phoenix
    raw = copy_raw(pristine, tmp_path)
    dev_id = csv_path(raw, "dev").read_text().splitlines()[1].split("|")[0]
    shutil.rmtree(frame_folder(raw, "dev", dev_id))
    with pytest.raises(PreparationStopped, match=f"video {dev_id}: missing frame folder"):
        prepare_corpus("phoenix2014", raw, tmp_path / "out", PrepareSettings(48, 48, workers=1, strict=True),
                       show_progress=False)
    assert not (tmp_path / "out" / "vocab.json").exists()


def test_a_wrong_header_is_a_one_line_error(raw_phoenix, tmp_path):
    _, pristine = raw_phoenix
    raw = copy_raw(pristine, tmp_path)
    path = csv_path(raw, "dev")
    path.write_text(path.read_text().replace("id|folder|signer|annotation", "name,folder,speaker,gloss", 1))
    with pytest.raises(CorpusFormatError, match="expected the header 'id|folder|signer|annotation'"):
        prepare_corpus("phoenix2014", raw, tmp_path / "out", SMALL, show_progress=False)
    result = CliRunner().invoke(cli, ["data", "prepare", "phoenix2014", "--root", str(raw), "--out",
                                      str(tmp_path / "out")])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert "dev.corpus.csv" in result.output


def test_an_unrelated_output_folder_is_refused(raw_phoenix, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("x")
    result = CliRunner().invoke(cli, ["data", "prepare", "phoenix2014", "--root", str(raw_phoenix[1]), "--out",
                                      str(tmp_path / "out"), "--size", "48x48"])
    assert result.exit_code == 1 and "--overwrite" in result.output
    assert (tmp_path / "out" / "mine.txt").exists()
