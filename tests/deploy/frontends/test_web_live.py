"""The page's live mode over a real WebSocket (uvicorn in a thread, the `websockets` client): a stream answers what
`qslr recognise` answers for its frames with their capture times; a garbage frame is refused alone; an over-fast
sender loses frames, counted, and the server holds a bounded queue; a dropped connection frees its stream; 16
streams at once answer as each does alone; and the page itself in Chromium with a fake camera."""

from __future__ import annotations

import gc
import io
import json
import socket as stdlib_socket
import struct
import threading
import time
import weakref
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from websockets.sync.client import connect

from qslr.deploy.frontends.live import LiveModel
from qslr.deploy.frontends.recognise import LocalRecogniser, load_checkpoint_model
from qslr.deploy.frontends.web.app import create_app
from qslr.deploy.frontends.web.in_thread import serving_in_thread
from qslr.deploy.frontends.web.live_socket import QUEUE_FRAMES
from qslr.deploy.frontends.web.local_uploads import LocalUploads
from qslr.deploy.serving.buffered import WindowPlan
from qslr.pipelines.long_videos import choose_clips, join_clips
from qslr.pipelines.prepared import PreparedDataset
from qslr.pipelines.video_io import encode_video, read_video

PLAN = WindowPlan(32, 8, 4)


class _Watched(LiveModel):
    """The live model, keeping a weak reference to each stream it makes and, where asked, slower."""

    streams: list = []
    delay: float = 0.0

    def stream(self, *args, **kwargs):
        made = super().stream(*args, **kwargs)
        _Watched.streams.append(weakref.ref(made))
        return made


@pytest.fixture(scope="module")
def model(checkpoint):
    return load_checkpoint_model(checkpoint)


@pytest.fixture(scope="module")
def camera(tiny_corpus, tmp_path_factory):
    """Frames as a 4:3 camera would give them (the clips with bars on both sides), at 30 fps with jitter, and
    their capture times to the millisecond (as a WebM file keeps them)."""
    dataset = PreparedDataset(tiny_corpus[0])
    joined = tmp_path_factory.mktemp("camera") / "joined.webm"
    join_clips(dataset, choose_clips(dataset, "train", 3), joined)
    frames = np.pad(read_video(joined)[0], ((0, 0), (0, 0), (12, 12), (0, 0)))
    times = np.round(np.cumsum(np.random.default_rng(1).uniform(0.025, 0.042, len(frames))) * 1000) / 1000
    return frames, times - times[0]


@pytest.fixture(scope="module")
def url(model):
    slow_run = model.run

    def run(frames, lengths):
        time.sleep(_Watched.delay)
        return slow_run(frames, lengths)

    live = _Watched(run, LiveModel.local(model, PLAN).decoder, model.target, PLAN, 16)
    app = create_app(lambda: LocalUploads(LocalRecogniser(model)), live=live)
    with serving_in_thread(app) as page:
        yield page.replace("http://", "ws://") + "api/live"


def _png(frame: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, "PNG")
    return buffer.getvalue()


def _stream(url: str, frames, times, paced: bool = True, extra: dict | None = None, start: dict | None = None):
    """Send the frames (keeping within the frames in flight the server allows, where ``paced``), then stop;
    every message the server sent, the answer last."""
    messages = []
    with connect(url, max_size=2**22) as socket:
        socket.send(json.dumps(start or {"beam_size": None}))
        ready = json.loads(socket.recv())
        messages.append(ready)
        if ready["type"] != "ready":
            return messages
        taken = 0
        for index, (frame, moment) in enumerate(zip(frames, times, strict=True)):
            payload = (extra or {}).get(index)
            socket.send(payload if payload is not None else struct.pack("<d", moment) + _png(frame))
            while paced and index + 1 - taken >= ready["in_flight"]:
                messages.append(json.loads(socket.recv()))
                taken = messages[-1].get("taken", taken)
        socket.send(json.dumps({"stop": True}))
        while messages[-1]["type"] not in ("answer", "error"):
            messages.append(json.loads(socket.recv()))
    return messages


def _offline(model, frames, times, tmp_path):
    """`qslr recognise` of a file holding the frames (losslessly) with their times, in the live windows."""
    video = tmp_path / "camera.webm"
    encode_video(video, frames, 30, "libvpx-vp9", codec_options={"lossless": "1"}, pixel_format="gbrp",
                 timestamps=[float(t) for t in times])
    recogniser = LocalRecogniser(model, windows=PLAN)
    return recogniser.recognise(video, recogniser.options())


