"""Triton python model `preprocess`: uploaded video files -> uint8 frames at the model's input size.

The whole dynamic batch goes to the clip decoder at once, which spreads it over its threads (DALI's or
PyAV's, as the repository's README says); a video that cannot be served gets its own error and the
others their frames.
"""

import numpy as np
import triton_python_backend_utils as pb_utils

from qslr.deploy import tensor_names as names
from qslr.deploy.serving.served_limits import pad_to_minimum
from qslr.deploy.serving.served_video import clip_decoder
from qslr.deploy.serving.triton_parameters import model_parameters, served_limits


class TritonPythonModel:
    def initialize(self, args):
        parameters = model_parameters(args)
        self.limits = served_limits(args)
        options = {"threads": int(parameters["threads"])}
        if parameters["decoder"] == "dali":
            # A GPU instance decodes with NVDEC on the device Triton placed it on.
            options.update(device=parameters["decoder_device"], device_id=int(args["model_instance_device_id"]))
        self.decoder = clip_decoder(parameters["decoder"], int(parameters["height"]), int(parameters["width"]),
                                    self.limits, **options)
        self.logger = pb_utils.Logger

    def execute(self, requests):
        videos = [pb_utils.get_input_tensor_by_name(r, names.VIDEO).as_numpy().reshape(-1).tobytes()
                  for r in requests]
        responses = []
        # The decoder answers each video with its frames or its own error, whatever the upload raised.
        for index, clip in enumerate(self.decoder.decode(videos)):
            if isinstance(clip, Exception):
                self.logger.log_warn(f"preprocess: request {index}: {clip}")
                error = pb_utils.TritonError(f"preprocess: {clip}", pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
                continue
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor(names.FRAMES, pad_to_minimum(clip.frames, self.limits.min_frames)[None]),
                pb_utils.Tensor(names.LENGTHS, np.array([[len(clip.frames)]], dtype=np.int64)),
                pb_utils.Tensor(names.FPS, np.array([[clip.fps]], dtype=np.float32)),
            ]))
        return responses
