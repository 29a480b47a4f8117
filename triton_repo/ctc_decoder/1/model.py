"""Triton python model `ctc_decoder`: flashlight-text beam search (or greedy) over a dynamic batch.

Each request may ask for its own beam width and number of alternatives; a bad request gets its own error. The
output of several windows (`cslr`'s) comes with `in_segments` and is decoded in segments, as a live stream is.
The glosses' spans in seconds use the video's frame rate (the optional `fps` input) or the model's.
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils

from qslr.deploy import model_names as models
from qslr.deploy import tensor_names as names
from qslr.deploy.serving.served_decoding import DecoderSettings, ServedDecoder
from qslr.deploy.serving.triton_parameters import failed_response, model_parameters, version_file


def _row(values, dtype):
    return np.array(values, dtype=dtype).reshape(1, -1)


class TritonPythonModel:
    def initialize(self, args):
        with open(version_file(args, "vocab.json")) as handle:
            vocab = json.load(handle)
        self.decoder = ServedDecoder(vocab, DecoderSettings.from_parameters(model_parameters(args)))

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                log_probs = pb_utils.get_input_tensor_by_name(request, names.LOG_PROBS).as_numpy()
                steps = pb_utils.get_input_tensor_by_name(request, names.OUTPUT_LENGTHS).as_numpy().reshape(-1)[0]
                frames = pb_utils.get_input_tensor_by_name(request, names.LENGTHS).as_numpy().reshape(-1)[0]
                fps = pb_utils.get_input_tensor_by_name(request, names.FPS)  # optional
                fps = None if fps is None else float(fps.as_numpy().reshape(-1)[0])
                parameters = json.loads(request.parameters() or "{}")
                options = self.decoder.options(parameters)
                # Lengths that do not fit the log-probabilities (a direct request) fail this request alone.
                result = self.decoder.recognise(log_probs.reshape(-1, log_probs.shape[-1]), int(steps),
                                                int(frames), fps, options,
                                                parameters.get(names.IN_SEGMENTS_PARAMETER) is True)
            except Exception as exc:  # noqa: BLE001 - this request fails alone, whatever it raised
                responses.append(failed_response(pb_utils, models.CTC_DECODER, exc))
                continue
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor(names.GLOSSES, _row([g.encode() for g in result.glosses], object)),
                pb_utils.Tensor(names.GLOSS_STEPS, _row(result.steps, np.int64)),
                pb_utils.Tensor(names.GLOSS_START_S, _row(result.start_s, np.float32)),
                pb_utils.Tensor(names.GLOSS_END_S, _row(result.end_s, np.float32)),
                pb_utils.Tensor(names.SCORE, _row([result.score], np.float32)),
                pb_utils.Tensor(names.ALTERNATIVES, _row([" ".join(a.glosses).encode() for a in result.alternatives],
                                                         object)),
                pb_utils.Tensor(names.ALTERNATIVE_SCORES, _row([a.score for a in result.alternatives], np.float32)),
            ]))
        return responses
