"""Videos as people record them (tools/recorded_videos.py), made here from a held-out clip: every front end brings
each kind back to the clip the model was trained on, says what it did, and the DALI and PyAV paths agree."""

from __future__ import annotations

import dataclasses
import json
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from qslr.deploy.frontends.recognise import LocalRecogniser, load_checkpoint_model
from qslr.deploy.frontends.web.app import create_app
from qslr.deploy.frontends.web.in_thread import serving_in_thread
from qslr.deploy.served_limits import ServedLimits
from qslr.deploy.served_video import clip_decoder
from qslr.deploy.serving.client import CslrClient, RecognitionError
from qslr.pipelines.framing_options import FramingOptions, Region
from qslr.pipelines.source_framing import SourceFraming
from qslr.pipelines.video_io import read_frames, write_vp9
from qslr.tools.cli import cli
from qslr.tools.recorded_videos import KINDS, record

SCALE = 0.1  # a tenth of 1080p: a phone's portrait picture is 108x192
LIMITS = ServedLimits(max_frames=400, max_batch=16)
SQUARE = SourceFraming(1.0)  # the synthetic corpus's pictures
TURNED = {"rotated-90": 90, "rotated-180": 180, "rotated-270": 270, "phone": 270}


@pytest.fixture(scope="module")
def clip(videos) -> Path:
    return videos[0]


@pytest.fixture(scope="module")
def recorded(clip, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("recorded")
    return {name: record(clip, kind, out / name, SCALE) for name, kind in KINDS.items()}


def _close_to_clip(frames: np.ndarray, clip: np.ndarray, columns: slice = slice(None)) -> float:
    """Mean absolute difference over the frames both have: a recording may last a frame or two longer than its clip
    (its last frame lasts a camera's period, and a variable rate's last gap is up to 0.05 s)."""
    assert abs(len(frames) - len(clip)) <= 2
    shortest = min(len(frames), len(clip))
    return float(np.abs(frames[:shortest, :, columns].astype(int) - clip[:shortest, :, columns]).mean())


def test_every_kind_is_brought_back_to_the_clip(recorded, clip):
    original = read_frames(clip)
    decoder = clip_decoder("pyav", 72, 72, LIMITS, fps=25.0, source=SQUARE)
    results = decoder.decode([r.path for r in recorded.values()], [r.options for r in recorded.values()])
    for (name, recording), result in zip(recorded.items(), results, strict=True):
        assert not isinstance(result, Exception), (name, result)
        framing = result.framing
        assert (framing.rotation, framing.model_fps, framing.size) == (TURNED.get(name, 0), 25.0, (72, 72)), name
        assert framing.stored_size == recording.size and result.fps == 25.0
        # Below full height the clip was shrunk to 54 to 108 pixels here (and at half a portrait picture's height it
        # fills 89 % of the square crop): farther from it than the others, which are the clip again but for codecs.
        assert _close_to_clip(result.frames, original) < (12 if KINDS[name].fill < 1 else 5), name
    assert recorded["landscape-half"].options.region is not None
    sixty = results[list(recorded).index("fps-60")].framing
    assert sixty.frames_in - sixty.frames_out == sixty.dropped > sixty.frames_out  # 60 fps on 25: 7 of 12 dropped


@pytest.mark.slow
def test_pyav_and_dali_frame_every_kind_alike(clip, tmp_path):
    """Each kind stored as VP9, which DALI decodes on the CPU (its H.264 and HEVC go to NVDEC on a GPU, and to PyAV
    here): the same frames within one level (their colour conversions differ so), the same record."""
    recordings = [record(clip, dataclasses.replace(kind, codec="vp9"), tmp_path / name, SCALE)
                  for name, kind in KINDS.items()]
    uploads = [r.path.read_bytes() for r in recordings]
    options = [r.options for r in recordings]
    pyav = clip_decoder("pyav", 72, 72, LIMITS, fps=25.0, source=SQUARE).decode(uploads, options)
    dali = clip_decoder("dali", 72, 72, LIMITS, fps=25.0, source=SQUARE)
    decoded = dali.decode(uploads, options)
    assert dali.fallbacks.total == 0  # DALI decoded every one: the comparison is of two decoders
    for name, ours, theirs in zip(KINDS, decoded, pyav, strict=True):
        assert ours.framing == theirs.framing, name
        assert np.abs(ours.frames.astype(int) - theirs.frames).max() <= 1, name


def test_qslr_recognise_says_what_it_did(checkpoint, recorded):
    def framing(*args: str) -> dict:
        result = CliRunner().invoke(cli, ["recognise", "--checkpoint", str(checkpoint), "--json", *args])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)["framing"]

    landscape = recorded["landscape-half"]
    region = framing("--region", str(landscape.options.region), str(landscape.path))
    phone = framing(str(recorded["phone"].path))
    assert region["region"] == list(dataclasses.astuple(landscape.options.region)) and region["size"] == [72, 72]
    assert phone["rotation"] == 270 and phone["model_fps"] == 25.0 and "rotated 270 degrees" in phone["summary"]
    # The whole 9:16 picture in the square: the signer, as wide as the picture, at 56 % of the frame, black beside.
    boxed = framing("--framing", "letterbox", str(recorded["portrait-full"].path))
    assert boxed["padding"] == [16, 0, 16, 0] and boxed["box"] == [0, 0, 108, 192]
    text = CliRunner().invoke(cli, ["recognise", "--checkpoint", str(checkpoint), "--framing", "letterbox",
                                    str(recorded["portrait-full"].path)])
    assert text.exit_code == 0 and "framing: " in text.stdout and "letterboxed" in text.stdout
    wrong = CliRunner().invoke(cli, ["recognise", "--checkpoint", str(checkpoint), "--region", "0,0,500,10",
                                     str(landscape.path)])
    assert wrong.exit_code == 1 and "reaches past the upright picture, 192x108" in wrong.output


