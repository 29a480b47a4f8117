"""The README's picture of the web page (docs/web.png): a trained model's repository on a real tritonserver, the
page on it, a long video of held-out clips joined (`qslr data concat`'s joiner) uploaded in a real Chromium, the
page photographed with the video at a gloss. It prints the reference, the answer and its word error rate, for
the picture's caption.

    python -m qslr.tools.web_picture --repository runs/synthetic/triton --data data/synthetic --clips 8

Needs the `web` extra (Starlette, uvicorn, Playwright) and a Chromium (`make chromium` installs Debian's).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import click

from qslr.deploy.frontends.web.app import UploadLimits, create_app
from qslr.deploy.frontends.web.in_thread import serving_in_thread
from qslr.deploy.serving.client import CslrClient
from qslr.deploy.serving.server import Ports, TritonServer, free_port
from qslr.deploy.serving.supervision import exit_on_signals
from qslr.pipelines.atomic_output import write_bytes_atomic
from qslr.pipelines.long_videos import choose_clips, join_clips
from qslr.pipelines.prepared import PreparedDataset
from qslr.train.scoring.alignment import align, count


def _until(page, expression: str, timeout: float = 30.0) -> None:
    """Poll a page expression: the page's policy forbids the eval that Playwright's wait_for_function uses."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise click.ClickException(f"the page did not reach {expression} within {timeout:g} s")
        time.sleep(0.05)


@click.command()
@click.option("--repository", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="A repository from `qslr triton build` of a trained checkpoint.")
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--split", default="test", show_default=True)
@click.option("--clips", type=int, default=8, show_default=True, help="Held-out clips joined into the video.")
@click.option("--first", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("docs/web.png"),
              show_default=True)
@click.option("--chromium", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=Path("/usr/bin/chromium"), show_default=True)
def web_picture(repository: Path, data: Path, split: str, clips: int, first: int, out: Path, chromium: Path) -> None:
    """Photograph the web page answering a long video of held-out clips."""
    from playwright.sync_api import sync_playwright

    dataset = PreparedDataset(data)
    with tempfile.TemporaryDirectory(prefix="qslr-web-picture-") as tmp:
        video = Path(tmp) / f"{clips}-{split}-clips.webm"
        joined = join_clips(dataset, choose_clips(dataset, split, clips, first), video)
        with exit_on_signals(), TritonServer(repository, Ports(free_port(), free_port(), free_port())) as server, \
                serving_in_thread(create_app(lambda: CslrClient(server.http_url), UploadLimits())) as url, \
                sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(chromium),
                                                 args=["--headless", "--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1000, "height": 800})
            page.goto(url)
            page.set_input_files("#file", str(video))
            _until(page, "() => document.getElementById('status').textContent.includes('latency')"
                         " || !document.getElementById('error').hidden", 120)
            if page.is_visible("#error"):
                raise click.ClickException(f"the page refused the video: {page.text_content('#error')}")
            glosses = page.locator("#track .gloss").all_text_contents()
            # The video at the middle gloss, without the player's loading spinner over it.
            middle = page.locator("#track .gloss").nth(len(glosses) // 2)
            middle.click()
            _until(page, "() => !document.getElementById('video').seeking"
                         " && document.getElementById('video').readyState >= 3")
            page.mouse.move(0, 0)
            page.wait_for_timeout(1000)
            write_bytes_atomic(out, page.screenshot(full_page=True))
            browser.close()
    reference = joined.glosses.split()
    counts = count(align(reference, glosses))
    click.echo(f"wrote {out}: {joined.frames} frames ({joined.frames / joined.fps:.1f} s), {clips} {split} clips "
               f"from {first}")
    click.echo(f"reference: {' '.join(reference)}")
    click.echo(f"answer:    {' '.join(glosses)}")
    click.echo(f"WER {counts.wer:.2f} % ({counts.substitutions} substituted, {counts.deletions} deleted, "
               f"{counts.insertions} inserted of {counts.reference_words})")


if __name__ == "__main__":
    web_picture()
