"""Triton python model `cslr`: an uploaded video of any length -> its glosses, by business logic scripting.

A video of at most one window's frames goes to the `cslr_clip` ensemble (preprocess -> visual -> ctc_decoder)
as it is: the path, and the answer, of a clip. The videos of a batch are sent to it together, so that its
models batch them as they would batch the clips of an ensemble request. A longer video, up to the served
duration, is decoded and framed here (as `preprocess` frames a clip, with the request's `framing` and `region`)
a chunk at a time into overlapping windows (deploy/serving/buffered.py); `visual` runs them a batch of windows at
a time, and `ctc_decoder` decodes the joined log-probabilities in segments (as a live stream of the same frames
is decoded), so the spans are in the whole video's seconds.
Each request gets its own answer, with what was done to its video (`framing`), or its own error.

Why scripting, not an ensemble: an ensemble passes one request's tensors from step to step, and a step cannot
turn one upload into a batch of windows, nor join their outputs; a model that calls the others can, and a
clip still takes the ensemble unchanged.
"""

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import triton_python_backend_utils as pb_utils

from qslr.deploy import model_names as models
from qslr.deploy import tensor_names as names
from qslr.deploy.served_video import framing_options, isolated, placed, served_frame_target
from qslr.deploy.serving.buffered import WindowPlan, video_log_probs
from qslr.deploy.serving.ragged_batch import pad_clips
from qslr.deploy.serving.triton_parameters import (
    called_model_error,
    failed_response,
    model_parameters,
    served_limits,
)
from qslr.pipelines.video_io import probe_video

OUTPUTS = list(names.VIDEO_RECOGNITION)


class CalledModelError(Exception):
    """A model called here answered a window's request with an error (a TritonError), passed on as it is."""

    def __init__(self, error):
        super().__init__(error.message())
        self.error = called_model_error(pb_utils, error)


class _WindowsNotRun(Exception):
    """Raised through the window decoding by a failure to run the windows (its cause), which is no fault of the
    video: so it escapes `isolated`, which names whatever else goes wrong as a video it cannot decode."""


def _answer(answer):
    """A response of a model called here, as this model's response: its outputs, or its error. The error is the
    failing model's own message ("preprocess: video too long ...") and code, as an ensemble request got them; a
    video refused here (an exception) is named as `cslr`'s. A long video's answer is `ctc_decoder`'s response with
    the framing done here, (response, framing JSON)."""
    response, framing = answer if isinstance(answer, tuple) else (answer, None)
    if isinstance(response, CalledModelError):
        return pb_utils.InferenceResponse(error=response.error)
    if isinstance(response, Exception):
        return failed_response(pb_utils, models.CSLR, response)
    if response.has_error():
        return pb_utils.InferenceResponse(error=called_model_error(pb_utils, response.error()))
    outputs = [pb_utils.Tensor(name, pb_utils.get_output_tensor_by_name(response, name).as_numpy())
               for name in OUTPUTS if framing is None or name != names.FRAMING]
    if framing is not None:
        outputs.append(pb_utils.Tensor(names.FRAMING, np.array([[framing.encode()]], dtype=object)))
    return pb_utils.InferenceResponse(output_tensors=outputs)


