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
