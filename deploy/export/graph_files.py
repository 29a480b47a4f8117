"""An exported graph's file as the commands read it: a file that is not an ONNX graph, or not one written by
`qslr export onnx`, is refused in one line naming it. Only protobuf is imported, so that `qslr export check`
stays light."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path


class GraphReadError(ValueError):
    """A file that is not an ONNX graph, or not one written by `qslr export onnx`; the message names it."""


@contextlib.contextmanager
def reading_graph(path: str | Path) -> Iterator[None]:
    """Name a file that is not an ONNX graph (protobuf's own error names neither the file nor the problem)."""
    from google.protobuf.message import DecodeError

    try:
        yield
    except DecodeError:
        raise GraphReadError(f"{path}: not an ONNX graph (it does not parse as one)") from None


def exported_frame_size(metadata: Mapping[str, str], path: str | Path) -> tuple[int, int]:
    """(height, width) of the frames a graph from `qslr export onnx` takes, as its metadata states."""
    if not {"qslr_height", "qslr_width"} <= metadata.keys():
        raise GraphReadError(f"{path}: not a graph written by `qslr export onnx` (its metadata states no frame size)")
    return int(metadata["qslr_height"]), int(metadata["qslr_width"])
