"""Triton python model `preprocess`: an uploaded video file -> uint8 frames at the model's input size."""

import numpy as np
import triton_python_backend_utils as pb_utils

from deploy import tensor_names as names
from deploy.served_limits import ClipTooLongError, pad_to_minimum
from deploy.triton_parameters import model_parameters, served_limits
from pipelines.video_io import VideoDecodeError, read_frames, resize_frames


class TritonPythonModel:
    def initialize(self, args):
        parameters = model_parameters(args)
        self.height, self.width = int(parameters["height"]), int(parameters["width"])
        self.limits = served_limits(args)
        self.logger = pb_utils.Logger

    def _decode(self, request):
        data = pb_utils.get_input_tensor_by_name(request, names.VIDEO).as_numpy().reshape(-1)
        frames = read_frames(data.tobytes())
        self.limits.check_length(len(frames))
        return resize_frames(frames, self.height, self.width)

    def execute(self, requests):
        responses = []
        for index, request in enumerate(requests):
            try:
                frames = self._decode(request)
            except (VideoDecodeError, ClipTooLongError) as exc:
                self.logger.log_warn(f"preprocess: request {index}: {exc}")
                error = pb_utils.TritonError(f"preprocess: {exc}", pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
                continue
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor(names.FRAMES, pad_to_minimum(frames, self.limits.min_frames)[None]),
                pb_utils.Tensor(names.LENGTHS, np.array([[len(frames)]], dtype=np.int64)),
            ]))
        return responses
