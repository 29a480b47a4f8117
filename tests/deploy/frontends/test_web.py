"""`qslr web` against a real tritonserver, served by uvicorn: the endpoint over HTTP, the page in Debian's chromium."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import expect, sync_playwright
from served_settings import MAX_FRAMES, MAX_SECONDS

from qslr.deploy.frontends.web.app import UploadLimits, create_app, readable
from qslr.deploy.frontends.web.in_thread import serving_in_thread
from qslr.deploy.frontends.web.timeline import VideoTiming, read_timing
from qslr.deploy.serving.client import CslrClient
from qslr.deploy.serving.server import free_port, port_in_use
from qslr.pipelines.long_videos import choose_clips, join_clips
from qslr.pipelines.prepared import PreparedDataset
from qslr.pipelines.video_io import encode_video, read_frames, write_vp9

FPS = 25  # the synthetic corpus's frame rate
STRIDE = 4
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 # A synthetic camera, granted without asking: the page's recording path runs headless.
                 "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]


@pytest.fixture(scope="module")
def reference(server):
    client = CslrClient(server.http_url)
    yield client
    client.close()


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict


def _request(url: str, path: str, data=None, headers=None) -> Answer:
    request = urllib.request.Request(url + path, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return Answer(response.status, json.loads(response.read()))
    except urllib.error.HTTPError as error:
        return Answer(error.code, json.loads(error.read()))


@pytest.fixture(scope="module")
def app_url(server):
    # Frames per output step as the repository states it (the spans below are checked against STRIDE).
    with serving_in_thread(create_app(lambda: CslrClient(server.http_url), UploadLimits(max_bytes=2**20))) as url:
        yield url


def _upload(url: str, data, name: str = "clip.webm", beam_size: int | str | None = 10,
            content_type: str = "video/webm") -> Answer:
    query = {"name": name} if beam_size is None else {"name": name, "beam_size": beam_size}
    return _request(url, f"api/recognise?{urllib.parse.urlencode(query)}", data, {"Content-Type": content_type})


def _vp8_webm(frames: np.ndarray, fps: int, live: bool) -> bytes:
    """VP8 in WebM, as Chrome's MediaRecorder makes; ``live``: no duration in the header, as a recording has."""
    buffer = io.BytesIO()
    encode_video(buffer, frames, fps, "libvpx", "webm", container_options={"live": "1"} if live else {})
    return buffer.getvalue()


