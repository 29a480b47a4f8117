"""Triton python model `preprocess`: uploaded video files -> uint8 frames at the model's input size and rate.

The whole dynamic batch goes to the clip decoder at once, which spreads it over its threads (DALI's or
PyAV's, as the repository's README says) and frames each upload as the model's training frames were made, with
its request's `framing` and `region` parameters; what was done is its `framing` output. A video that cannot be
served, or a request whose parameters are wrong, gets its own error and the others their frames. A refused upload
is INVALID_ARG, a failure of the model itself INTERNAL (`failed_response`).
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils

from qslr.deploy import model_names as models
from qslr.deploy import tensor_names as names
from qslr.deploy.served_limits import pad_to_minimum
from qslr.deploy.served_video import clip_decoder, framing_options, served_frame_target
from qslr.deploy.serving.triton_parameters import failed_response, model_parameters, served_limits


class TritonPythonModel:
    def initialize(self, args):
        parameters = model_parameters(args)
        self.limits = served_limits(args)
        target = served_frame_target(parameters)
        options = {"threads": int(parameters["threads"]), "fps": target.fps, "source": target.source}
        if parameters["decoder"] == "dali":
            # A GPU instance decodes with NVDEC on the device Triton placed it on; what DALI leaves to PyAV (all
            # of it where NVDEC cannot start) is said in the server's log.
            options.update(device=parameters["decoder_device"], device_id=int(args["model_instance_device_id"]),
                           report=pb_utils.Logger.log_warn)
        self.decoder = clip_decoder(parameters["decoder"], int(parameters["height"]), int(parameters["width"]),
                                    self.limits, **options)

    def execute(self, requests):
        videos = [pb_utils.get_input_tensor_by_name(r, names.VIDEO).as_numpy().reshape(-1).tobytes()
                  for r in requests]
        results = [_framing(request) for request in requests]  # options, or the error of a request's parameters
        asked = [index for index, result in enumerate(results) if not isinstance(result, Exception)]
        try:
            # The decoder answers each video with its frames or its own error, whatever the upload raised.
            clips = self.decoder.decode([videos[i] for i in asked], [results[i] for i in asked])
        except Exception as exc:  # noqa: BLE001 - the decoder itself failed (no thread, say): each request says so
            clips = [exc] * len(asked)
        for index, clip in zip(asked, clips, strict=True):
            results[index] = clip
        return [self._response(result) for result in results]

    def _response(self, clip):
        if isinstance(clip, Exception):
            return failed_response(pb_utils, models.PREPROCESS, clip)
        try:
            return pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor(names.FRAMES, pad_to_minimum(clip.frames, self.limits.min_frames)[None]),
                pb_utils.Tensor(names.LENGTHS, np.array([[len(clip.frames)]], dtype=np.int64)),
                pb_utils.Tensor(names.FPS, np.array([[clip.fps]], dtype=np.float32)),
                pb_utils.Tensor(names.FRAMING, np.array([[json.dumps(clip.framing.to_dict()).encode()]], dtype=object)),
            ])
        except Exception as exc:  # noqa: BLE001 - this request fails alone, whatever it raised
            return failed_response(pb_utils, models.PREPROCESS, exc)


def _framing(request):
    try:
        return framing_options(json.loads(request.parameters() or "{}"))
    except ValueError as exc:
        return exc