def test_the_server_and_the_page_answer_as_recognise_does(server, checkpoint, recorded):
    local = LocalRecogniser(load_checkpoint_model(checkpoint))
    kinds = ("rotated-90", "variable-rate", "landscape-half", "portrait-half")
    client = CslrClient(server.http_url)
    try:
        for name in kinds:
            recording = recorded[name]
            expected = local.recognise(recording.path, local.options(), recording.options)
            served = client.recognise_file(recording.path, framing=recording.options)
            assert served.glosses == expected.glosses and served.framing == expected.framing, name
            np.testing.assert_allclose(served.start_s, expected.start_s, atol=1e-4)
        with pytest.raises(RecognitionError, match="reaches past the upright picture") as refused:
            client.recognise_file(recorded["webcam"].path, framing=FramingOptions(region=Region(0, 0, 900, 10)))
        assert refused.value.status == "400"
    finally:
        client.close()
    with serving_in_thread(create_app(lambda: CslrClient(server.http_url))) as url:
        recording = recorded["landscape-half"]
        query = urllib.parse.urlencode({"name": recording.path.name, "region": str(recording.options.region)})
        request = urllib.request.Request(f"{url}api/recognise?{query}", recording.path.read_bytes(),
                                         {"Content-Type": "video/mp4"})
        with urllib.request.urlopen(request, timeout=120) as response:
            answer = json.loads(response.read())
        expected = local.recognise(recording.path, local.options(), recording.options)
        assert [g["gloss"] for g in answer["glosses"]] == expected.glosses
        assert answer["framing"] == expected.framing and "the region" in answer["framing"]["summary"]


@pytest.mark.slow
def test_a_real_1080p_phone_video(clip, tmp_path):
    """Stored 1920x1080 with a display matrix of 270 degrees, at a variable rate, with AAC audio: 20 frames of it
    decoded two at a time, framed back to the clip."""
    short = tmp_path / "short.webm"
    write_vp9(short, read_frames(clip)[:20], 25)
    recording = record(short, KINDS["phone"], tmp_path / "phone", 1.0)
    assert recording.size == (1920, 1080)
    result = clip_decoder("pyav", 72, 72, LIMITS, fps=25.0, source=SQUARE).decode([recording.path])[0]
    assert result.framing.upright_size == (1080, 1920) and result.framing.box == (0, 420, 1080, 1080)
    assert _close_to_clip(result.frames, read_frames(short)) < 12


@pytest.mark.slow
def test_the_page_sends_the_framing_and_says_what_was_done(server, recorded):
    """In Debian's chromium: a region typed into the page reaches the server, and the answer's framing is shown."""
    from playwright.sync_api import expect, sync_playwright
    from test_web import CHROMIUM, CHROMIUM_ARGS

    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: `make chromium` installs Debian's chromium")
    recording = recorded["landscape-half"]
    client = CslrClient(server.http_url)
    expected = client.recognise_file(recording.path, framing=recording.options)
    client.close()
    with serving_in_thread(create_app(lambda: CslrClient(server.http_url))) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(url)
        page.fill("#region", str(recording.options.region))
        page.select_option("#framing", "crop")
        page.set_input_files("#file", str(recording.path))
        expect(page.locator("#framing-done")).to_contain_text(expected.framing["summary"], timeout=60_000)
        assert page.locator("#track .gloss").all_text_contents() == expected.glosses
        browser.close()
