"""Served limits of the test repository: a maximum below the default, so that a too-long video is cheap."""

MAX_FRAMES = 180
