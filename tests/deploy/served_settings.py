"""Served limits of the test repository: a maximum below the default, so that a too-long video is cheap."""

MAX_FRAMES = 180
MAX_SECONDS = 30.0  # a whole video's longest duration: a 31-second video of blank 72x72 frames is a few KiB