@pytest.fixture
def own_temporary_folder(tmp_path, monkeypatch) -> Path:
    """The app runs in this process: its temporary files go to a folder of the test's own, where nothing else on the
    machine (other tests, other processes sharing /tmp) writes."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


# The timeline as plain functions.

def test_a_timeline_counts_its_frames_and_rate():
    timing = VideoTiming(tuple(i / 25 for i in range(50)), 2.0)
    assert timing.frames == 50 and timing.fps == 25


def test_timing_comes_from_packet_times_with_or_without_a_declared_duration(tmp_path):
    frames = np.stack([np.full((48, 64, 3), i * 4, np.uint8) for i in range(40)])
    for live in (False, True):
        timing = read_timing(_vp8_webm(frames, 20, live))
        assert timing.frames == 40 and timing.duration == pytest.approx(2.0, abs=1e-3)
        assert timing.frame_times[:3] == pytest.approx((0.0, 0.05, 0.1), abs=1e-3)
    path = tmp_path / "clip.webm"
    write_vp9(path, frames, 25)
    assert read_timing(path.read_bytes()).fps == pytest.approx(25, abs=0.1)
    with pytest.raises(ValueError, match="cannot read"):
        read_timing(b"not a video at all" * 10)


def test_triton_error_text_loses_its_code_and_ensemble_prefix():
    assert readable("[400] in ensemble 'cslr', video too long: 9 frames") == "video too long: 9 frames"
    assert readable("[StatusCode.INVALID_ARGUMENT] in ensemble 'cslr', bad") == "bad"


def test_upload_limits_name_what_they_refuse():
    limits = UploadLimits()
    assert limits.type_problem("clip.webm", "video/webm;codecs=vp9") is None
    assert limits.type_problem("CLIP.MKV", "") is None
    assert limits.type_problem("", "video/quicktime") is None
    assert "not .txt files" in limits.type_problem("notes.txt", "text/plain")
    assert "not image/png" in limits.type_problem("clip.webm", "image/png")
    assert "name the file" in limits.type_problem("", "application/octet-stream")
    with pytest.raises(ValueError):
        UploadLimits(max_bytes=0)


# The endpoint against the real server.

@pytest.mark.slow
def test_an_upload_is_answered_with_the_servers_glosses_placed_in_time(app_url, reference, videos,
                                                                      own_temporary_folder):
    answered = 0
    for video in videos[:4]:
        for beam_size in (10, 0):
            expected = reference.recognise_file(video, beam_size)
            response = _upload(app_url, video.read_bytes(), video.name, beam_size)
            assert response.status == 200, response.body
            answer = response.body
            assert [g["gloss"] for g in answer["glosses"]] == expected.glosses
            frames = len(read_frames(video))
            assert answer["frames"] == frames and answer["beam_size"] == beam_size
            assert answer["fps"] == pytest.approx(FPS, abs=0.05)
            assert answer["duration"] == pytest.approx(frames / FPS, abs=1e-3)
            assert answer["latency_ms"] > 0
            starts = [g["start"] for g in answer["glosses"]]
            assert starts == pytest.approx([step * STRIDE / FPS for step in expected.steps], abs=1e-3)
            # The page places each gloss where the server does, not by a rule of its own.
            assert starts == pytest.approx(expected.start_s, abs=1e-3)
            assert [g["end"] for g in answer["glosses"]] == \
                pytest.approx([min(end, answer["duration"]) for end in expected.end_s], abs=1e-3)
            for gloss in answer["glosses"]:
                assert 0 <= gloss["start"] <= gloss["end"] <= answer["duration"]
            answered += len(expected.glosses)
    assert answered > 0  # the glosses compared were not all empty lists
    assert not any(own_temporary_folder.iterdir())  # nothing uploaded went to disk


def test_a_vp8_webm_recording_without_a_duration_is_recognised(app_url, reference, videos):
    data = _vp8_webm(read_frames(videos[0]), FPS, live=True)
    response = _upload(app_url, data, "recording.webm", content_type="video/webm;codecs=vp8")
    assert response.status == 200, response.body
    assert [g["gloss"] for g in response.body["glosses"]] == reference.recognise_bytes(data, 10).glosses


def test_bad_videos_get_the_servers_message_readably(app_url, reference, videos, tmp_path):
    too_long = tmp_path / "too-long.webm"
    frames = int(MAX_SECONDS * FPS) + FPS
    write_vp9(too_long, (np.full((72, 72, 3), i % 255, np.uint8) for i in range(frames)), FPS)
    whole = videos[0].read_bytes()
    good = reference.recognise_bytes(whole).glosses
    cases = [(b"definitely not a video" * 20, "cannot decode video"),
             (whole[: int(len(whole) * 0.6)], "truncated or incomplete: .* could be read"),
             (too_long.read_bytes(), rf"video too long: it lasts 0:{MAX_SECONDS + 1:04.1f} \({frames} frames at "
                                     rf"{FPS} fps\), the served maximum is 0:{MAX_SECONDS:04.1f}")]
    for data, message in cases:
        response = _upload(app_url, data)
        assert response.status == 422, response.body
        error = response.body["error"]
        assert re.search(message, error), error
        assert not error.startswith("[") and "ensemble" not in error
    response = _upload(app_url, whole, beam_size=99)
    assert response.status == 422 and "beam_size must be an integer in 0..10" in response.body["error"]
    response = _upload(app_url, whole, beam_size="wide")
    assert response.status == 400 and "beam_size must be an integer" in response.body["error"]
    assert _upload(app_url, b"").status == 400
    assert reference.recognise_bytes(whole).glosses == good  # the server kept serving


def test_uploads_too_large_or_not_a_video_are_refused_before_the_server(app_url, own_temporary_folder):
    oversize = _upload(app_url, bytes(2**20 + 1))
    assert oversize.status == 413 and "larger than the upload limit of 1 MB" in oversize.body["error"]
    # Without a Content-Length (chunked), the limit is counted while the body arrives.
    chunked = _upload(app_url, iter([bytes(2**19)] * 3))
    assert chunked.status == 413, chunked.body
    wrong = _upload(app_url, bytes(2**19), "notes.txt", content_type="text/plain")
    assert wrong.status == 415 and "not .txt files" in wrong.body["error"]
    assert _upload(app_url, b"\x89PNG", "clip", content_type="image/png").status == 415
    assert not any(own_temporary_folder.iterdir())


def test_an_unreachable_server_is_told_apart_from_a_refused_video(videos):
    with serving_in_thread(create_app(lambda: CslrClient(f"127.0.0.1:{free_port()}", timeout=5))) as url:
        response = _upload(url, videos[0].read_bytes())
    assert response.status == 502 and "cannot be reached" in response.body["error"]


def test_the_page_and_its_files_are_served_with_a_policy_of_its_own_files_only(app_url):
    with urllib.request.urlopen(app_url) as page:
        assert "text/html" in page.headers["Content-Type"]
        assert page.headers["Content-Security-Policy"].startswith("default-src 'self'")
        text = page.read().decode()
    for asset in re.findall(r'(?:src|href)="(static/[^"]+)"', text):
        with urllib.request.urlopen(app_url + asset) as response:
            text += response.read().decode()
    assert "static/app.js" in text and "://" not in text  # nothing fetched from elsewhere
    assert _request(app_url, "api/settings").body["max_upload_bytes"] == 2**20



@pytest.mark.parametrize("target", ["--url", "--serve"])
@pytest.mark.slow
def test_qslr_web_serves_the_page_in_front_of_a_server_until_interrupted(server, repository, videos, target,
                                                                          tmp_path):
    """In front of a running server (--url), or of one it starts on a repository and stops with the page, stubs
    included, when it is stopped."""
    port = free_port()
    if target == "--serve":  # a folder of its own, so that only this page's server names it
        repository = Path(shutil.copytree(repository, tmp_path / "repo"))
    where = [target, server.http_url if target == "--url" else str(repository)]
    command = [sys.executable, "-m", "qslr.tools.cli", "web", *where, "--port", str(port), "--max-upload-mb", "0.5"]
    process = subprocess.Popen(command, cwd=Path(__file__).resolve().parents[3], stderr=subprocess.PIPE, text=True)
    try:
        url, deadline = f"http://127.0.0.1:{port}/", time.monotonic() + 60
        while (settings := _settings_or_none(url)) is None:
            assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
            time.sleep(0.2)
        assert settings["max_upload_bytes"] == 2**19
        assert _upload(url, videos[0].read_bytes(), videos[0].name).status == 200
    finally:
        # Ctrl-C in front of a running server; a service manager's SIGTERM to the page that started its own.
        process.send_signal(signal.SIGINT if target == "--url" else signal.SIGTERM)
        _, log = process.communicate(timeout=30)
    assert process.returncode == 0, log
    assert f"the page is on http://127.0.0.1:{port}/" in log
    assert ("tritonserver ready on" in log) == (target == "--serve")
    if target == "--serve":  # its server went with it, and the server's python stubs
        started = re.search(r"tritonserver ready on 127\.0\.0\.1:(\d+)", log)
        assert started and not port_in_use("127.0.0.1", int(started.group(1)))
        assert not [args for args in _command_lines() if any(a.startswith(f"{repository}/") for a in args)]


def _command_lines() -> list[list[str]]:
    lines = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            lines.append((entry / "cmdline").read_bytes().decode(errors="replace").split("\0"))
        except OSError:
            continue
    return lines


def _settings_or_none(url: str) -> dict | None:
    try:
        return _request(url, "api/settings").body
    except urllib.error.URLError:
        return None


# The page in a real browser.

@pytest.fixture(scope="module")
def page_url(server):
    with serving_in_thread(create_app(lambda: CslrClient(server.http_url), UploadLimits())) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: `make chromium` installs Debian's chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def _shown_glosses(page) -> list[str]:
    return page.locator("#track .gloss").all_text_contents()


def _until(page, expression: str, arg=None, timeout: float = 10.0):
    """Poll a page expression from here: the page's policy forbids the eval that page.wait_for_function uses."""
    deadline = time.monotonic() + timeout
    while not (value := page.evaluate(expression, arg)):
        assert time.monotonic() < deadline, f"{expression} stayed false for {timeout} s"
        time.sleep(0.05)
    return value


