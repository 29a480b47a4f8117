"""The string parameters of a Triton model config, as the python models' ``initialize`` receives it."""

from __future__ import annotations

import json
import os
import re
import traceback

from qslr.deploy.model_names import MODELS
from qslr.deploy.served_limits import ServedLimits


def model_parameters(args: dict) -> dict[str, str]:
    config = json.loads(args["model_config"])
    return {key: value["string_value"] for key, value in config.get("parameters", {}).items()}


def version_file(args: dict, name: str) -> str:
    """A file shipped in the model's version folder (the exported graph, the vocabulary)."""
    return os.path.join(args["model_repository"], args["model_version"], name)


def served_limits(args: dict) -> ServedLimits:
    """The repository's served limits, as the builder wrote them into every model's config."""
    config = json.loads(args["model_config"])
    parameters = model_parameters(args)
    # Only `cslr`, which takes whole videos, states their longest duration.
    max_seconds = float(parameters.get("max_seconds", ServedLimits.max_seconds))
    return ServedLimits(int(parameters["min_frames"]), int(parameters["max_frames"]), int(config["max_batch_size"]),
                        max_seconds)


# failed_response's message of a failure that is not the request's fault: "<model>: unexpected <type>: ...".
_UNEXPECTED = re.compile(r"^(\w+): unexpected \w+: ")


def failed_response(pb_utils, model: str, exc: Exception):
    """The response of one request whose work raised ``exc``, so that only that request fails: a bad input
    (a ValueError naming what is wrong) is INVALID_ARG; anything else is INTERNAL, its traceback in the server
    log. ``pb_utils`` is the python backend's module, which only a model running in Triton can import."""
    detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if isinstance(exc, ValueError):
        error = pb_utils.TritonError(f"{model}: {detail}", pb_utils.TritonError.INVALID_ARG)
    else:
        pb_utils.Logger.log_error("".join(traceback.format_exception(exc)))
        error = pb_utils.TritonError(f"{model}: unexpected {type(exc).__name__}: {detail}",
                                     pb_utils.TritonError.INTERNAL)
    return pb_utils.InferenceResponse(error=error)


def called_model_error(pb_utils, error):
    """A called model's (BLS) error as this model answers it: the failing model's own message and code. The
    python_backend of nvidia-pytriton's server hands a BLS caller every error as INTERNAL, so a request refused by
    one of QSLR's models (``failed_response``'s INVALID_ARG: "<model>: <what is wrong>") would reach the client as
    a server fault; a message in that form is INVALID_ARG whatever code arrived, and only "<model>: unexpected
    ..." (or a message of Triton's own) keeps INTERNAL."""
    message = without_ensemble_prefix(error.message())
    code = error.code()
    model = message.split(":", 1)[0]
    if code == pb_utils.TritonError.INTERNAL and model in MODELS and not _UNEXPECTED.match(message):
        code = pb_utils.TritonError.INVALID_ARG
    return pb_utils.TritonError(message, code)


def without_ensemble_prefix(message: str) -> str:
    """A failing model's own message, without the "in ensemble 'NAME', " Triton puts before it."""
    return re.sub(r"^in ensemble '[^']*',\s*", "", message)