def _glosses(answer: dict) -> list[tuple]:
    return [(g["gloss"], g["start"], g["end"]) for g in answer["glosses"]]


def _expected(result) -> list[tuple]:
    return [(gloss, round(start, 3), round(end, 3)) for gloss, start, end in result.spans]


def test_a_live_stream_answers_as_recognise_answers_its_frames(model, camera, url, tmp_path):
    frames, times = camera
    messages = _stream(url, frames, times)
    ready, answer = messages[0], messages[-1]
    assert (ready["width"], ready["height"], ready["window"], ready["context"]) == (72, 72, 32, 8)
    assert answer["type"] == "answer" and (answer["received"], answer["dropped"], answer["refused"]) == (
        len(frames), 0, 0)
    expected = _offline(model, frames, times, tmp_path)
    assert _glosses(answer) == _expected(expected) and answer["score"] == pytest.approx(expected.score, abs=1e-9)
    # What was done to the frames, as to the file's (whose container states a rate; the stream's frames do not).
    differing = {"source_fps", "summary"}
    assert {k: v for k, v in answer["framing"].items() if k not in differing} == {
        k: v for k, v in expected.framing.items() if k not in differing}
    assert answer["framing"]["box"] == [12, 0, 72, 72] and \
        f"{len(frames)} frames timed as captured placed on 25 fps" in answer["framing"]["summary"]
    updates = [m for m in messages if m["type"] == "update"]
    assert len(updates) >= len(frames) * 25 / 30 / PLAN.middle - 2  # one a window, as the frames came
    assert all(u["received"] < len(frames) for u in updates[:-2])  # answered while frames were still coming


def test_a_garbage_frame_is_refused_alone(model, camera, url):
    frames, times = camera
    garbage = {10: struct.pack("<d", times[10]) + b"not a picture" * 20, 20: b"short"}
    messages = _stream(url, frames[:60], times[:60], extra=garbage)
    refusals = [m["error"] for m in messages if m["type"] == "refused"]
    assert len(refusals) == 2 and "frame 10: not a picture" in refusals[0] and "frame 20: a frame is" in refusals[1]
    answer = messages[-1]
    assert answer["refused"] == 2 and answer["framing"]["frames_in"] == 58
    kept = [i for i in range(60) if i not in garbage]
    alone = _stream(url, frames[kept], times[kept])[-1]
    assert _glosses(answer) == _glosses(alone)


@pytest.mark.slow
def test_an_over_fast_sender_loses_frames_counted_and_the_server_holds_a_bounded_queue(camera, url):
    """A sender that ignores the frames in flight, to a recogniser slowed to 50 ms a window: what finds the queue
    full is dropped and counted; the stream still ends with an answer for the frames taken."""
    frames, times = camera
    _Watched.delay = 0.05
    try:
        messages = _stream(url, np.concatenate([frames] * 3), np.concatenate([times + k * 10 for k in range(3)]),
                           paced=False)
    finally:
        _Watched.delay = 0.0
    answer = messages[-1]
    assert answer["type"] == "answer" and answer["received"] == 3 * len(frames)
    assert answer["dropped"] > 0 and answer["taken"] + answer["dropped"] == answer["received"]
    assert answer["framing"]["frames_in"] == answer["taken"]
    # Taken while the sender sent: never more behind than the queue holds.
    assert max(m["received"] - m["taken"] - m["dropped"] for m in messages[1:]) <= QUEUE_FRAMES + 8


def test_a_dropped_connection_frees_its_stream(camera, url):
    frames, times = camera
    _Watched.streams.clear()
    with connect(url) as socket:
        socket.send(json.dumps({"beam_size": 0}))
        assert json.loads(socket.recv())["type"] == "ready"
        for frame, moment in zip(frames[:40], times[:40], strict=True):
            socket.send(struct.pack("<d", moment) + _png(frame))
        # The network goes (a closed tab, a lost link): no closing handshake.
        socket.socket.shutdown(stdlib_socket.SHUT_RDWR)
    deadline = time.monotonic() + 10
    while _Watched.streams[0]() is not None:
        assert time.monotonic() < deadline, "the dropped stream is still held"
        gc.collect()
        time.sleep(0.1)
    assert _stream(url, frames[:30], times[:30])[-1]["type"] == "answer"  # and the page goes on


