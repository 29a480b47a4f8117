"""`qslr data prepare`: each release's real layout end to end (to one training step), the generated Phoenix
corpus (same dataset as the generator's), resuming, bad rows, and preparations that must fail."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner
from release_layouts import (
    FRAMES_PER_VIDEO,
    PHOENIX2014T_ROWS,
    RELEASES,
    build_phoenix2014t,
    phoenix2014t_csv,
    phoenix2014t_frame_folder,
)
from small_model import SMALL_MODEL

import qslr.pipelines.prepare as prepare_module
from qslr.pipelines.corpora import CorpusFormatError
from qslr.pipelines.prepare import PreparationFailed, PreparationStopped, PrepareSettings, prepare_corpus
from qslr.pipelines.prepared import DatasetFormatError, PreparedDataset, write_vocab
from qslr.pipelines.stm import read_stm
from qslr.pipelines.synthetic import phoenix_raw
from qslr.pipelines.video_io import read_frames
from qslr.tools.cli import cli
from qslr.train.config import load_config
from qslr.train.trainer import train

SMALL = PrepareSettings(width=48, height=48, workers=1)
NORMALISATION = {"phoenix2014": "phoenix2014", "phoenix2014t": "phoenix2014", "csl-daily": "none"}
# A narrow model, and clips stretched to 48 frames so that CTC has room for the longest annotation (7 glosses).
ONE_STEP = [*SMALL_MODEL,
            "data.crop_size=56", "data.min_frames=48", "train.epochs=1", "train.max_steps=1"]


def copy_raw(raw: Path, tmp_path: Path) -> Path:
    target = tmp_path / "raw"
    shutil.copytree(raw, target)
    return target


def frame_folder(raw: Path, split: str, video_id: str) -> Path:
    return phoenix_raw.frame_dir(raw, split, video_id)


def csv_path(raw: Path, split: str) -> Path:
    return phoenix_raw.corpus_csv_path(raw, split)


@pytest.mark.slow
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
    assert report.resumed == 2 and report.videos == 6 and report.refused == []
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
    report = prepare_corpus("phoenix2014", raw, tmp_path / "out", replace(SMALL, max_refused=1.0),
                            show_progress=False)
    reasons = {(r.id, r.reason.split(" ")[0] + " " + r.reason.split(" ")[1]) for r in report.refused}
    assert reasons == {(ids[0], "missing frame"), (ids[1], "empty frame"), (ids[2], "corrupt frame"),
                       (ids[-1], "duplicate id")}
    assert report.splits["train"].refused == {"missing frame folder": 1, "empty frame folder": 1,
                                              "corrupt frame": 1, "duplicate id": 1}
    assert all(r.where.startswith(str(csv_path(raw, "train"))) for r in report.refused)
    dataset = PreparedDataset(tmp_path / "out")
    assert [r.id for r in dataset.records("train")] == [ids[-1]]
    assert not list((tmp_path / "out").rglob("*.partial"))


def test_unknown_glosses_against_a_fixed_vocabulary(raw_phoenix, tmp_path):
    synthetic, raw = raw_phoenix
    vocab = PreparedDataset(synthetic).vocab
    rows = {split: [line.split("|")[3].split() for line in csv_path(raw, split).read_text().splitlines()[1:]]
            for split in ("train", "dev", "test")}
    # A gloss whose rows can go without leaving a split empty.
    missing = next(g for g in sorted(vocab) if all(any(g not in glosses for glosses in r) for r in rows.values()))
    reduced = {g: i for i, g in enumerate((g for g in sorted(vocab) if g != missing), start=1)}
    write_vocab(tmp_path / "vocab.json", reduced)
    result = CliRunner().invoke(cli, ["data", "prepare", "phoenix2014", "--root", str(raw), "--out",
                                      str(tmp_path / "out"), "--size", "48x48", "--workers", "1", "--vocab",
                                      str(tmp_path / "vocab.json"), "--max-refused", "1"])
    assert result.exit_code == 0, result.output
    assert f"gloss(es) not in the vocabulary: {missing}" in result.output
    assert "gloss not in the vocabulary" in result.output  # the table's cause column
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


def prepare_cli(corpus: str, root: Path, out: Path, *extra: str):
    return CliRunner().invoke(cli, ["data", "prepare", corpus, "--root", str(root), "--out", str(out),
                                    "--size", "64x64", "--workers", "1", *extra])


@pytest.mark.parametrize("corpus", RELEASES)
@pytest.mark.slow
def test_each_release_layout_prepares_end_to_end_and_trains_a_step(corpus, tmp_path):
    (build, rows), normalisation = RELEASES[corpus], NORMALISATION[corpus]
    build(tmp_path / "raw")
    result = prepare_cli(corpus, tmp_path / "raw", tmp_path / "out", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["complete"] and report["refused"] == [] and report["videos"] == len(rows)
    dataset = PreparedDataset(tmp_path / "out")
    for split in ("train", "dev", "test"):
        records = dataset.records(split)
        assert [(r.id, r.signer, r.glosses) for r in records] == \
            [(r.name, r.signer, r.glosses) for r in rows if r.split == split]
        assert report["splits"][split]["videos"] == len(records)
        for record in records:
            assert read_frames(dataset.video_path(record)).shape == (FRAMES_PER_VIDEO, 64, 64, 3)
    outcome = train(load_config("synthetic", [f"data.root={tmp_path / 'out'}", f"train.work_dir={tmp_path / 'run'}",
                                              f"eval.normalisation={normalisation}", *ONE_STEP]))
    assert outcome.global_step == 1 and (tmp_path / "run" / "checkpoints" / "last.pt").is_file()


def test_a_preparation_that_prepares_nothing_fails_and_is_not_marked_complete(tmp_path):
    base = build_phoenix2014t(tmp_path / "raw")
    shutil.rmtree(base / "features" / "fullFrame-210x260px" / "dev")
    for folder in (base / "features" / "fullFrame-210x260px").glob("*/*"):
        shutil.rmtree(folder)
    result = prepare_cli("phoenix2014t", tmp_path / "raw", tmp_path / "out")
    assert result.exit_code == 1
    error = result.stderr.strip().splitlines()
    assert error[0] == ("Error: phoenix2014t: 5 of 5 rows refused (100.0%, more than --max-refused 5.0%), "
                        "nothing left for train, dev, test; not marked complete")
    assert error[1].split()[:4] == ["5", "missing", "frame", "folder"]
    assert f"{phoenix2014t_csv(base, 'train')}:2" in error[1] and len(error) == 3
    assert "refused by cause" in result.stdout and "missing frame folder 2" in result.stdout
    assert not (tmp_path / "out" / "vocab.json").exists()
    saved = json.loads((tmp_path / "out" / "prepare-report.json").read_text())
    assert not saved["complete"] and len(saved["refused"]) == 5 and saved["refused_by_cause"] == {
        "missing frame folder": 5}
    with pytest.raises(DatasetFormatError, match="not a prepared dataset"):
        PreparedDataset(tmp_path / "out")


def test_annotation_files_without_rows_fail(tmp_path):
    base = build_phoenix2014t(tmp_path / "raw")
    for split in ("train", "dev", "test"):
        csv = phoenix2014t_csv(base, split)
        csv.write_text(csv.read_text(encoding="utf-8").splitlines()[0] + "\n", encoding="utf-8")
    with pytest.raises(PreparationFailed, match="phoenix2014t: the annotations hold no rows; not marked complete"):
        prepare_corpus("phoenix2014t", base, tmp_path / "out", SMALL, show_progress=False)
    assert not (tmp_path / "out" / "vocab.json").exists()


def test_more_refused_rows_than_allowed_fail_and_a_rerun_allowing_them_resumes(tmp_path):
    base = build_phoenix2014t(tmp_path / "raw")
    dev = next(r for r in PHOENIX2014T_ROWS if r.split == "dev")
    shutil.rmtree(phoenix2014t_frame_folder(base, "dev", dev.name))
    result = prepare_cli("phoenix2014t", tmp_path / "raw", tmp_path / "out")
    assert result.exit_code == 1 and not (tmp_path / "out" / "vocab.json").exists()
    assert "1 of 5 rows refused (20.0%, more than --max-refused 5.0%)" in result.stderr
    result = prepare_cli("phoenix2014t", tmp_path / "raw", tmp_path / "out", "--max-refused", "0.25")
    assert result.exit_code == 0, result.output
    assert f"refused {dev.name} ({phoenix2014t_csv(base, 'dev')}:2): missing frame folder" in result.stdout
    assert "4 videos kept from an earlier run" in result.stdout and "missing frame folder 1" in result.stdout
    assert [r.id for r in PreparedDataset(tmp_path / "out").records("dev")] == \
        [r.name for r in PHOENIX2014T_ROWS if r.split == "dev" and r.name != dev.name]


def test_a_split_left_empty_fails_whatever_share_is_allowed(tmp_path):
    base = build_phoenix2014t(tmp_path / "raw")
    test = next(r for r in PHOENIX2014T_ROWS if r.split == "test")
    shutil.rmtree(phoenix2014t_frame_folder(base, "test", test.name))
    result = prepare_cli("phoenix2014t", tmp_path / "raw", tmp_path / "out", "--max-refused", "1")
    assert result.exit_code == 1
    assert "1 of 5 rows refused (20.0%), nothing left for test; not marked complete" in result.stderr
    assert not (tmp_path / "out" / "vocab.json").exists()
