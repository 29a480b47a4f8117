"""Triton python model `ctc_decoder`: flashlight-text beam search (or greedy) over a dynamic batch."""

import json

import numpy as np
import triton_python_backend_utils as pb_utils

from deploy import tensor_names as names
from deploy.triton_parameters import model_parameters, version_file
from model.decoding import CTCDecoder


class TritonPythonModel:
    def initialize(self, args):
        parameters = model_parameters(args)
        with open(version_file(args, "vocab.json")) as handle:
            vocab = json.load(handle)
        self.default_beam = int(parameters["beam_size"])
        self.max_beam = int(parameters["max_beam_size"])
        token_budget = int(parameters["beam_size_token"])
        self.greedy = CTCDecoder(vocab, "greedy")
        # One decoder per beam width, built at load time so that a bad setting fails here, not at a request.
        self.beams = {width: CTCDecoder(vocab, "beam", beam_size=width, beam_size_token=token_budget)
                      for width in range(1, self.max_beam + 1)}

    def _beam_size(self, request):
        raw = json.loads(request.parameters() or "{}").get(names.BEAM_SIZE_PARAMETER, self.default_beam)
        if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= self.max_beam:
            raise ValueError(f"beam_size must be an integer in 0..{self.max_beam} (0: greedy), got {raw!r}")
        return raw

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                width = self._beam_size(request)
            except ValueError as exc:
                error = pb_utils.TritonError(f"ctc_decoder: {exc}", pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
                continue
            log_probs = pb_utils.get_input_tensor_by_name(request, names.LOG_PROBS).as_numpy()
            length = pb_utils.get_input_tensor_by_name(request, names.OUTPUT_LENGTHS).as_numpy().reshape(-1)
            decoder = self.greedy if width == 0 else self.beams[width]
            (hypothesis,) = decoder.decode(log_probs.reshape(1, -1, log_probs.shape[-1]), length[:1])
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor(names.GLOSSES, np.array([[g.encode() for g in hypothesis.glosses]], dtype=object)
                                .reshape(1, -1)),
                pb_utils.Tensor(names.GLOSS_STEPS, np.array([hypothesis.frames], dtype=np.int64).reshape(1, -1)),
                pb_utils.Tensor(names.SCORE, np.array([[hypothesis.score]], dtype=np.float32)),
            ]))
        return responses
