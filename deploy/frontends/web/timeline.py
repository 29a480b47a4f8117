"""The timeline of an uploaded video, in seconds: its frames' times and its duration, as the page draws it.

The times come from the container's packet timestamps, read without decoding: a webcam recording has a
variable frame rate and often no duration in its header. The glosses on it are placed by the server
(`gloss_start_s`, `gloss_end_s`), as for every other front end.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import av


@dataclass(frozen=True)
class VideoTiming:
    frame_times: tuple[float, ...]  # seconds from the first frame, in presentation order
    duration: float

    @property
    def frames(self) -> int:
        return len(self.frame_times)

    @property
    def fps(self) -> float:
        return self.frames / self.duration if self.duration > 0 else 0.0


def read_timing(data: bytes) -> VideoTiming:
    """Frame times and duration of the first video stream of a video file's bytes (ValueError if it has none)."""
    try:
        with av.open(io.BytesIO(data)) as container:
            if not container.streams.video:
                raise ValueError("holds no video stream")
            stream = container.streams.video[0]
            times, ends = [], []
            for packet in container.demux(stream):
                stamp = packet.pts if packet.pts is not None else packet.dts
                if stamp is None or packet.size == 0:  # the demuxer's closing empty packet
                    continue
                times.append(float(stamp * packet.time_base))
                ends.append(times[-1] + float(packet.duration * packet.time_base) if packet.duration else None)
            rate = stream.average_rate or stream.guessed_rate
    except av.FFmpegError as exc:
        raise ValueError(f"cannot read the video's timing ({exc})") from None
    if not times:
        raise ValueError("the video has no frames")
    order = sorted(range(len(times)), key=times.__getitem__)
    first, last = times[order[0]], order[-1]
    # Without a duration on the last packet, the last frame lasts as long as the frames before it did.
    period = (times[last] - first) / (len(times) - 1) if len(times) > 1 else (1.0 / float(rate) if rate else 0.0)
    end = ends[last] if ends[last] is not None else times[last] + period
    return VideoTiming(tuple(times[i] - first for i in order), end - first)
