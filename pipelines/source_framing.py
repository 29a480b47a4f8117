"""How a dataset's frames were made from its source videos, as prepared datasets and checkpoints record it.

Light (no video libraries): the data commands, the prepared-dataset format and the checkpoint read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

CROP, LETTERBOX, RESIZE = "crop", "letterbox", "resize"
FRAMINGS = (CROP, LETTERBOX)  # how a front end fits a picture of another aspect than training's
# How a dataset's frames were made from its source videos: the whole picture resized to the frame size (its
# aspect changed where the two differ), centre-cropped to an aspect first, or fitted whole into it with bars.
RULES = (RESIZE, CROP, LETTERBOX)


@dataclass(frozen=True)
class SourceFraming:
    """How a dataset's frames were made from its source videos: the aspect (width / height) of the picture a frame
    shows, and the rule that made it the frame size."""

    aspect: float
    rule: str = RESIZE

    def __post_init__(self) -> None:
        if not (isinstance(self.aspect, (int, float)) and self.aspect > 0):
            raise ValueError(f"a source aspect must be a positive number, got {self.aspect!r}")
        if self.rule not in RULES:
            raise ValueError(f"unknown framing rule {self.rule!r} (known: {', '.join(RULES)})")

    @property
    def default_framing(self) -> str:
        """How a video of another aspect is fitted unless asked otherwise: as training fitted its sources."""
        return LETTERBOX if self.rule == LETTERBOX else CROP

    @classmethod
    def of_size(cls, width: int, height: int, rule: str = RESIZE) -> SourceFraming:
        return cls(width / height, rule)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping, where: str) -> SourceFraming:
        if not isinstance(data, Mapping) or set(data) != {"aspect", "rule"}:
            raise ValueError(f"{where}: expected {{\"aspect\": width / height, \"rule\": one of {', '.join(RULES)}}}, "
                             f"got {data!r}")
        try:
            return cls(float(data["aspect"]), data["rule"])
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: {exc}") from None
