"""The string parameters of a Triton model config, as the python models' ``initialize`` receives it."""

from __future__ import annotations

import json
import os

from qslr.deploy.serving.served_limits import ServedLimits


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
    return ServedLimits(int(parameters["min_frames"]), int(parameters["max_frames"]), int(config["max_batch_size"]))


def request_failure(model: str, exc: Exception) -> tuple[str, bool, str | None]:
    """What to answer one request whose work raised ``exc``, so that only that request fails: (message,
    whether it is the request's own fault (invalid argument), a traceback for the server log where it is not)."""
    import traceback

    own = isinstance(exc, ValueError)  # a bad input, named by the check that refused it
    detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    message = f"{model}: {detail}" if own else f"{model}: unexpected {type(exc).__name__}: {detail}"
    return message, own, None if own else "".join(traceback.format_exception(exc))
