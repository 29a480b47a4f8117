"""The corpus readers on the releases' real layouts (built by release_layouts.py), with their known quirks."""

from __future__ import annotations

from pathlib import Path

import pytest
from release_layouts import (
    CSL_DAILY_NOT_IN_SPLIT,
    CSL_DAILY_SPLIT_ONLY,
    FRAMES_PER_VIDEO,
    RELEASES,
    build_csl_daily,
    build_phoenix2014t,
    phoenix2014t_frame_folder,
)

from qslr.pipelines.corpora import CORPORA, NO_ANNOTATION, NOT_IN_SPLIT_FILE, CorpusFormatError, RawRow, Refusal

BUILDERS = {name: build for name, (build, _) in RELEASES.items()}
ROWS = {name: rows for name, (_, rows) in RELEASES.items()}


def read(corpus: str, root: Path) -> tuple[list[RawRow], list[Refusal]]:
    items = list(CORPORA[corpus].read(root))
    return [i for i in items if isinstance(i, RawRow)], [i for i in items if isinstance(i, Refusal)]


def frame_files(row: RawRow) -> list[Path]:
    return sorted(row.frames.parent.glob(row.frames.name))


@pytest.mark.parametrize("corpus", BUILDERS)
@pytest.mark.parametrize("levels_above", [0, 1, 2])
def test_the_root_may_be_the_release_or_a_folder_above_it(corpus, levels_above, tmp_path):
    base = BUILDERS[corpus](tmp_path / "data")
    root = base.parents[levels_above - 1] if levels_above else base
    rows, refused = read(corpus, root)
    assert refused == []
    assert [(r.split, r.id, r.signer, r.annotation) for r in rows] == \
        [(r.split, r.name, r.signer, r.glosses) for r in ROWS[corpus]]
    assert all(len(frame_files(r)) == FRAMES_PER_VIDEO for r in rows)


def test_a_root_without_the_release_names_what_it_looked_for(tmp_path):
    build_phoenix2014t(tmp_path / "a" / "b")  # four levels below tmp_path: too deep
    with pytest.raises(CorpusFormatError, match="no PHOENIX-2014-T release .*/PHOENIX-2014-T.train.corpus.csv"):
        read("phoenix2014t", tmp_path)


def test_two_releases_under_the_root_are_refused_by_name(tmp_path):
    build_csl_daily(tmp_path / "copy1")
    build_csl_daily(tmp_path / "copy2")
    with pytest.raises(CorpusFormatError, match="several CSL-Daily releases"):
        read("csl-daily", tmp_path)


def test_phoenix2014t_frames_come_from_the_name_folder_not_the_csv_1_level(tmp_path):
    base = build_phoenix2014t(tmp_path)
    rows, _ = read("phoenix2014t", base)
    for row in rows:
        assert row.frames.parent == phoenix2014t_frame_folder(base, row.split, row.id)
        assert [p.name for p in frame_files(row)][:2] == ["images0001.png", "images0002.png"]


def test_phoenix2014t_keeps_the_csv_1_level_where_a_copy_has_it(tmp_path):
    base = build_phoenix2014t(tmp_path, level_1=True)
    rows, _ = read("phoenix2014t", base)
    assert all(row.frames.parent == phoenix2014t_frame_folder(base, row.split, row.id) / "1" for row in rows)
    assert all(len(frame_files(row)) == FRAMES_PER_VIDEO for row in rows)


def test_csl_daily_split_file_gaps_are_handled_as_the_reference_code_does(tmp_path):
    base = build_csl_daily(tmp_path)
    rows, refused = read("csl-daily", base)
    assert refused == []
    assert {r.id: r.split for r in rows}[CSL_DAILY_NOT_IN_SPLIT] == "train"
    assert CSL_DAILY_SPLIT_ONLY not in {r.id for r in rows}
    assert [p.name for p in frame_files(rows[0])][:2] == ["000000.jpg", "000001.jpg"]


def test_other_csl_daily_split_gaps_are_refused(tmp_path):
    base = build_csl_daily(tmp_path)
    video_map = base / "sentence_label" / "video_map.txt"
    video_map.write_text(video_map.read_text(encoding="utf-8") + "6|S000009_P0000_T00|8|你们 好|你 们 好|你们 好|r a\n",
                         encoding="utf-8")
    split_file = base / "sentence_label" / "split_1.txt"
    split_file.write_text(split_file.read_text(encoding="utf-8") + "\nS000010_P0000_T00|dev", encoding="utf-8")
    _, refused = read("csl-daily", base)
    assert {(r.id, r.cause, r.where) for r in refused} == {
        ("S000009_P0000_T00", NOT_IN_SPLIT_FILE, f"{video_map}:8"),
        ("S000010_P0000_T00", NO_ANNOTATION, f"{split_file}:8"),
    }


def test_csl_daily_frames_may_lie_in_the_sentence_frames_folder(tmp_path):
    base = build_csl_daily(tmp_path, frames="sentence_frames-512x512/frames_512x512")
    rows, _ = read("csl-daily", base)
    assert all(len(frame_files(r)) == FRAMES_PER_VIDEO for r in rows)
    assert rows[0].frames.parent.parent == base / "sentence_frames-512x512" / "frames_512x512"


def test_a_release_without_its_frame_folder_is_one_error(tmp_path):
    base = build_csl_daily(tmp_path)
    (base / "sentence").rename(base / "elsewhere")
    with pytest.raises(CorpusFormatError, match="no frame folder .*sentence/frames_512x512 or "
                                                "sentence_frames-512x512/frames_512x512"):
        read("csl-daily", base)


@pytest.mark.parametrize("corpus", BUILDERS)
def test_a_byte_order_mark_and_crlf_line_ends_read_the_same(corpus, tmp_path):
    base = BUILDERS[corpus](tmp_path / "plain")
    plain = read(corpus, base)
    for path in [*base.glob("annotations/manual/*.csv"), *base.glob("sentence_label/*.txt")]:
        text = path.read_text(encoding="utf-8")
        path.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode("utf-8"))
    assert read(corpus, base) == plain


def test_a_wrong_header_or_encoding_names_the_file(tmp_path):
    base = build_csl_daily(tmp_path)
    split_file = base / "sentence_label" / "split_1.txt"
    split_file.write_text(split_file.read_text(encoding="utf-8").replace("name|split", "name,split", 1),
                          encoding="utf-8")
    with pytest.raises(CorpusFormatError, match=f"{split_file}: expected the header 'name|split', found 'name,split'"):
        read("csl-daily", base)
    split_file.write_bytes("name|split\nS000000_P0000_T00|train\n".encode("utf-16"))
    with pytest.raises(CorpusFormatError, match=f"{split_file}: not UTF-8 text"):
        read("csl-daily", base)
