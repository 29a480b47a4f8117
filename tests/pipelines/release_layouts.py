"""The three raw corpus releases, built small in their real layouts for the preparation tests.

Folder and file names, headers, field order, example rows, frame naming and frame size are those of the
releases as distributed; the comment beside each fact names where it was seen (docs/corpora.md has the
details). Only the number of rows and of frames per video is cut down, and the pixels are drawn here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

FRAMES_PER_VIDEO = 8


@dataclass(frozen=True)
class Row:
    split: str
    name: str
    signer: str
    glosses: str
    text: str = ""


def _write_frames(folder: Path, names: list[str], width: int, height: int, seed: int) -> None:
    """A square moving over a plain background, one colour per video."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    background, square = rng.integers(0, 256, 3, dtype=np.uint8), rng.integers(0, 256, 3, dtype=np.uint8)
    side = min(width, height) // 4
    for index, name in enumerate(names):
        frame = np.empty((height, width, 3), np.uint8)
        frame[:] = background
        top, left = (height - side) * index // len(names), (width - side) * index // len(names)
        frame[top:top + side, left:left + side] = square
        Image.fromarray(frame).save(folder / name)


def _write_table(path: Path, header: str, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")
    return path


# ---- RWTH-PHOENIX-Weather 2014 (multisigner) ----
# Layout phoenix2014-release/phoenix-2014-multisigner/{annotations/manual/<split>.corpus.csv,
# features/fullFrame-210x260px/<split>/<id>/1/<id>.avi_pid0_fn000000-0.png}: VIPL-SLP/VAC_CSLR README and
# preprocess/dataset_preprocess.py (the folder column <id>/1/*.png, the 210x260 originals); the frame file name
# and its 0-based six-digit counter: the Phoenix-2014 branch of SLRT's TwoStreamNetwork video loader.
# Rows: ids, signers and glosses of VIPL-SLP/VAC_CSLR evaluation/slr_eval/phoenix2014-groundtruth-*.stm.
PHOENIX2014_ROWS = (
    Row("train", "01April_2010_Thursday_heute_default-2", "Signer04", "WEST WARM WEST BLEIBEN KUEHL"),
    Row("train", "01April_2010_Thursday_tagesschau_default-6", "Signer04", "MORGEN SIEBEN LAND VIERZEHN FLUSS"),
    Row("dev", "21April_2010_Wednesday_heute_default-15", "Signer08", "__ON__ SCHOEN ABEND WUENSCHEN __OFF__"),
    Row("test", "28January_2013_Monday_heute_default-12", "Signer01", "__ON__ TAG MILD __OFF__"),
)


def build_phoenix2014(parent: Path) -> Path:
    """The release under ``parent``; returns its phoenix-2014-multisigner folder."""
    base = parent / "phoenix2014-release" / "phoenix-2014-multisigner"
    for seed, split in enumerate(("train", "dev", "test")):
        rows = [r for r in PHOENIX2014_ROWS if r.split == split]
        _write_table(base / "annotations" / "manual" / f"{split}.corpus.csv", "id|folder|signer|annotation",
                     [f"{r.name}|{r.name}/1/*.png|{r.signer}|{r.glosses}" for r in rows])
        for offset, r in enumerate(rows):
            names = [f"{r.name}.avi_pid0_fn{i:06d}-0.png" for i in range(FRAMES_PER_VIDEO)]
            _write_frames(base / "features" / "fullFrame-210x260px" / split / r.name / "1", names, 210, 260,
                          seed * 10 + offset)
    return base


# ---- RWTH-PHOENIX-Weather 2014 T (release v3) ----
# Layout PHOENIX-2014-T-release-v3/PHOENIX-2014-T/annotations/manual/PHOENIX-2014-T.<split>.corpus.csv (and a
# train-complex-annotation file beside them), header name|video|start|end|speaker|orth|translation, the video
# column <name>/1/*.png, start and end -1: a user's listing and `head` of the release, and VIPL-SLP/VAC_CSLR
# issue 41. Frames features/fullFrame-210x260px/<split>/<name>/images0001.png, ... with no /1/ level:
# VAC_CSLR issue 41, hulianyuyy/CorrNet issue 46, paths under .../fullFrame-210x260px/train/<name>/images0001.png
# in several public scripts, and SLRT's TwoStreamNetwork loader (images{:04d}.png, counted from 1).
# Rows: train and dev rows as printed from the release's CSVs; the test names are test frame folders seen in
# public scripts, whose annotations were not found, so they borrow real glosses.
PHOENIX2014T_ROWS = (
    Row("train", "11August_2010_Wednesday_tagesschau-1", "Signer08", "JETZT WETTER MORGEN DONNERSTAG ZWOELF FEBRUAR",
        "und nun die wettervorhersage für morgen donnerstag den zwölften august"),
    Row("train", "11August_2010_Wednesday_tagesschau-4", "Signer08",
        "ORT REGEN DURCH REGEN KOENNEN UEBERSCHWEMMUNG KOENNEN",
        "mancherorts regnet es auch länger und ergiebig auch lokale überschwemmungen sind wieder möglich"),
    Row("dev", "11August_2010_Wednesday_tagesschau-2", "Signer08", "DRUCK TIEF KOMMEN",
        "tiefer luftdruck bestimmt in den nächsten tagen unser wetter"),
    Row("dev", "26January_2010_Tuesday_heute-107", "Signer03", "SCHOEN ABEND WUENSCHEN",
        "jetzt wünsche ich ihnen noch einen schönen abend"),
    Row("test", "01April_2011_Friday_tagesschau-3374", "Signer05", "DANN STARK SCHNEE SCHNEIEN KOMMEN",
        "am tag breiten sich die teilweise kräftigen schneefälle weiter aus"),
)


def phoenix2014t_csv(base: Path, split: str) -> Path:
    return base / "annotations" / "manual" / f"PHOENIX-2014-T.{split}.corpus.csv"


def phoenix2014t_frame_folder(base: Path, split: str, name: str) -> Path:
    return base / "features" / "fullFrame-210x260px" / split / name


def build_phoenix2014t(parent: Path, level_1: bool = False) -> Path:
    """The release under ``parent``; returns its PHOENIX-2014-T folder. ``level_1`` puts the frames where the CSV
    says (<name>/1/), as some re-packed copies do, instead of where the release has them."""
    base = parent / "PHOENIX-2014-T-release-v3" / "PHOENIX-2014-T"
    header = "name|video|start|end|speaker|orth|translation"
    for seed, split in enumerate(("train", "dev", "test")):
        rows = [r for r in PHOENIX2014T_ROWS if r.split == split]
        _write_table(phoenix2014t_csv(base, split), header,
                     [f"{r.name}|{r.name}/1/*.png|-1|-1|{r.signer}|{r.glosses}|{r.text}" for r in rows])
        for offset, r in enumerate(rows):
            folder = phoenix2014t_frame_folder(base, split, r.name) / ("1" if level_1 else "")
            _write_frames(folder, [f"images{i:04d}.png" for i in range(1, FRAMES_PER_VIDEO + 1)], 210, 260,
                          100 + seed * 10 + offset)
    _write_table(base / "annotations" / "manual" / "PHOENIX-2014-T.train-complex-annotation.corpus.csv", header,
                 [])
    return base


# ---- CSL-Daily ----
# Layout CSL-Daily/sentence_label/{video_map.txt,split_1.txt} and CSL-Daily/sentence/frames_512x512/<name>/:
# hulianyuyy/CorrNet preprocess/dataset_preprocess-CSL-Daily.py (file names, the video_map header
# index|name|length|gloss|char|word|postag, split values, frames <name>/*.jpg under sentence/frames_512x512) and
# its preprocess/CSL-Daily/split_1.txt (header name|split, '|'-separated, train/dev/test, LF endings). Other copies
# hold the frames in sentence_frames-512x512/frames_512x512/ (several public loaders). Frame names 000000.jpg, ...
# counted from 0: SLRT's TwoStreamNetwork loader ({:06d}.jpg). Frames are 512x512: the folder name.
# Rows: S000000_P0000_T00, S000000_P0004_T00 and S000001_P0000_T00 with their glosses and text from a public
# listing of the annotations; S000007_P0003_T00 (glosses, characters, words, POS tags) from a public dump of
# csl2020ct_v2.pkl; the char, word and postag fields of the others are filled in here (nothing reads them), and
# length is the number of frames written here (the real files give e.g. 55 for S000007_P0003_T00). The split
# file misses S000007_P0003_T00 and lists S000005_P0004_T00, which video_map.txt does not annotate (CorrNet's
# preprocessing and several loaders). The dev and test names are from split_1.txt; they borrow real glosses.
CSL_DAILY_ROWS = (
    Row("train", "S000000_P0000_T00", "P0000", "你们 好", "你们好！"),
    Row("train", "S000000_P0004_T00", "P0004", "你们 好", "你们好！"),
    Row("train", "S000001_P0000_T00", "P0000", "对不起", "对不起！"),
    Row("train", "S000007_P0003_T00", "P0003", "他 谁", "他是谁？"),
    Row("dev", "S000020_P0000_T00", "P0000", "对不起", "对不起！"),
    Row("test", "S007396_P0000_T00", "P0000", "你们 好", "你们好！"),
)
_CSL_DAILY_KNOWN_FIELDS = {"S000007_P0003_T00": ("他 是 谁 ？", "他 是 谁 ？", "r v v w")}
CSL_DAILY_SPLIT_ONLY = "S000005_P0004_T00"
CSL_DAILY_NOT_IN_SPLIT = "S000007_P0003_T00"


def build_csl_daily(parent: Path, frames: str = "sentence/frames_512x512") -> Path:
    """The release under ``parent``; returns its CSL-Daily folder."""
    base = parent / "CSL-Daily"
    video_map = []
    for index, r in enumerate(CSL_DAILY_ROWS):
        spaced = " ".join(r.text)
        char, word, postag = _CSL_DAILY_KNOWN_FIELDS.get(r.name, (spaced, spaced, " ".join("x" for _ in r.text)))
        video_map.append(f"{index}|{r.name}|{FRAMES_PER_VIDEO}|{r.glosses}|{char}|{word}|{postag}")
        _write_frames(base / frames / r.name, [f"{i:06d}.jpg" for i in range(FRAMES_PER_VIDEO)], 512, 512,
                      200 + index)
    _write_table(base / "sentence_label" / "video_map.txt", "index|name|length|gloss|char|word|postag", video_map)
    listed = [f"{r.name}|{r.split}" for r in CSL_DAILY_ROWS if r.name != CSL_DAILY_NOT_IN_SPLIT]
    listed.insert(1, f"{CSL_DAILY_SPLIT_ONLY}|train")
    # The real split_1.txt ends without a final newline.
    (base / "sentence_label" / "split_1.txt").write_text("\n".join(["name|split", *listed]), encoding="utf-8")
    return base


# Each release's builder and the rows it writes, for tests that run over all three.
RELEASES = {"phoenix2014": (build_phoenix2014, PHOENIX2014_ROWS),
            "phoenix2014t": (build_phoenix2014t, PHOENIX2014T_ROWS),
            "csl-daily": (build_csl_daily, CSL_DAILY_ROWS)}
