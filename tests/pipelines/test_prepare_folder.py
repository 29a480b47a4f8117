"""`qslr data prepare folder`: a team's own videos and an annotation table -> a prepared dataset, with the rules of
the front ends (rotation, frame rate, framing) and the preparations' refusals, resuming and locks; end to end to
training steps and `qslr recognise`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from small_model import SMALL_MODEL

from qslr.pipelines.corpora import CorpusFormatError, folder_video_id, read_folder
from qslr.pipelines.folder_lock import folder_lock
from qslr.pipelines.prepare import PreparationFailed, PrepareSettings, prepare_corpus
from qslr.pipelines.prepared import PreparedDataset
from qslr.pipelines.source_framing import SourceFraming
from qslr.pipelines.video_io import encode_video, read_frames
from qslr.tools.cli import cli
from qslr.tools.recorded_videos import KINDS, record
from qslr.train.checkpointing import load_trained
from qslr.train.config import load_config
from qslr.train.trainer import train

# Each clip of the tiny corpus recorded as one of these, in turn: what a team's phones and webcams give.
PHONE_LIKE = ("phone", "webcam", "rotated-90", "fps-60", "landscape-full", "hevc-10bit")
SCALE = 0.1  # pictures a tenth of 1080p: a phone's portrait video is 108x192 here


def _table(path: Path, rows: list[dict], delimiter: str = ",") -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, ["split", "file", "signer", "glosses"], delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def team_folder(tiny_corpus, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """The tiny corpus's clips as a team would have recorded them, in sub-folders, with a CSV table; and each
    video's id -> its prepared clip, to compare against."""
    prepared = PreparedDataset(tiny_corpus[0])
    root = tmp_path_factory.mktemp("team")
    rows, clips = [], {}
    takes = [(split, item) for split in ("train", "dev", "test") for item in prepared.records(split)]
    for index, (split, item) in enumerate(takes):
        kind = KINDS[PHONE_LIKE[index % len(PHONE_LIKE)]]
        (root / item.signer).mkdir(exist_ok=True)
        recording = record(prepared.video_path(item), kind, root / item.signer / f"{item.id} take 1", SCALE)
        file = str(recording.path.relative_to(root))
        rows.append({"split": {"dev": "val"}.get(split, split), "file": file, "signer": item.signer,
                     "glosses": item.glosses})
        clips[folder_video_id(file)] = str(prepared.video_path(item))
    _table(root / "annotations.csv", rows)
    return root, clips


def test_a_folder_table_is_read_by_name_with_refusals_by_line(tmp_path):
    (tmp_path / "a b.mp4").write_bytes(b"not looked at here")
    table = tmp_path / "takes.tsv"
    table.write_text("glosses\tsplit\tfile\tsigner\tnotes\n"
                     "HELLO YOU\ttrain\ta b.mp4\tana\tfirst take\n"
                     "\n"
                     "HELLO\tholdout\ta b.mp4\tana\t\n"
                     "HELLO\ttest\tmissing.mp4\tben\t\n"
                     "HELLO\ttest\ta b.mp4\n", encoding="utf-8")
    rows = list(read_folder(tmp_path))
    assert [(r.split, r.id, r.signer, r.annotation, r.where) for r in rows[:1]] == [
        ("train", "a_b", "ana", "HELLO YOU", f"{table}:2")]
    assert rows[0].frames == tmp_path / "a b.mp4"
    assert [(r.where, r.cause) for r in rows[1:]] == [
        (f"{table}:4", "unknown split name"), (f"{table}:5", "missing video file"), (f"{table}:6", "wrong field count")]
    table.write_text("video\tglosses\n", encoding="utf-8")
    with pytest.raises(CorpusFormatError, match=r"takes\.tsv:1: .* lacks file, signer, split"):
        list(read_folder(table))
    (tmp_path / "other.csv").write_text("file\n")
    with pytest.raises(CorpusFormatError, match="expected one annotation table .* found other.csv, takes.tsv"):
        list(read_folder(tmp_path))


def test_the_releases_refuse_the_folder_options(tmp_path):
    result = CliRunner().invoke(cli, ["data", "prepare", "phoenix2014", "--root", str(tmp_path), "--out",
                                      str(tmp_path / "out"), "--fps", "30"])
    assert result.exit_code == 2 and "--fps: only for `folder`" in result.output