@contextlib.contextmanager
def _watched_page(browser, page_url: str, **options):
    """A fresh page that must load nothing from elsewhere and log no errors (a policy violation is one)."""
    context = browser.new_context(**options)
    page = context.new_page()
    requested, problems = [], []
    page.on("request", lambda request: requested.append(request.url))
    page.on("console", lambda message: message.type == "error" and problems.append(message.text))
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.goto(page_url)
    expect(page.locator("#limits")).to_contain_text("MB")
    yield page, problems
    context.close()
    assert [url for url in requested if not url.startswith((page_url, "blob:", "data:"))] == []


@pytest.mark.slow
def test_the_page_shows_the_servers_glosses_seeks_to_them_and_explains_errors(browser, page_url, reference, videos,
                                                                               tmp_path):
    with_glosses = [(v, reference.recognise_file(v, 10)) for v in videos]
    video, expected = max(with_glosses, key=lambda pair: len(pair[1].glosses))
    assert len(expected.glosses) >= 2
    with _watched_page(browser, page_url, viewport={"width": 1000, "height": 780}) as (page, problems):
        page.set_input_files("#file", str(video))
        expect(page.locator("#status")).to_contain_text("latency", timeout=60_000)
        assert _shown_glosses(page) == expected.glosses
        assert "beam 10" in page.text_content("#status")
        chip = page.locator("#track .gloss").nth(1)
        start = float(chip.get_attribute("data-start"))
        assert start == pytest.approx(expected.steps[1] * STRIDE / FPS, abs=1e-3)
        chip.click()
        _until(page, "start => Math.abs(document.getElementById('video').currentTime - start) < 0.05", start)
        expect(chip).to_have_class(re.compile(r"\bactive\b"))
        assert problems == []

        page.eval_on_selector("#beam", "beam => { beam.value = '0'; beam.dispatchEvent(new Event('input'));"
                                       " beam.dispatchEvent(new Event('change')); }")
        expect(page.locator("#status")).to_contain_text("greedy", timeout=60_000)
        assert _shown_glosses(page) == reference.recognise_file(video, 0).glosses

        broken = tmp_path / "broken.webm"
        broken.write_bytes(b"definitely not a video" * 20)
        page.set_input_files("#file", str(broken))
        expect(page.locator("#error")).to_be_visible(timeout=60_000)
        assert re.search(r"broken\.webm: .*cannot decode video", page.text_content("#error"))
        assert page.is_hidden("#timeline") and _shown_glosses(page) == []
        # The browser logs the refused request itself (422); nothing else may fail.
        assert [p for p in problems if "422" not in p] == []


