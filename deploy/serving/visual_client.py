"""The served `visual` model as a window runner (deploy/serving/buffered.py's VisualRunner), through tritonclient:
one window a request, so that the windows of live streams join the server's dynamic batches with the clips and
windows of uploads; and the served models' settings, read from the running server.
"""

from __future__ import annotations

import threading

import numpy as np

from qslr.deploy import model_names as models
from qslr.deploy import tensor_names as names
from qslr.deploy.serving.client import RecognitionError


def _module(grpc: bool):
    if grpc:
        import tritonclient.grpc as module
    else:
        import tritonclient.http as module
    return module


def served_parameters(url: str, grpc: bool, model: str) -> dict[str, str]:
    """A served model's config parameters, as strings (RecognitionError where the server cannot say)."""
    client = _module(grpc).InferenceServerClient(url)
    try:
        config = client.get_model_config(model, **({"as_json": True} if grpc else {}))
    except Exception as exc:  # noqa: BLE001 - tritonclient raises its own exception types per protocol
        raise RecognitionError.of(exc) from None
    finally:
        client.close()
    config = config.get("config", config)
    return {key: value.get("string_value", "") for key, value in config.get("parameters", {}).items()}


class ServedVisual:
    """Frames (B, T, H, W, 3) uint8 and their counts (B,) -> log-probabilities (B, T', V) and steps (B,), each clip
    a request of its own. A client per thread: tritonclient's HTTP client must stay on the thread that made it."""

    def __init__(self, url: str, grpc: bool = False, timeout: float = 60.0):
        self.url, self.grpc, self.timeout = url, grpc, timeout
        self.module = _module(grpc)
        self._local = threading.local()

    def _client(self):
        if not hasattr(self._local, "client"):
            kwargs = {} if self.grpc else {"connection_timeout": self.timeout, "network_timeout": self.timeout}
            self._local.client = self.module.InferenceServerClient(self.url, **kwargs)
        return self._local.client

    def __call__(self, frames: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        outputs, steps = [], []
        for clip, length in zip(frames, lengths, strict=True):
            inputs = [self.module.InferInput(names.FRAMES, [1, *clip.shape], "UINT8"),
                      self.module.InferInput(names.LENGTHS, [1, 1], "INT64")]
            inputs[0].set_data_from_numpy(np.ascontiguousarray(clip[None]))
            inputs[1].set_data_from_numpy(np.array([[length]], dtype=np.int64))
            requested = [self.module.InferRequestedOutput(name) for name in names.OUTPUTS]
            try:
                result = self._client().infer(models.VISUAL, inputs, outputs=requested)
            except Exception as exc:  # noqa: BLE001 - tritonclient raises its own exception types per protocol
                raise RecognitionError.of(exc) from None
            outputs.append(result.as_numpy(names.LOG_PROBS)[0])
            steps.append(int(result.as_numpy(names.OUTPUT_LENGTHS).reshape(-1)[0]))
        longest = max(len(output) for output in outputs)
        padded = np.zeros((len(outputs), longest, outputs[0].shape[-1]), dtype=np.float32)
        for row, output in enumerate(outputs):
            padded[row, :len(output)] = output
        return padded, np.array(steps, dtype=np.int64)