@pytest.mark.slow
def test_phone_videos_prepare_train_and_are_recognised(team_folder, tiny_corpus, tmp_path):
    root, clips = team_folder
    out = tmp_path / "prepared"
    args = ["data", "prepare", "folder", "--root", str(root), "--out", str(out), "--size", "72x72", "--workers", "2"]
    with folder_lock(out, "a test holding it"):
        held = CliRunner().invoke(cli, args)
    assert held.exit_code == 1 and "prepared dataset in use by process" in held.output
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["complete"] and report["refused"] == [] and report["videos"] == len(clips)
    dataset = PreparedDataset(out)
    assert dataset.source_framing() == SourceFraming(1.0, "crop")
    original = PreparedDataset(tiny_corpus[0])
    assert [(r.signer, r.glosses) for r in dataset.records("dev")] == \
        [(r.signer, r.glosses) for r in original.records("dev")]
    for split in ("train", "dev", "test"):
        for item in dataset.records(split):
            assert (item.fps, item.height, item.width) == (25.0, 72, 72)
            frames, clip = read_frames(dataset.video_path(item)), read_frames(clips[item.id])
            # Upright, at 25 fps, the signer where the clip had it: within two frames of the clip's length (a
            # variable rate's last frame lasts up to 0.05 s), and close to its pixels (two lossy encodings and two
            # resizes apart; the phone's signer, at half its picture's height, was shrunk to 96 pixels and back).
            assert abs(len(frames) - len(clip)) <= 2, item.id
            shortest = min(len(frames), len(clip))
            assert np.abs(frames[:shortest].astype(int) - clip[:shortest]).mean() < 12, item.id
    # A rerun resumes every video; a run with other settings is refused.
    rerun = CliRunner().invoke(cli, [*args, "--json"])
    assert rerun.exit_code == 0 and json.loads(rerun.stdout)["resumed"] == len(clips)
    other = CliRunner().invoke(cli, [*args[:-4], "--size", "72x72", "--workers", "1", "--framing", "letterbox"])
    assert other.exit_code == 1 and "--overwrite" in other.output

    run = tmp_path / "run"
    train(load_config("synthetic", [f"data.root={out}", f"train.work_dir={run}", "train.epochs=1",
                                    "train.max_steps=2", *SMALL_MODEL]))
    checkpoint = run / "checkpoints" / "last.pt"
    assert load_trained(checkpoint).input.source_aspect == 1.0
    phone = next(Path(root, row["file"]) for row in csv.DictReader((root / "annotations.csv").open())
                 if row["split"] == "test")
    recognised = CliRunner().invoke(cli, ["recognise", "--checkpoint", str(checkpoint), str(phone), "--json"])
    assert recognised.exit_code == 0, recognised.output
    answer = json.loads(recognised.stdout)
    assert answer["framing"]["size"] == [72, 72] and answer["framing"]["model_fps"] == 25.0


def test_mostly_refused_folders_fail_and_unreadable_videos_are_refused_by_line(tmp_path):
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    for name in ("dev", "test"):
        encode_video(tmp_path / f"{name}.mp4", [np.full((64, 48, 3), 90, np.uint8)] * 5, 30.0, "libx264")
    rows = [{"split": split, "file": f"{split}.mp4", "signer": "x", "glosses": "A"} for split in ("dev", "test")]
    table = _table(tmp_path / "table.csv", [{"split": "train", "file": "broken.mp4", "signer": "x", "glosses": "A"},
                                            *rows])
    with pytest.raises(PreparationFailed, match="folder: 1 of 3 rows refused .* nothing left for train"):
        prepare_corpus("folder", table, tmp_path / "out", PrepareSettings(48, 48, workers=1), show_progress=False)
    (refusal,) = json.loads((tmp_path / "out" / "prepare-report.json").read_text())["refused"]
    assert (refusal["cause"], refusal["where"]) == ("unreadable video", f"{table}:2")
    assert str(tmp_path / "broken.mp4") in refusal["reason"]
    assert not (tmp_path / "out" / "vocab.json").exists()
