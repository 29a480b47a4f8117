"""Triton python model `preprocess`: an uploaded video file -> uint8 frames at the model's input size."""

import numpy as np
import triton_python_backend_utils as pb_utils

from deploy import tensor_names as names
from deploy.triton_parameters import model_parameters
from pipelines.video_io import VideoDecodeError, read_frames, resize_frames


class TritonPythonModel:
    def initialize(self, args):
        parameters = model_parameters(args)
        self.height, self.width = int(parameters["height"]), int(parameters["width"])
        self.max_frames = int(parameters["max_frames"])
        self.logger = pb_utils.Logger

    def _decode(self, request):
        data = pb_utils.get_input_tensor_by_name(request, names.VIDEO).as_numpy().reshape(-1)
        frames = read_frames(data.tobytes())
        if len(frames) > self.max_frames:
            raise VideoDecodeError(f"a video of {len(frames)} frames exceeds the configured maximum of "
                                   f"{self.max_frames}")
        return resize_frames(frames, self.height, self.width)

    def execute(self, requests):
        responses = []
        for index, request in enumerate(requests):
            try:
                frames = self._decode(request)
            except VideoDecodeError as exc:
                self.logger.log_warn(f"preprocess: request {index}: {exc}")
                error = pb_utils.TritonError(f"preprocess: {exc}", pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
                continue
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor(names.FRAMES, frames[None]),
                pb_utils.Tensor(names.LENGTHS, np.array([[len(frames)]], dtype=np.int64)),
            ]))
        return responses
