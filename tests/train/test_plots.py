"""`qslr eval plot`: real PNG files of the asked size, holding what the run logged and what the model computes."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from matplotlib.colors import to_rgb
from PIL import Image

from qslr.model.checkpoints import load_file, save_file
from qslr.model.decoding import Hypothesis
from qslr.pipelines.prepared import PreparedDataset
from qslr.pipelines.video_io import read_frames
from qslr.tools.cli import cli
from qslr.train.checkpointing import load_trained
from qslr.train.config import build, deep_merge, parse_overrides
from qslr.train.data import make_loader
from qslr.train.plots.curves import plot_curves
from qslr.train.plots.figure import PictureSize
from qslr.train.plots.posteriors import draw_posteriors
from qslr.train.plots.video_posteriors import checkpoint_decoder, hypothesis_segments, video_posteriors

COLUMNS = ["epoch", "global_step", "lr", "train_loss", "loss_SeqCTC", "loss_ConvCTC", "loss_Dist", "dev_wer",
           "dev_wer_conv"]
ROWS = [[0, 50, 1e-3, 40.0, 21.0, 19.0, "", 100.0, 100.0],
        [1, 100, 1e-3, 25.0, 13.0, 12.0, "", 61.5, 70.25],
        [2, 150, 2e-4, 9.5, 5.0, 4.5, "", 12.0, 18.5]]


def write_metrics(folder: Path, columns: list[str], rows: list[list]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "metrics.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(rows)
    return folder


def png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def assert_drawn(pixels: np.ndarray) -> None:
    """Not a blank canvas: a good part of it is not background, in many colours."""
    background = (pixels == pixels[0, 0]).all(-1)
    assert background.mean() < 0.95
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50


def lines_by_label(axes) -> dict[str, tuple[list, list]]:
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in axes.get_lines()}


def test_curves_of_a_run_are_a_png_of_the_asked_size_with_every_logged_series(tmp_path):
    run = write_metrics(tmp_path / "run", COLUMNS, ROWS)
    out = tmp_path / "pictures" / "curves.png"
    result = CliRunner().invoke(cli, ["eval", "plot", "curves", str(run), "--out", str(out), "--size", "900x320",
                                      "--dpi", "80"])
    assert result.exit_code == 0, result.output
    pixels = png(out)
    assert pixels.shape == (320, 900, 3)
    assert_drawn(pixels)
    assert not list(out.parent.glob(".*partial*"))  # written whole, nothing left beside it

    drawn = plot_curves(run, PictureSize(900, 320, 80))
    steps = [50, 100, 150]
    assert lines_by_label(drawn.losses) == {"total (weighted)": (steps, [40.0, 25.0, 9.5]),
                                            "SeqCTC": (steps, [21.0, 13.0, 5.0]),
                                            "ConvCTC": (steps, [19.0, 12.0, 4.5])}  # Dist was not logged
    assert lines_by_label(drawn.wer) == {"BiLSTM (SeqCTC)": (steps, [100.0, 61.5, 12.0]),
                                         "conv (ConvCTC)": (steps, [100.0, 70.25, 18.5])}
    assert lines_by_label(drawn.lr) == {"learning rate": (steps, [1e-3, 1e-3, 2e-4])}


def test_curves_of_a_metrics_file_from_before_the_loss_terms(tmp_path):
    run = write_metrics(tmp_path / "old", ["epoch", "global_step", "lr", "train_loss", "dev_wer"],
                        [[0, 125, 1e-3, 43.2, 100.0], [1, 250, 1e-3, 37.9, ""], [2, 375, 1e-3, 33.8, 99.8]])
    drawn = plot_curves(run, PictureSize(600, 200))
    assert lines_by_label(drawn.losses) == {"total (weighted)": ([125, 250, 375], [43.2, 37.9, 33.8])}
    assert lines_by_label(drawn.wer) == {"BiLSTM (SeqCTC)": ([125, 375], [100.0, 99.8])}  # epoch 1 not scored


@pytest.mark.parametrize("make, message", [
    (lambda tmp: tmp / "nowhere", "nowhere: no such run folder"),
    (lambda tmp: (tmp / "empty").mkdir() or tmp / "empty", "empty/metrics.csv: not found"),
    (lambda tmp: write_metrics(tmp / "bad", COLUMNS, [ROWS[0], [1, 100, 1e-3, 25.0, 13.0, 12.0, "", "n/a", ""]]),
     "bad/metrics.csv:3: dev_wer 'n/a' is not a number"),
    (lambda tmp: write_metrics(tmp / "header", COLUMNS, []), "header/metrics.csv: holds no epochs yet"),
])
def test_curves_refuse_a_missing_or_broken_run_in_one_line(tmp_path, make, message):
    result = CliRunner().invoke(cli, ["eval", "plot", "curves", str(make(tmp_path)), "--out",
                                      str(tmp_path / "c.png")])
    assert result.exit_code == 1
    assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "c.png").exists()


@pytest.fixture(scope="module")
def recognising_checkpoint(checkpoint, tiny_corpus, tmp_path_factory) -> Path:
    """The session's one-epoch model with its BiLSTM classifier redrawn at random around what the BiLSTM outputs
    for the first test video: a real network whose answer changes over that video, glosses with blanks between
    them (after one epoch the model gives the same label throughout). The redrawn classifiers are plain Linear
    layers, whatever the preset's are: centring needs a bias, which SMKD's weight-normalised one lacks."""
    trained = load_trained(checkpoint)
    features: list[torch.Tensor] = []
    trained.model.classifier.register_forward_hook(lambda module, inputs, output: features.append(inputs[0][0]))
    evaluation_posteriors(trained, PreparedDataset(tiny_corpus[0]).records("test")[0].id)
    steps = features[0]  # (T', D)
    spread = steps.std(0).clamp_min(1e-6)
    data = load_file(checkpoint, trust=True)
    weights = data["model_state_dict"]
    generator = torch.Generator().manual_seed(8)
    classes = data["num_classes"]
    weight = torch.randn(classes, len(spread), generator=generator) / spread * 5 / len(spread) ** 0.5
    weights["classifier.weight"], weights["classifier.bias"] = weight, -(weight @ steps.mean(0))
    conv_width = data["config"]["model"]["temporal"]["hidden_size"]
    weights["conv_classifier.weight"] = torch.randn(classes, conv_width, generator=generator)
    weights["conv_classifier.bias"] = torch.zeros(classes)
    data["config"]["model"]["classifier"] = {"weight_norm": False, "shared": False}
    path = tmp_path_factory.mktemp("plots") / "recognising.pt"
    save_file(path, data)
    return path


def evaluation_posteriors(trained, video_id: str) -> np.ndarray:
    """The oracle: the posteriors `qslr eval run` computes for a video, through the reference loader."""
    config = build(type(trained.config), deep_merge(trained.config.to_dict(), parse_overrides(
        ["data.loader=reference", "data.num_workers=0", "data.eval_batch_size=1"])), "test")
    model = trained.model.eval()
    for batch in make_loader(config, "test", train=False, vocab=trained.vocab):
        if batch.ids == [video_id]:
            with torch.no_grad():
                output = model(batch.videos, batch.lengths)
            return output.sequence_logits[0, :int(output.lengths[0])].softmax(-1).numpy()
    raise AssertionError(f"{video_id} is not in the test split")


def greedy_spans(posteriors: np.ndarray, merge_repeats: bool) -> list[tuple[int, int, int]]:
    """(gloss id, first step, one past the last) along the best path; a gloss repeated across blanks is one span
    under the original's rule (``merge_repeats``), two under CTC's own."""
    spans: list[list[int]] = []
    previous = 0
    for step, label in enumerate(posteriors.argmax(-1).tolist()):
        if label != 0 and spans and spans[-1][0] == label and (merge_repeats or previous == label):
            spans[-1][2] = step + 1
        elif label != 0:
            spans.append([label, step, step + 1])
        previous = label
    return [tuple(span) for span in spans]


def test_posteriors_picture_draws_the_models_posteriors_and_the_decoded_spans(tiny_corpus, recognising_checkpoint,
                                                                             tmp_path):
    dataset = PreparedDataset(tiny_corpus[0])
    record = dataset.records("test")[0]
    video = dataset.video_path(record)
    out = tmp_path / "posteriors.png"
    result = CliRunner().invoke(cli, ["eval", "plot", "posteriors", "--checkpoint", str(recognising_checkpoint),
                                      str(video), "--out", str(out), "--size", "800x440", "--dpi", "90",
                                      "--beam-size", "0"])
    assert result.exit_code == 0, result.output
    pixels = png(out)
    assert pixels.shape == (440, 800, 3)
    assert_drawn(pixels)

    trained = load_trained(recognising_checkpoint)
    expected = evaluation_posteriors(trained, record.id)
    merge_repeats = trained.config.decode.merge_repeats
    spans = greedy_spans(expected, merge_repeats)
    assert len({gloss for gloss, _, _ in spans}) >= 2, "the test model must recognise glosses for this to test"
    id_to_gloss = {index: gloss for gloss, index in trained.vocab.items()}
    assert result.output.splitlines()[0] == " ".join(id_to_gloss[gloss] for gloss, _, _ in spans)

    decoded = video_posteriors(trained, video, checkpoint_decoder(trained, 0))
    drawn = draw_posteriors(decoded, PictureSize(800, 440, 90))
    seconds_per_step = 4 / record.fps  # K5-P2-K5-P2: four frames per output step
    centres = (np.arange(len(expected)) + 0.5) * seconds_per_step
    curves = {line.get_label(): line for line in drawn.posteriors.get_lines()}
    assert set(curves) == {"blank"} | {id_to_gloss[gloss] for gloss, _, _ in spans}
    for label, line in curves.items():
        column = 0 if label == "blank" else trained.vocab[label]
        np.testing.assert_allclose(line.get_xdata(), centres, rtol=1e-6)
        np.testing.assert_allclose(line.get_ydata(), expected[:, column], atol=1e-5, err_msg=label)
    assert curves["blank"].get_alpha() < 0.5 < (curves[id_to_gloss[spans[0][0]]].get_alpha() or 1.0)

    bars = drawn.segments.patches
    assert [bar.get_x() for bar in bars] == pytest.approx([start * seconds_per_step for _, start, _ in spans])
    assert [bar.get_width() for bar in bars] == pytest.approx(
        [(end - start) * seconds_per_step for _, start, end in spans])
    assert [text.get_text() for text in drawn.segments.texts] == [id_to_gloss[gloss] for gloss, _, _ in spans]
    for bar, (gloss, _, _) in zip(bars, spans, strict=True):  # each bar in its gloss's colour
        assert to_rgb(bar.get_facecolor()) == pytest.approx(to_rgb(curves[id_to_gloss[gloss]].get_color()))

    # The strip: frames of the video in time order, tiling the axis from 0 to the last output step's end.
    frames = read_frames(video)
    images = drawn.frames.get_images()
    assert len(images) == len(drawn.thumbnails) >= 2 and drawn.thumbnails == sorted(drawn.thumbnails)
    for image, index in zip(images, drawn.thumbnails, strict=True):
        assert np.array_equal(np.asarray(image.get_array()), frames[index])
    edges = [image.get_extent()[:2] for image in images]
    assert edges[0][0] == 0 and edges[-1][1] == pytest.approx(len(expected) * seconds_per_step)
    assert all(left == pytest.approx(previous[1]) for previous, (left, _) in zip(edges, edges[1:], strict=False))


def test_posteriors_refuse_a_bad_checkpoint_or_an_unreadable_video_in_one_line(tiny_corpus, checkpoint, tmp_path):
    dataset = PreparedDataset(tiny_corpus[0])
    video = dataset.video_path(dataset.records("test")[0])
    not_a_checkpoint = tmp_path / "notes.pt"
    not_a_checkpoint.write_text("not a checkpoint")
    not_a_video = tmp_path / "clip.webm"
    not_a_video.write_bytes(b"\x1a\x45\xdf\xa3 this is no video")
    for arguments, message in (([str(not_a_checkpoint), str(video)], "notes.pt: not a readable PyTorch checkpoint"),
                               ([str(checkpoint), str(not_a_video)], "clip.webm: cannot decode video")):
        result = CliRunner().invoke(cli, ["eval", "plot", "posteriors", "--checkpoint", arguments[0], arguments[1],
                                          "--out", str(tmp_path / "p.png")])
        assert result.exit_code == 1
        assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output
        assert not (tmp_path / "p.png").exists()


def test_hypothesis_segments_run_from_each_glosss_start_to_its_last_step():
    hypothesis = Hypothesis(["A", "B", "A"], [1, 2, 1], [1, 4, 9], [1, 5, 9], 0.0)
    assert [(s.gloss, s.id, s.start, s.end) for s in hypothesis_segments(hypothesis)] == [
        ("A", 1, 1, 2), ("B", 2, 4, 6), ("A", 1, 9, 10)]
