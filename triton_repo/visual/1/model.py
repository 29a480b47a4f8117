"""Triton python model `visual`: onnxruntime on the exported network, one call per group of similar
lengths in a dynamic batch (``max_padding``: the padded frames a group may add, as a share of its own)."""

import numpy as np
import triton_python_backend_utils as pb_utils

from qslr.deploy import model_names as models
from qslr.deploy import tensor_names as names
from qslr.deploy.export.onnxruntime_session import onnx_session
from qslr.deploy.serving.ragged_batch import check_clip, length_groups, pad_clips, split_steps
from qslr.deploy.serving.triton_parameters import failed_response, model_parameters, served_limits, version_file


class TritonPythonModel:
    def initialize(self, args):
        parameters = model_parameters(args)
        self.height, self.width = int(parameters["height"]), int(parameters["width"])
        self.limits = served_limits(args)
        self.session = onnx_session(version_file(args, "model.onnx"), threads=int(parameters["threads"]))
        self.max_padding = float(parameters["max_padding"])

    def execute(self, requests):
        responses = [None] * len(requests)
        clips, rows = [], []
        for index, request in enumerate(requests):
            try:
                frames = pb_utils.get_input_tensor_by_name(request, names.FRAMES).as_numpy()
                length = int(pb_utils.get_input_tensor_by_name(request, names.LENGTHS).as_numpy().reshape(-1)[0])
                frames = frames[0] if frames.ndim == 5 else frames
                problem = check_clip(frames, length, self.height, self.width, self.limits)
                if problem:
                    raise ValueError(problem)
            except Exception as exc:  # noqa: BLE001 - this request fails alone
                responses[index] = failed_response(pb_utils, models.VISUAL, exc)
                continue
            clips.append(frames[:length])
            rows.append(index)
        for group in length_groups([len(clip) for clip in clips], self.max_padding):
            try:
                self._run(group, clips, rows, responses)
            except Exception:  # noqa: BLE001 - a batched call that fails is run clip by clip: each fails alone
                for i in group:
                    try:
                        self._run([i], clips, rows, responses)
                    except Exception as exc:  # noqa: BLE001
                        responses[rows[i]] = failed_response(pb_utils, models.VISUAL, exc)
        return responses

    def _run(self, group, clips, rows, responses):
        batch, lengths = pad_clips([clips[i] for i in group], self.limits.min_frames)
        log_probs, output_lengths = self.session.run([names.LOG_PROBS, names.OUTPUT_LENGTHS],
                                                     {names.FRAMES: batch, names.LENGTHS: lengths})
        for i, values, n in zip(group, split_steps(log_probs, output_lengths), output_lengths, strict=True):
            responses[rows[i]] = pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor(names.LOG_PROBS, np.ascontiguousarray(values[None])),
                pb_utils.Tensor(names.OUTPUT_LENGTHS, np.array([[n]], dtype=np.int64)),
            ])
