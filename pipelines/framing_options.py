"""What a request asks of the framing of its video (pipelines/framing.py): crop or letterbox a picture of another
aspect than training's, and where the signer is. Light (no video libraries): clients and command lines take it."""

from __future__ import annotations

from dataclasses import dataclass

from qslr.pipelines.source_framing import FRAMINGS


@dataclass(frozen=True)
class Region:
    """A rectangle of the upright picture, in pixels: where the signer is."""

    x: int
    y: int
    width: int
    height: int

    @classmethod
    def parse(cls, text: str) -> Region:
        parts = [part.strip() for part in str(text).split(",")]
        if len(parts) != 4 or not all(part.isdigit() for part in parts):
            raise ValueError(f"a region is x,y,width,height in whole pixels of the upright picture, got {text!r}")
        region = cls(*map(int, parts))
        if not region.width or not region.height:
            raise ValueError(f"a region needs a positive width and height, got {text!r}")
        return region

    def __str__(self) -> str:
        return f"{self.x},{self.y},{self.width},{self.height}"


@dataclass(frozen=True)
class FramingOptions:
    """A request's choice: how to fit another aspect (None: the model's default) and where the signer is."""

    framing: str | None = None
    region: Region | None = None

    def __post_init__(self) -> None:
        if self.framing is not None and self.framing not in FRAMINGS:
            raise ValueError(f"framing must be one of {', '.join(FRAMINGS)}, got {self.framing!r}")