@pytest.mark.slow
def test_a_long_video_s_timeline_scrolls_zooms_and_follows_the_video(browser, page_url, reference, tiny_corpus,
                                                                      tmp_path):
    dataset = PreparedDataset(tiny_corpus[0])
    long_video = tmp_path / "long.webm"
    joined = join_clips(dataset, choose_clips(dataset, "train", len(dataset.records("train"))), long_video)
    expected = reference.recognise_file(long_video, 10)  # in windows: longer than the served frames
    assert joined.frames > MAX_FRAMES and expected.glosses
    with _watched_page(browser, page_url, viewport={"width": 600, "height": 780}) as (page, problems):
        page.set_input_files("#file", str(long_video))
        expect(page.locator("#status")).to_contain_text("latency", timeout=60_000)
        assert _shown_glosses(page) == expected.glosses
        lane = "document.getElementById('lane')"
        view = "document.getElementById('timeline')"
        # Laid out at 150 px a second or more (a gloss, about 0.3 s, then shows its name): wider than the page,
        # so the lane scrolls and the zoom shows.
        width = page.evaluate(f"{lane}.clientWidth")
        assert width >= 150 * joined.frames / joined.fps - 1 > page.evaluate(f"{view}.clientWidth")
        assert page.is_visible("#zoom")
        page.eval_on_selector("#zoom", "zoom => { zoom.value = '20'; zoom.dispatchEvent(new Event('input')); }")
        assert page.evaluate(f"{lane}.clientWidth") == pytest.approx(4 * width, rel=0.01)
        assert "x4.0" in page.text_content("#zoom-value")
        # Playing on to the last gloss scrolls the lane to it.
        assert page.evaluate(f"{view}.scrollLeft") == 0
        page.evaluate("time => { document.getElementById('video').currentTime = time; }", expected.start_s[-1])
        _until(page, f"() => {view}.scrollLeft > 0")
        playhead = page.locator("#playhead").bounding_box()
        box = page.locator("#timeline").bounding_box()
        assert box["x"] <= playhead["x"] <= box["x"] + box["width"]
        assert problems == []


@pytest.mark.slow
def test_a_webcam_recording_from_the_page_is_recognised(browser, page_url):
    with _watched_page(browser, page_url, permissions=["camera"]) as (page, problems):
        page.click("#record")
        expect(page.locator("#record")).to_contain_text("(2 s)", timeout=10_000)
        page.click("#record")
        expect(page.locator("#status")).to_contain_text("latency", timeout=60_000)
        assert page.is_hidden("#error") and problems == []
        assert re.search(r"\d+ frames", page.text_content("#status"))
