"""The overrides that shrink the `synthetic` preset's model for the tests' quick runs, written once.

A plain module beside the root conftest (pytest puts this folder on the path), since `from conftest import ...` is
ambiguous between the suite's several conftest files.
"""

# The small CNN's channels and feature width; a preset with another encoder takes it whole (see test_presets).
TINY_CNN = "{channels: [4, 8, 8], out_dim: 32}"
MODEL = [f"model.frame_encoder.options={TINY_CNN}", "model.temporal.hidden_size=24", "model.sequence.hidden_size=24"]
# Batches of two clips, one loader worker: the tiny corpora have a handful of videos per split.
RUN = ["data.batch_size=2", "data.eval_batch_size=4", "data.num_workers=1"]
SMALL_MODEL = [*MODEL, *RUN]
# Two gloo ranks trained straight through: the run every distributed resume and restart is held to (the session
# fixture `ddp_straight_run`). Batches of one clip: 4 steps an epoch of the tiny corpus's 8 training clips on two
# ranks. The reference loader, so that each rank has loader processes to leave behind; no Dist term, so that a term
# left out is seen absent from the logs.
DDP_RUN = [*SMALL_MODEL, "data.batch_size=1", "data.loader=reference", "train.epochs=2", "train.log_interval=1",
           "loss.weights.Dist=0"]
