"""In-process stand-in of the classes python_backend's stub puts into `triton_python_backend_utils`.

A python model imports `triton_python_backend_utils`: a pure-python file shipped with the backend, into which
the stub (src/pb_stub.cc, python_backend revision f9088ff) sets the classes of its embedded C++ module
`c_python_backend_utils`: TritonError, TritonModelException, Tensor, InferenceRequest, InferenceResponse,
Logger, PreferredMemory, TRITONSERVER_MEMORY_GPU and TRITONSERVER_MEMORY_CPU. This module is those classes, with
the stub's signatures (argument names, order, defaults, refusals of None) and behaviour where a model can see it:

- ``Tensor.as_numpy`` of a tensor in GPU memory raises TritonModelException("Tensor is stored in GPU and cannot
  be converted to NumPy.") as src/pb_tensor.cc does;
- ``InferenceRequest`` refuses parameters other than bool, int and str values under str keys
  (``PyParametersToJSON``), and ``parameters()`` is their JSON;
- ``exec``/``async_exec`` hand the request to ``stub`` (set by `standin_server`, which plays Triton's part:
  routing, the checks against the called model's config, and where the outputs are placed).

Only what the models of this project could use is here; nothing that the real module lacks.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging

import numpy as np

# The server side of BLS calls: an object with ``exec(request) -> InferenceResponse``, set for each model
# instance by standin_server (the real stub sends the request to the Triton process instead).
stub = None

_log = logging.getLogger("triton_python_backend")


class TritonModelException(Exception):
    """What the stub raises for its own errors (pybind's translation of PythonBackendException)."""


class _ErrorCode(enum.IntEnum):  # TRITONSERVER_Error_Code
    UNKNOWN = 0
    INTERNAL = 1
    NOT_FOUND = 2
    INVALID_ARG = 3
    UNAVAILABLE = 4
    UNSUPPORTED = 5
    ALREADY_EXISTS = 6
    CANCELLED = 7


class TritonError:
    UNKNOWN = _ErrorCode.UNKNOWN
    INTERNAL = _ErrorCode.INTERNAL
    NOT_FOUND = _ErrorCode.NOT_FOUND
    INVALID_ARG = _ErrorCode.INVALID_ARG
    UNAVAILABLE = _ErrorCode.UNAVAILABLE
    UNSUPPORTED = _ErrorCode.UNSUPPORTED
    ALREADY_EXISTS = _ErrorCode.ALREADY_EXISTS
    CANCELLED = _ErrorCode.CANCELLED

    def __init__(self, message, code=_ErrorCode.INTERNAL):
        _not_none(message=message, code=code)
        self._message, self._code = str(message), _ErrorCode(code)

    def code(self):
        return self._code

    def message(self):
        return self._message


class MemoryType(enum.IntEnum):  # PreferredMemory::MemoryType; kDefault is not exported to Python
    TRITONSERVER_MEMORY_GPU = 0
    TRITONSERVER_MEMORY_CPU = 1


TRITONSERVER_MEMORY_GPU = MemoryType.TRITONSERVER_MEMORY_GPU
TRITONSERVER_MEMORY_CPU = MemoryType.TRITONSERVER_MEMORY_CPU
DEFAULT_MEMORY = None  # PreferredMemory::kDefault: the outputs stay where the called model put them


class PreferredMemory:
    def __init__(self, preferred_memory_type, preferred_device_id=0):
        _not_none(preferred_memory_type=preferred_memory_type, preferred_device_id=preferred_device_id)
        if not isinstance(preferred_memory_type, MemoryType):
            raise TypeError(f"PreferredMemory: incompatible memory type {preferred_memory_type!r}")
        self.memory_type, self.device_id = preferred_memory_type, int(preferred_device_id)


_DEFAULT_PREFERRED = PreferredMemory.__new__(PreferredMemory)
_DEFAULT_PREFERRED.memory_type, _DEFAULT_PREFERRED.device_id = DEFAULT_MEMORY, 0

# numpy_to_triton_type of the shipped module, as TRITONSERVER_DataType values
_TRITON_TYPES = {np.bool_: 1, np.uint8: 2, np.uint16: 3, np.uint32: 4, np.uint64: 5, np.int8: 6, np.int16: 7,
                 np.int32: 8, np.int64: 9, np.float16: 10, np.float32: 11, np.float64: 12, np.object_: 13,
                 np.bytes_: 13}


class Tensor:
    def __init__(self, name, numpy_array):
        if name == "":
            raise TritonModelException("Tensor name cannot be an empty string.")
        array = np.asarray(numpy_array)
        if array.dtype.type not in _TRITON_TYPES:
            raise TritonModelException(f"Tensor {name!r}: numpy type {array.dtype} has no Triton data type")
        self._name = name
        self._array = np.ascontiguousarray(array)
        self._memory_type = TRITONSERVER_MEMORY_CPU  # set by the server for outputs it placed in GPU memory

    def name(self):
        return self._name

    def as_numpy(self):
        if not self.is_cpu():
            raise TritonModelException("Tensor is stored in GPU and cannot be converted to NumPy.")
        return self._array

    def triton_dtype(self):
        return _TRITON_TYPES[self._array.dtype.type]

    def is_cpu(self):
        return self._memory_type == TRITONSERVER_MEMORY_CPU

    def shape(self):
        return list(self._array.shape)


class InferenceRequest:
    def __init__(self, request_id="", correlation_id=0, inputs=None, requested_output_names=None,
                 model_name=None, model_version=-1, flags=0, timeout=0, preferred_memory=_DEFAULT_PREFERRED,
                 trace=None, parameters=None):
        # pybind11: inputs, requested_output_names and model_name have no default and none may be None.
        _not_none(request_id=request_id, correlation_id=correlation_id, inputs=inputs,
                  requested_output_names=requested_output_names, model_name=model_name,
                  model_version=model_version, flags=flags, timeout=timeout, preferred_memory=preferred_memory)
        if not isinstance(correlation_id, (int, str)):
            raise TritonModelException("Correlation ID must be integer or string")
        parameters = {} if parameters is None else parameters
        for key, value in parameters.items():
            if not isinstance(key, str):
                raise TritonModelException(f"Expect parameters keys to have type str, found type {type(key)}")
            if not isinstance(value, (bool, int, str)):
                raise TritonModelException(
                    f"Expect parameters values to have type bool/int/str, found type {type(value)}")
        for tensor in inputs:
            if tensor is None:
                raise TritonModelException(f"Input tensor for request with id '{request_id}' and model name "
                                           f"'{model_name}' should not be empty.")
        self._request_id, self._correlation_id = request_id, correlation_id
        self._inputs = list(inputs)
        self._requested_output_names = set(requested_output_names)
        self._model_name, self._model_version = model_name, model_version
        self._flags, self._timeout = flags, timeout
        self._preferred_memory = preferred_memory
        self._trace = trace
        self._parameters = json.dumps(parameters)

    def inputs(self):
        return self._inputs

    def request_id(self):
        return self._request_id

    def correlation_id(self):
        return self._correlation_id

    def flags(self):
        return self._flags

    def set_flags(self, flags):
        self._flags = flags

    def timeout(self):
        return self._timeout

    def parameters(self):
        return self._parameters

    def requested_output_names(self):
        return self._requested_output_names

    def exec(self, decoupled=False):
        if decoupled:
            raise TritonModelException("the stand-in serves no decoupled model")
        if stub is None:
            raise TritonModelException("no server to send the request to (load the model with standin_server)")
        return stub.exec(self)

    def async_exec(self, decoupled=False):
        # As the stub does: the blocking exec on the running loop's default executor.
        return asyncio.get_running_loop().run_in_executor(None, self.exec, decoupled)


class InferenceResponse:
    def __init__(self, output_tensors=(), error=None, parameters=None):
        self._output_tensors = list(output_tensors)
        self._error = error
        parameters = {} if parameters is None else parameters
        self._parameters = json.dumps(parameters)

    def output_tensors(self):
        return self._output_tensors

    def has_error(self):
        return self._error is not None

    def error(self):
        return self._error

    def parameters(self):
        return self._parameters


class Logger:
    class LogLevel(enum.IntEnum):
        INFO = 0
        WARNING = 1
        ERROR = 2
        VERBOSE = 3

    _LEVELS = {LogLevel.INFO: logging.INFO, LogLevel.WARNING: logging.WARNING, LogLevel.ERROR: logging.ERROR,
               LogLevel.VERBOSE: logging.DEBUG}

    @staticmethod
    def log(message, level=LogLevel.INFO):
        _log.log(Logger._LEVELS[level], message)

    @staticmethod
    def log_info(message):
        Logger.log(message, Logger.LogLevel.INFO)

    @staticmethod
    def log_warn(message):
        Logger.log(message, Logger.LogLevel.WARNING)

    @staticmethod
    def log_error(message):
        Logger.log(message, Logger.LogLevel.ERROR)

    @staticmethod
    def log_verbose(message):
        Logger.log(message, Logger.LogLevel.VERBOSE)


def _not_none(**arguments) -> None:
    """pybind11's ``.none(false)``: None is not an accepted value."""
    for name, value in arguments.items():
        if value is None:
            raise TypeError(f"incompatible function arguments: {name} may not be None")


# What the stub sets into the shipped triton_python_backend_utils (pb_stub.cc, Stub::Initialize).
EXPORTED = ("TritonError", "TritonModelException", "Tensor", "InferenceRequest", "InferenceResponse", "Logger",
            "PreferredMemory", "TRITONSERVER_MEMORY_GPU", "TRITONSERVER_MEMORY_CPU")
