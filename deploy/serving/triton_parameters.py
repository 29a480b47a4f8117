"""The string parameters of a Triton model config, as the python models' ``initialize`` receives it."""

from __future__ import annotations

import json
import os
import re
import traceback

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


def without_ensemble_prefix(message: str) -> str:
    """A failing model's own message, without the "in ensemble 'NAME', " Triton puts before it."""
    return re.sub(r"^in ensemble '[^']*',\s*", "", message)