class TritonPythonModel:
    def initialize(self, args):
        parameters = model_parameters(args)
        self.limits = served_limits(args)
        self.target = served_frame_target(parameters)
        self.plan = WindowPlan(int(parameters["window_frames"]), int(parameters["context_frames"]),
                               int(parameters["frames_per_step"]))
        self.window_batch = int(parameters["window_batch"])
        # Long videos are decoded on these threads, so that the event loop goes on sending the calls of the
        # batch's other videos (and of the windows) meanwhile.
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="cslr-windows")
        self.logger = pb_utils.Logger

    def finalize(self):
        self.pool.shutdown(wait=True)

    async def execute(self, requests):
        loop = asyncio.get_running_loop()
        calls = [self._call(request, loop) for request in requests]
        # In the requests' order; what a call raised answers its own request.
        return [_answer(answer) for answer in await asyncio.gather(*calls, return_exceptions=True)]

    def _call(self, request, loop):
        """What answers ``request``: the clip ensemble's call, a long video's work on the pool, or (whatever went
        wrong in building either) its own error."""
        try:
            video = pb_utils.get_input_tensor_by_name(request, names.VIDEO)
            data = video.as_numpy().reshape(-1).tobytes()
            probe = isolated(data, lambda: probe_video(data))
            if isinstance(probe, Exception) or placed(probe, self.target) <= self.plan.window:
                # A clip, or a video the ensemble's decoder refuses with the error a clip gets.
                return _request(models.CSLR_CLIP, [(names.VIDEO, video.as_numpy())], OUTPUTS,
                                _parameters(request)).async_exec()
            framing = framing_options(_request_parameters(request))  # a bad one answers this request alone
            return loop.run_in_executor(self.pool, self._in_windows, request, data, probe, framing, loop)
        except Exception as exc:  # noqa: BLE001 - this request fails alone, whatever it raised
            return asyncio.sleep(0, result=exc)

    def _in_windows(self, request, data: bytes, probe, framing, loop):
        """On a pool thread: the video's windows through `visual`, then `ctc_decoder` on the joined output."""
        def visual(frames, lengths):
            try:
                return self._visual(frames, lengths, loop)
            except Exception as exc:  # noqa: BLE001 - whatever it is, it is answered as itself (_answer)
                raise _WindowsNotRun() from exc

        def work():
            try:
                return video_log_probs(data, self.target, self.limits, self.plan, visual, self.window_batch,
                                       framing, probe)
            except _WindowsNotRun as failure:
                return failure.__cause__

        result = isolated(data, work)
        if isinstance(result, Exception):
            self.logger.log_warn(f"{models.CSLR}: {result}")
            return result
        output, record = result
        inputs = [(names.LOG_PROBS, np.ascontiguousarray(output.log_probs[None], dtype=np.float32)),
                  (names.OUTPUT_LENGTHS, np.array([[output.steps]], dtype=np.int64)),
                  (names.LENGTHS, np.array([[output.frames]], dtype=np.int64)),
                  (names.FPS, np.array([[record.fps]], dtype=np.float32))]
        parameters = {**_parameters(request), names.IN_SEGMENTS_PARAMETER: True}
        (decoded,) = _on_loop(loop, [(models.CTC_DECODER, inputs, list(names.RECOGNITION), parameters)])
        return decoded, json.dumps(record.to_dict())

    def _visual(self, frames: np.ndarray, lengths: np.ndarray, loop):
        """The served signature over a batch of windows: one request each (the visual model takes a clip a
        request), sent together so that its dynamic batcher runs them as one batch."""
        calls = [(models.VISUAL, [(names.FRAMES, frames[i:i + 1]), (names.LENGTHS, lengths[i:i + 1, None])],
                  [names.LOG_PROBS, names.OUTPUT_LENGTHS], {}) for i in range(len(frames))]
        outputs, steps = [], []
        for response in _on_loop(loop, calls):
            if response.has_error():
                raise CalledModelError(response.error())
            outputs.append(pb_utils.get_output_tensor_by_name(response, names.LOG_PROBS).as_numpy()[0])
            steps.append(int(pb_utils.get_output_tensor_by_name(response, names.OUTPUT_LENGTHS).as_numpy()
                             .reshape(-1)[0]))
        return pad_clips(outputs)[0], np.array(steps, dtype=np.int64)


def _request_parameters(request) -> dict:
    return json.loads(request.parameters() or "{}")


def _parameters(request) -> dict:
    """The request's parameters, to pass on. A BLS request takes bool, int and str values only: any other
    (a float beam width, say) goes on as text, for the decoder to refuse by name."""
    return {key: value if isinstance(value, (bool, int, str)) else json.dumps(value)
            for key, value in _request_parameters(request).items()}


def _on_loop(loop, calls):
    """BLS calls (model, [(input name, array)], output names, request parameters) made together on the model's
    event loop from a pool thread; their responses, in order."""
    async def send():
        return await asyncio.gather(*(_request(*call).async_exec() for call in calls))

    return asyncio.run_coroutine_threadsafe(send(), loop).result()


def _request(model: str, inputs, outputs, parameters: dict):
    """A BLS request whose outputs come back in CPU memory, where as_numpy reads them: by default python_backend
    leaves them where the called model put them, which is GPU memory for a TensorRT `visual`."""
    return pb_utils.InferenceRequest(
        model_name=model, inputs=[pb_utils.Tensor(name, value) for name, value in inputs],
        requested_output_names=list(outputs), parameters=parameters,
        preferred_memory=pb_utils.PreferredMemory(pb_utils.TRITONSERVER_MEMORY_CPU, 0))