def test_a_bad_start_is_refused_in_one_message(url):
    messages = _stream(url, [], [], start={"beam_size": 99})
    assert messages[0]["type"] == "error" and "beam_size must be an integer in 0..10" in messages[0]["error"]


@pytest.mark.slow
def test_16_streams_at_once_answer_as_each_does_alone(camera, url):
    frames, times = camera
    spans = [((k % 4) * 12, min(len(frames), (k % 4) * 12 + 30 + (k // 4) * 10)) for k in range(16)]
    parts = [(frames[start:stop], times[start:stop] - times[start]) for start, stop in spans]
    alone = [_glosses(_stream(url, *part)[-1]) for part in parts[:3]]
    answers: list = [None] * 16

    def run(index: int) -> None:
        answers[index] = _stream(url, *parts[index])[-1]

    threads = [threading.Thread(target=run, args=(index,)) for index in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert all(a is not None and a["type"] == "answer" and a["dropped"] == 0 for a in answers)
    assert [_glosses(a) for a in answers[:3]] == alone
    assert len({tuple(_glosses(a)) for a in answers}) >= 4  # different frames, different answers


# The page in a real Chromium, whose fake camera plays a joined test video.

CHROMIUM = Path("/usr/bin/chromium")


class _Logged(LiveModel):
    """The live model, logging the frames (and capture times) each stream's server side was given."""

    frames: list = []

    def stream(self, *args, **kwargs):
        made = super().stream(*args, **kwargs)
        feed = made.feed

        def logged(frames, starts, *more, **options):
            _Logged.frames.append((frames.copy(), list(starts)))
            return feed(frames, starts, *more, **options)

        made.feed = logged
        return made


def _until(page, expression: str, timeout: float):
    """Poll a page expression: the page's policy forbids the eval that Playwright's wait_for_function uses."""
    deadline = time.monotonic() + timeout
    while not (value := page.evaluate(expression)):
        assert time.monotonic() < deadline, f"{expression} stayed false for {timeout} s"
        time.sleep(0.05)
    return value


@pytest.mark.slow
def test_the_page_s_live_mode_shows_glosses_before_the_video_ends_and_ends_with_the_offline_answer(
        model, camera, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: `make chromium` installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    frames, _ = camera
    fake = tmp_path / "camera.y4m"
    encode_video(fake, frames, 25, "rawvideo", "yuv4mpegpipe", pixel_format="yuv420p")
    duration = len(frames) / 25
    _Logged.frames.clear()
    live = _Logged(model.run, LiveModel.local(model, PLAN).decoder, model.target, PLAN, 16)
    with serving_in_thread(create_app(lambda: LocalUploads(LocalRecogniser(model)), live=live)) as page_url, \
            sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream", f"--use-file-for-fake-video-capture={fake}"])
        context = browser.new_context(permissions=["camera"])
        page = context.new_page()
        problems = []
        page.on("console", lambda message: message.type == "error" and problems.append(message.text))
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.goto(page_url)
        _until(page, "() => !document.getElementById('live').hidden", 10)
        page.click("#live")
        _until(page, "() => document.getElementById('status').textContent.startsWith('Live')", 20)
        started = time.monotonic()
        _until(page, "() => document.querySelectorAll('#track .gloss').length > 0", 3 * duration)
        first_gloss = time.monotonic() - started
        time.sleep(max(0.0, duration - (time.monotonic() - started)))
        page.click("#live")  # Stop
        _until(page, "() => document.getElementById('status').textContent.includes('live:')", 60)
        shown = [(chip.text_content(), float(chip.get_attribute("data-start")))
                 for chip in page.locator("#track .gloss").all()]
        status = page.text_content("#status")
        tentative = page.locator("#track .gloss.tentative").count()
        browser.close()
    assert first_gloss < duration, f"the first gloss came {first_gloss:.1f} s into a {duration:.1f}-s video"
    assert problems == [] and tentative == 0 and "0 dropped by the server" in status
    received = np.concatenate([frames for frames, _ in _Logged.frames])
    times = np.array([t for _, starts in _Logged.frames for t in starts])
    assert len(received) >= duration * 20 and np.all(np.diff(times) > 0)
    times = np.round(times * 1000) / 1000  # as the oracle's file keeps them
    expected = _offline(model, received, times, tmp_path)
    assert [gloss for gloss, _ in shown] == expected.glosses
    assert [start for _, start in shown] == pytest.approx(expected.start_s, abs=1e-3)
