"""Served limits of the test repository: a maximum below the default, so that a too-long video is cheap."""

MAX_FRAMES = 180
MAX_SECONDS = 30.0  # a whole video's longest duration: a 31-second video of blank 72x72 frames is a few KiB

# The INT8 graph of the session checkpoint is calibrated on this many training clips.
CALIBRATION_CLIPS = 6
# The variant repository: a visual model whose batch limit is below the served batch, and every python model
# but cslr in two instances.
VARIANT_BATCH, VARIANT_VISUAL_BATCH, VARIANT_INSTANCES = 8, 2, 2
