"""Sending videos to the served `cslr` ensemble with tritonclient (HTTP or gRPC)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from qslr.deploy import model_names as models
from qslr.deploy import tensor_names as names
from qslr.deploy.served_limits import pad_to_minimum
from qslr.deploy.serving.recognition import Alternative, Recognition
from qslr.pipelines.framing_options import FramingOptions

__all__ = ["CslrClient", "Recognition", "RecognitionError"]


def _strings(array: np.ndarray) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in array.reshape(-1)]


def _floats(array: np.ndarray) -> list[float]:
    return [float(v) for v in array.reshape(-1)]


class RecognitionError(RuntimeError):
    """A request the server (or the way to it) failed; ``status`` is the server's status for it ("400" over HTTP,
    "StatusCode.INVALID_ARGUMENT" over gRPC), None where no answer came (a timeout, a refused connection)."""

    def __init__(self, message: str, status: str | None = None):
        super().__init__(message)
        self.status = status

    @classmethod
    def of(cls, exc: Exception) -> RecognitionError:
        status = exc.status() if callable(getattr(exc, "status", None)) else None
        return cls(str(exc).strip(), None if status is None else str(status))


def _module(grpc: bool):
    if grpc:
        import tritonclient.grpc as module
    else:
        import tritonclient.http as module
    return module


class CslrClient:
    def __init__(self, url: str, grpc: bool = False, model: str = models.CSLR, timeout: float = 120.0):
        self.module = _module(grpc)
        self.grpc, self.model = grpc, model
        kwargs = {} if grpc else {"connection_timeout": timeout, "network_timeout": timeout}
        self.client = self.module.InferenceServerClient(url, **kwargs)
        self._parameters: dict[tuple[str, str], int] = {}

    def _request(self, model: str, inputs, beam_size: int | None, top_k: int | None,
                 framing: FramingOptions | None = None) -> Recognition:
        """``framing``: for an uploaded video (whose answer then says what was done to it); None for frames."""
        tensors = names.RECOGNITION if framing is None else names.VIDEO_RECOGNITION
        outputs = [self.module.InferRequestedOutput(n) for n in tensors]
        region = str(framing.region) if framing is not None and framing.region is not None else None
        parameters = {key: value for key, value in ((names.BEAM_SIZE_PARAMETER, beam_size),
                                                     (names.TOP_K_PARAMETER, top_k),
                                                     (names.FRAMING_PARAMETER, framing and framing.framing),
                                                     (names.REGION_PARAMETER, region)) if value is not None}
        try:
            result = self.client.infer(model, inputs, outputs=outputs, parameters=parameters or None)
        except Exception as exc:  # noqa: BLE001 - tritonclient raises its own exception types per protocol
            raise RecognitionError.of(exc) from None
        alternatives = [Alternative(text.split(), score) for text, score in
                        zip(_strings(result.as_numpy(names.ALTERNATIVES)),
                            _floats(result.as_numpy(names.ALTERNATIVE_SCORES)), strict=True)]
        return Recognition(_strings(result.as_numpy(names.GLOSSES)),
                           result.as_numpy(names.GLOSS_STEPS).reshape(-1).tolist(),
                           _floats(result.as_numpy(names.SCORE))[0], _floats(result.as_numpy(names.GLOSS_START_S)),
                           _floats(result.as_numpy(names.GLOSS_END_S)), alternatives,
                           json.loads(_strings(result.as_numpy(names.FRAMING))[0]) if framing is not None else None)

    def recognise_bytes(self, data: bytes, beam_size: int | None = None, top_k: int | None = None,
                        framing: FramingOptions | None = None) -> Recognition:
        """``beam_size`` (0: greedy) and ``top_k`` (alternatives) for this request; None: the server's. ``framing``:
        crop or letterbox, and the signer's region (default: the model's framing, the whole picture)."""
        array = np.frombuffer(data, dtype=np.uint8)[None]
        tensor = self.module.InferInput(names.VIDEO, list(array.shape), "UINT8")
        tensor.set_data_from_numpy(array)
        return self._request(self.model, [tensor], beam_size, top_k, framing or FramingOptions())

    def recognise_file(self, path: str | Path, beam_size: int | None = None, top_k: int | None = None,
                       framing: FramingOptions | None = None) -> Recognition:
        return self.recognise_bytes(Path(path).read_bytes(), beam_size, top_k, framing)

    def served_parameter(self, model: str, key: str, default: int) -> int:
        """An integer parameter of a served model's config (``default`` where it states none), asked once."""
        if (model, key) not in self._parameters:
            try:
                config = self.client.get_model_config(model, **({"as_json": True} if self.grpc else {}))
            except Exception as exc:  # noqa: BLE001 - tritonclient raises its own exception types per protocol
                raise RecognitionError.of(exc) from None
            config = config.get("config", config)
            value = config.get("parameters", {}).get(key, {}).get("string_value", str(default))
            self._parameters[model, key] = int(value)
        return self._parameters[model, key]

    def served_min_frames(self) -> int:
        """The repository's minimum clip length (1 for one that states none)."""
        return self.served_parameter(models.VISUAL, "min_frames", 1)

    def recognise_frames(self, frames: np.ndarray, beam_size: int | None = None, top_k: int | None = None,
                         fps: float | None = None) -> Recognition:
        """Raw uint8 frames (T, H, W, 3) through the `cslr_frames` ensemble, padded to the served minimum
        (a TensorRT visual model has no python step in front of it to pad them). ``fps``: their frame rate,
        where known; the server otherwise places the glosses at the model's training frame rate."""
        data = pad_to_minimum(frames, self.served_min_frames())[None] if frames.ndim == 4 else frames[None]
        tensors = [self.module.InferInput(names.FRAMES, list(data.shape), "UINT8"),
                   self.module.InferInput(names.LENGTHS, [1, 1], "INT64")]
        tensors[0].set_data_from_numpy(data)
        tensors[1].set_data_from_numpy(np.array([[len(frames)]], dtype=np.int64))
        if fps is not None:
            tensors.append(self.module.InferInput(names.FPS, [1, 1], "FP32"))
            tensors[-1].set_data_from_numpy(np.array([[fps]], dtype=np.float32))
        return self._request(models.CSLR_FRAMES, tensors, beam_size, top_k)

    def close(self) -> None:
        self.client.close()
