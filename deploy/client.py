"""Sending videos to the served `cslr` ensemble with tritonclient (HTTP or gRPC)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deploy import tensor_names as names
from deploy.served_limits import pad_to_minimum

VISUAL_MODEL = "visual"
DECODER_MODEL = "ctc_decoder"


@dataclass(frozen=True)
class Recognition:
    glosses: list[str]
    steps: list[int]
    score: float


class RecognitionError(RuntimeError):
    pass


def _module(grpc: bool):
    if grpc:
        import tritonclient.grpc as module
    else:
        import tritonclient.http as module
    return module


class CslrClient:
    def __init__(self, url: str, grpc: bool = False, model: str = "cslr", timeout: float = 120.0):
        self.module = _module(grpc)
        self.grpc, self.model = grpc, model
        kwargs = {} if grpc else {"connection_timeout": timeout, "network_timeout": timeout}
        self.client = self.module.InferenceServerClient(url, **kwargs)
        self._parameters: dict[tuple[str, str], int] = {}

    def _request(self, model: str, inputs, beam_size: int | None) -> Recognition:
        outputs = [self.module.InferRequestedOutput(n) for n in (names.GLOSSES, names.GLOSS_STEPS, names.SCORE)]
        parameters = {names.BEAM_SIZE_PARAMETER: beam_size} if beam_size is not None else None
        try:
            result = self.client.infer(model, inputs, outputs=outputs, parameters=parameters)
        except Exception as exc:  # noqa: BLE001 - tritonclient raises its own exception types per protocol
            raise RecognitionError(str(exc).strip()) from None
        glosses = result.as_numpy(names.GLOSSES).reshape(-1)
        return Recognition([g.decode() if isinstance(g, bytes) else str(g) for g in glosses],
                           result.as_numpy(names.GLOSS_STEPS).reshape(-1).tolist(),
                           float(result.as_numpy(names.SCORE).reshape(-1)[0]))

    def recognise_bytes(self, data: bytes, beam_size: int | None = None) -> Recognition:
        array = np.frombuffer(data, dtype=np.uint8)[None]
        tensor = self.module.InferInput(names.VIDEO, list(array.shape), "UINT8")
        tensor.set_data_from_numpy(array)
        return self._request(self.model, [tensor], beam_size)

    def recognise_file(self, path: str | Path, beam_size: int | None = None) -> Recognition:
        return self.recognise_bytes(Path(path).read_bytes(), beam_size)

    def served_parameter(self, model: str, key: str, default: int) -> int:
        """An integer parameter of a served model's config (``default`` where it states none), asked once."""
        if (model, key) not in self._parameters:
            try:
                config = self.client.get_model_config(model, **({"as_json": True} if self.grpc else {}))
            except Exception as exc:  # noqa: BLE001 - tritonclient raises its own exception types per protocol
                raise RecognitionError(str(exc).strip()) from None
            config = config.get("config", config)
            value = config.get("parameters", {}).get(key, {}).get("string_value", str(default))
            self._parameters[model, key] = int(value)
        return self._parameters[model, key]

    def served_min_frames(self) -> int:
        """The repository's minimum clip length (1 for one that states none)."""
        return self.served_parameter(VISUAL_MODEL, "min_frames", 1)

    def served_frames_per_step(self) -> int:
        """Input frames per output step of the served model, which places the glosses' steps in the video."""
        return self.served_parameter(DECODER_MODEL, "frames_per_step", 0)

    def recognise_frames(self, frames: np.ndarray, beam_size: int | None = None) -> Recognition:
        """Raw uint8 frames (T, H, W, 3) through the `cslr_frames` ensemble, padded to the served minimum
        (a TensorRT visual model has no python step in front of it to pad them)."""
        data = pad_to_minimum(frames, self.served_min_frames())[None] if frames.ndim == 4 else frames[None]
        tensors = [self.module.InferInput(names.FRAMES, list(data.shape), "UINT8"),
                   self.module.InferInput(names.LENGTHS, [1, 1], "INT64")]
        tensors[0].set_data_from_numpy(data)
        tensors[1].set_data_from_numpy(np.array([[len(frames)]], dtype=np.int64))
        return self._request("cslr_frames", tensors, beam_size)

    def close(self) -> None:
        self.client.close()
