"""The README's pictures of the web page: a trained model's repository on a real tritonserver, the page on it in a
real Chromium, photographed.

- docs/web.png: a long video of held-out clips joined (`qslr data concat`'s joiner) uploaded, the video at a gloss.
  It prints the reference, the answer and its word error rate, for the picture's caption.
- docs/web_live.png (--live): the live mode, Chromium's fake camera playing a stream of continuous signing
  (`qslr data synth --streams`), each window through the server's `visual` model; photographed mid-stream, with
  final and tentative glosses on screen. It prints what was shown against the signs finished by then.

    python -m qslr.tools.web_picture --repository runs/synthetic/triton --data data/synthetic --clips 8
    python -m qslr.tools.web_picture --repository runs/synthetic/triton --live STREAMS/stream-0.webm \\
        --out docs/web_live.png

Needs the `web` extra (Starlette, uvicorn, Playwright) and a Chromium (`make chromium` installs Debian's).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import click

from qslr.deploy.frontends.live import LiveModel
from qslr.deploy.frontends.web.app import UploadLimits, create_app
from qslr.deploy.frontends.web.in_thread import serving_in_thread
from qslr.deploy.serving.client import CslrClient
from qslr.deploy.serving.server import Ports, TritonServer, free_port
from qslr.deploy.serving.supervision import exit_on_signals
from qslr.pipelines.atomic_output import write_bytes_atomic
from qslr.pipelines.long_videos import JoinedVideo, choose_clips, join_clips
from qslr.pipelines.prepared import PreparedDataset
from qslr.pipelines.video_io import encode_video, read_video
from qslr.train.scoring.alignment import align, count

FAKE_CAMERA = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]


def _until(page, expression: str, timeout: float = 30.0) -> None:
    """Poll a page expression: the page's policy forbids the eval that Playwright's wait_for_function uses."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise click.ClickException(f"the page did not reach {expression} within {timeout:g} s")
        time.sleep(0.05)


def _caption(what: str, reference: list[str], glosses: list[str]) -> None:
    counts = count(align(reference, glosses))
    click.echo(f"{what}\nreference: {' '.join(reference)}\nanswer:    {' '.join(glosses)}")
    click.echo(f"WER {counts.wer:.2f} % ({counts.substitutions} substituted, {counts.deletions} deleted, "
               f"{counts.insertions} inserted of {counts.reference_words})")


def _photograph_upload(page, video: Path, out: Path) -> list[str]:
    """The page after recognising an uploaded video, the video at its middle gloss; the glosses shown."""
    page.set_input_files("#file", str(video))
    _until(page, "() => document.getElementById('status').textContent.includes('latency')"
                 " || !document.getElementById('error').hidden", 120)
    if page.is_visible("#error"):
        raise click.ClickException(f"the page refused the video: {page.text_content('#error')}")
    glosses = page.locator("#track .gloss").all_text_contents()
    # The video at the middle gloss, without the player's loading spinner over it.
    page.locator("#track .gloss").nth(len(glosses) // 2).click()
    _until(page, "() => !document.getElementById('video').seeking"
                 " && document.getElementById('video').readyState >= 3")
    page.mouse.move(0, 0)
    page.wait_for_timeout(1000)
    write_bytes_atomic(out, page.screenshot(full_page=True))
    return glosses


def _photograph_live(page, at: float, out: Path) -> tuple[list[str], int]:
    """The page in live mode, photographed at the first update after ``at`` seconds that shows a tentative gloss;
    the glosses shown then (final, then tentative) and the frames the page had sent."""
    page.click("#live")
    _until(page, "() => document.getElementById('status').textContent.startsWith('Live')", 30)
    time.sleep(at)
    _until(page, "() => document.querySelectorAll('#track .gloss.tentative').length > 0", 30)
    page.mouse.move(0, 0)
    write_bytes_atomic(out, page.screenshot(full_page=True))
    glosses = page.locator("#track .gloss").all_text_contents()
    sent = int(page.text_content("#status").split(" frames sent")[0].rsplit(" ", 1)[-1])
    page.click("#live")  # Stop
    _until(page, "() => document.getElementById('status').textContent.includes('live:')", 60)
    return glosses, sent


@click.command()
@click.option("--repository", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="A repository from `qslr triton build` of a trained checkpoint.")
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="The dataset whose held-out clips are joined and uploaded.")
@click.option("--split", default="test", show_default=True)
@click.option("--clips", type=int, default=8, show_default=True, help="Held-out clips joined into the video.")
@click.option("--first", type=int, default=0, show_default=True)
@click.option("--live", "stream", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Photograph the live mode instead: this stream of `qslr data synth --streams` as the camera.")
@click.option("--at", type=float, default=20.0, show_default=True,
              help="With --live: seconds of the stream before the picture (then the next tentative gloss).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("docs/web.png"),
              show_default=True)
@click.option("--chromium", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=Path("/usr/bin/chromium"), show_default=True)
def web_picture(repository: Path, data: Path | None, split: str, clips: int, first: int, stream: Path | None,
                at: float, out: Path, chromium: Path) -> None:
    """Photograph the web page answering a long video of held-out clips, or in live mode on a stream."""
    from playwright.sync_api import sync_playwright

    if (data is None) == (stream is None):
        raise click.UsageError("give --data (an uploaded video) or --live STREAM (the live mode), not both")
    with tempfile.TemporaryDirectory(prefix="qslr-web-picture-") as tmp:
        arguments = ["--headless", "--no-sandbox", "--disable-gpu"]
        if stream is not None:
            # Chromium's fake camera plays raw YUV (y4m) only.
            camera = Path(tmp) / "camera.y4m"
            reference = JoinedVideo.read(stream)
            encode_video(camera, read_video(stream)[0], reference.fps, "rawvideo", "yuv4mpegpipe",
                         pixel_format="yuv420p")
            arguments += [*FAKE_CAMERA, f"--use-file-for-fake-video-capture={camera}"]
        else:
            dataset = PreparedDataset(data)
            video = Path(tmp) / f"{clips}-{split}-clips.webm"
            joined = join_clips(dataset, choose_clips(dataset, split, clips, first), video)
        with exit_on_signals(), TritonServer(repository, Ports(free_port(), free_port(), free_port())) as server:
            live = LiveModel.served(server.http_url, False, repository) if stream is not None else None
            with serving_in_thread(create_app(lambda: CslrClient(server.http_url), UploadLimits(), live)) as url, \
                    sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=str(chromium), args=arguments)
                context = browser.new_context(viewport={"width": 1000, "height": 800},
                                              permissions=["camera"] if stream is not None else [])
                page = context.new_page()
                page.goto(url)
                if stream is None:
                    glosses = _photograph_upload(page, video, out)
                else:
                    _until(page, "() => !document.getElementById('live').hidden", 10)
                    glosses, sent = _photograph_live(page, at, out)
                browser.close()
    if stream is None:
        _caption(f"wrote {out}: {joined.frames} frames ({joined.frames / joined.fps:.1f} s), {clips} {split} clips "
                 f"from {first}", joined.glosses.split(), glosses)
    else:
        _caption(f"wrote {out}: {stream.name} live, photographed after {sent} frames ({sent / reference.fps:.1f} s); "
                 "the reference: the signs finished by then", [s.gloss for s in reference.signs if s.stop <= sent],
                 glosses)


if __name__ == "__main__":
    web_picture()
