"""Uploads recognised by a model of the page's own (`qslr web --checkpoint`), answering as the server's client does:
a video that cannot be recognised is a RecognitionError, as the server's refusal of it would be."""

from __future__ import annotations

from qslr.deploy.frontends.recognise import LocalRecogniser
from qslr.deploy.serving.client import RecognitionError
from qslr.deploy.serving.recognition import Recognition
from qslr.pipelines.framing_options import FramingOptions


class LocalUploads:
    """One per worker thread (as the page makes its clients): a recogniser's beam searches hold their state while
    they run."""

    def __init__(self, recogniser: LocalRecogniser):
        self.recogniser = recogniser

    def recognise_bytes(self, data: bytes, beam_size: int | None = None, top_k: int | None = None,
                        framing: FramingOptions | None = None) -> Recognition:
        try:
            return self.recogniser.recognise(data, self.recogniser.options(beam_size, top_k), framing)
        except (ValueError, OSError) as exc:  # a refused video or request, as the server refuses it (400)
            raise RecognitionError(" ".join(str(exc).split()), "400") from None
