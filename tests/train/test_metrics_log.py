"""The metrics log continues where a resumed run continues, in metrics.csv and in TensorBoard alike."""

from __future__ import annotations

import csv
import time

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from qslr.train.metrics_log import MetricsLog, read_metrics


def scalars(work, tag: str) -> list[tuple[int, float]]:
    events = EventAccumulator(str(work / "tensorboard"))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def test_a_run_resumed_from_an_earlier_checkpoint_replaces_what_was_logged_after_it(tmp_path):
    first = MetricsLog(tmp_path, 0)
    for step in range(1, 11):
        first.step_loss(step, 100.0 + step)
    first.append(epoch=0, global_step=4, train_loss=3.0, dev_wer=90.0, dev_wer_conv=95.0, lr=1e-3)
    first.append(epoch=1, global_step=8, train_loss=2.0, dev_wer=80.0, dev_wer_conv=85.0, lr=1e-3)
    first.close()  # as if it died at step 10, its last checkpoint at step 8
    second = MetricsLog(tmp_path, 8)
    for step in range(9, 13):
        second.step_loss(step, 200.0 + step)
    second.append(epoch=2, global_step=12, train_loss=1.0, dev_wer=70.0, dev_wer_conv=75.0, lr=2e-4)
    second.close()
    assert [(r["global_step"], r["dev_wer"], r["dev_wer_conv"]) for r in read_metrics(tmp_path / "metrics.csv")] == [
        ("4", "90", "95"), ("8", "80", "85"), ("12", "70", "75")]
    assert scalars(tmp_path, "loss/train_step") == [(s, 100.0 + s) for s in range(1, 9)] + \
        [(s, 200.0 + s) for s in range(9, 13)]
    assert scalars(tmp_path, "wer/dev_conv") == [(4, 95.0), (8, 85.0), (12, 75.0)]
    assert [(s, pytest.approx(v)) for s, v in scalars(tmp_path, "optim/lr")] == [(4, 1e-3), (8, 1e-3), (12, 2e-4)]


def test_a_metrics_file_from_before_the_loss_terms_keeps_its_rows_under_the_new_columns(tmp_path):
    old = ["epoch", "global_step", "lr", "train_loss", "skipped_batches", "clips_per_s", "frames_per_s",
           "data_wait_fraction", "dev_wer", "epoch_seconds"]
    with (tmp_path / "metrics.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(old)
        writer.writerow(["0", "125", "0.001", "43.18", "0", "24.0", "2726.4", "0.15", "100", "45.0"])
    log = MetricsLog(tmp_path, 125)
    log.append(epoch=1, global_step=250, train_loss=37.5, loss_SeqCTC=20.0, loss_ConvCTC=17.5, dev_wer=99.0,
               dev_wer_conv=98.0)
    log.close()
    rows = read_metrics(tmp_path / "metrics.csv")
    assert [(r["global_step"], r["train_loss"], r["frames_per_s"], r["loss_SeqCTC"], r["dev_wer_conv"])
            for r in rows] == [("125", "43.18", "2726.4", "", ""), ("250", "37.5", "", "20", "98")]


def test_unknown_columns_are_refused(tmp_path):
    log = MetricsLog(tmp_path)
    with pytest.raises(KeyError, match="dev_cer"):
        log.append(global_step=1, dev_cer=3.0)
    log.close()


@pytest.mark.slow
def test_a_run_resumed_within_the_same_second_is_still_read_after_the_one_before(tmp_path):
    """Event files are read in name order: the second a file was made, then host, process and a counter
    compared as text, so a file numbered 10 made in the same second as one numbered 9 would be read first.
    Here the earlier run's file is named as if made in the coming second by a process that sorts last."""
    first = MetricsLog(tmp_path, 0)
    first.append(epoch=0, global_step=4, train_loss=3.0, dev_wer=90.0, lr=1e-3)
    first.close()
    (earlier,) = (tmp_path / "tensorboard").glob("events.out.tfevents.*")
    host = earlier.name.split(".")[4]
    earlier.rename(earlier.with_name(f"events.out.tfevents.{int(time.time()) + 1}.{host}.99999999.9"))
    second = MetricsLog(tmp_path, 4)
    second.append(epoch=1, global_step=8, train_loss=2.0, dev_wer=80.0, lr=1e-3)
    second.close()
    names = sorted(p.name for p in (tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert names[0].endswith(".99999999.9")  # the earlier run's file comes first in the order TensorBoard reads
    assert scalars(tmp_path, "wer/dev") == [(4, 90.0), (8, 80.0)]
