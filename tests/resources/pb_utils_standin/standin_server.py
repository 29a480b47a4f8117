"""Triton's part around a repository's python models, in this process: load, execute, route BLS calls.

Each python model of a built repository is loaded as python_backend loads it: its own copy of the shipped
`triton_python_backend_utils.py` (from the nvidia-pytriton wheel) with the stand-in classes of
`c_python_backend_utils` set into it, its `model.py` imported with that module importable, and ``initialize``
called with the arguments the stub gives (the config as Triton's JSON, kind, device, folder, version). Then:

- ``infer``: a client's requests, checked against the model's config as Triton checks them (input names, data
  types, shapes, batch size, requested outputs), sent to one ``execute`` as a dynamic batch; a model whose
  ``execute`` raises or returns the wrong responses fails every request of the batch with the stub's message;
- a request's ``exec`` from inside a model (BLS) goes, checked the same way, to the named python model of the
  same repository; ensembles are not run. Its outputs are placed as python_backend's ResponseAlloc places them
  (src/request_executor.cc): in the memory the request prefers (``preferred_memory``), else where the called
  model put them, which for a model listed in ``gpu_models`` (standing for a `tensorrt_plan` model) is the GPU.

Tensors cross from one model to another as copies, and string tensors come out as bytes, as through Triton's
shared memory. One instance per model runs one ``execute`` at a time.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import json
import logging
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np
from google.protobuf import json_format, text_format
from google.protobuf.descriptor import FieldDescriptor
from tritonclient.grpc import model_config_pb2

HERE = Path(__file__).parent
log = logging.getLogger(__name__)

_TYPE_NAMES = {1: "BOOL", 2: "UINT8", 3: "UINT16", 4: "UINT32", 5: "UINT64", 6: "INT8", 7: "INT16", 8: "INT32",
               9: "INT64", 10: "FP16", 11: "FP32", 12: "FP64", 13: "STRING"}


def read_config(path: Path):
    """A config.pbtxt as Triton parses it (not through qslr's reader, which imports onnx: a test of what a model
    imports loads it with this module)."""
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def shipped_utils() -> Path | None:
    """The pure-python `triton_python_backend_utils.py` the nvidia-pytriton wheel ships, or None."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "tritonserver" / "backends" / "python" / "triton_python_backend_utils.py"
    return path if path.is_file() else None


def _fresh_module(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def python_backend_utils(shipped: Path) -> ModuleType:
    """A fresh `triton_python_backend_utils`, as one stub process has it: the shipped file with the stand-in
    classes set into it (pb_stub.cc, Stub::Initialize); ``.native`` is the stand-in module itself."""
    utils = _fresh_module("triton_python_backend_utils", shipped)
    native = _fresh_module("c_python_backend_utils", HERE / "c_python_backend_utils.py")
    for exported in native.EXPORTED:
        setattr(utils, exported, getattr(native, exported))
    utils.native = native
    return utils


def triton_json(config) -> dict:
    """A ModelConfig as the ``model_config`` JSON the stub gives ``initialize``: field names as in the proto,
    defaults printed, 64-bit integers as numbers (Triton writes them so; protobuf's JSON writes strings)."""
    data = json_format.MessageToDict(config, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)
    _int64_as_numbers(config.DESCRIPTOR, data)
    return data


def _int64_as_numbers(descriptor, data: dict) -> None:
    wide = (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT64)
    for entry in descriptor.fields:
        if entry.name not in data:
            continue
        value = data[entry.name]
        if entry.type in wide:
            data[entry.name] = [int(v) for v in value] if isinstance(value, list) else int(value)
        elif entry.type == FieldDescriptor.TYPE_MESSAGE:
            if entry.message_type.GetOptions().map_entry:
                inner = entry.message_type.fields_by_name["value"]
                if inner.type == FieldDescriptor.TYPE_MESSAGE:
                    for item in value.values():
                        _int64_as_numbers(inner.message_type, item)
            else:
                for item in value if isinstance(value, list) else [value]:
                    _int64_as_numbers(entry.message_type, item)


def _carried(array: np.ndarray) -> np.ndarray:
    """A tensor's values as the other side of Triton's shared memory gets them: a copy; strings as bytes."""
    if array.dtype == np.object_:
        flat = [v if isinstance(v, bytes) else str(v).encode() for v in array.reshape(-1)]
        out = np.empty(len(flat), dtype=np.object_)
        out[:] = flat
        return out.reshape(array.shape)
    return np.array(array, copy=True)


@dataclass(frozen=True)
class Answer:
    """What a client gets for one request: its outputs, or its error's code and message."""

    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    code: int | None = None  # a TritonError code; None when answered
    message: str = ""


class LoadedModel:
    """One instance of a python model, loaded and initialised."""

    def __init__(self, server: StandinServer, name: str):
        folder = server.repository / name
        self.name, self.server = name, server
        self.config = triton_json(read_config(folder / "config.pbtxt"))
        self.on_gpu = name in server.gpu_models
        self.utils = python_backend_utils(server.utils_path)
        self.utils.native.stub = _Bls(server, self)
        self.module = self._import(folder / "1" / "model.py")
        group = (self.config.get("instance_group") or [{}])[0]
        kind = group.get("kind", "KIND_CPU").removeprefix("KIND_")
        self.instance = self.module.TritonPythonModel()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.instance.initialize({
            "model_config": json.dumps(self.config), "model_instance_kind": kind,
            "model_instance_name": f"{name}_0_0", "model_instance_device_id": "0",
            "model_repository": str(folder), "model_version": "1", "model_name": name})

    def _import(self, path: Path) -> ModuleType:
        previous = sys.modules.get("triton_python_backend_utils")
        sys.modules["triton_python_backend_utils"] = self.utils
        try:
            return _fresh_module(f"standin_model_{self.name}", path)
        finally:
            if previous is None:
                del sys.modules["triton_python_backend_utils"]
            else:
                sys.modules["triton_python_backend_utils"] = previous

    def execute(self, requests: list) -> list:
        """The stub's execute (pb_stub.cc, Stub::ProcessRequests): a coroutine runs on the model's event loop
        thread; a model that raises, or returns other than one InferenceResponse per request, fails them all."""
        with self._lock:
            try:
                returned = self.instance.execute(requests)
                if inspect.iscoroutine(returned):
                    returned = asyncio.run_coroutine_threadsafe(returned, self._event_loop()).result()
                if not isinstance(returned, list):
                    raise self.utils.TritonModelException(
                        f"Expected a list in the execute return, found type '{type(returned).__name__}'.")
                if len(returned) != len(requests):
                    raise self.utils.TritonModelException(
                        "Number of InferenceResponse objects do not match the number of InferenceRequest objects. "
                        f"InferenceRequest(s) size is:{len(requests)}, and InferenceResponse(s) size is:"
                        f"{len(returned)}\n")
                for response in returned:
                    if not isinstance(response, self.utils.InferenceResponse):
                        raise self.utils.TritonModelException(
                            "Expected an 'InferenceResponse' object in the execute function return list, found "
                            f"type '{type(response).__name__}'.")
                return returned
            except Exception as exc:  # noqa: BLE001 - as the stub: every request of the batch gets the error
                message = (f"Failed to process the request(s) for model '{self.name}', message: "
                           f"{type(exc).__name__}: {exc}")
                log.error(message)
                return [self.utils.InferenceResponse(error=self.utils.TritonError(message)) for _ in requests]

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:  # as the stub: a new loop, run forever on a daemon thread
            self._loop = asyncio.new_event_loop()
            threading.Thread(target=self._loop.run_forever, daemon=True).start()
        return self._loop

    def request(self, inputs: Mapping[str, np.ndarray], parameters: Mapping | None = None,
                outputs: Sequence[str] | None = None):
        """A request to this model, made with its own module from arrays carried across (into CPU memory, as
        python_backend gives a model its inputs by default)."""
        return self.utils.InferenceRequest(
            model_name=self.name, inputs=[self.utils.Tensor(n, _carried(np.asarray(a))) for n, a in inputs.items()],
            requested_output_names=list(outputs if outputs is not None else self.output_names()),
            parameters=dict(parameters or {}))

    def output_names(self) -> list[str]:
        return [entry["name"] for entry in self.config.get("output", [])]

    def refusal(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]) -> str | None:
        """Why Triton would refuse a request with these inputs and requested outputs before the model sees it."""
        declared = {entry["name"]: entry for entry in self.config.get("input", [])}
        batched = int(self.config.get("max_batch_size", 0)) > 0
        for name, array in inputs.items():
            if name not in declared:
                return f"unexpected inference input '{name}' for model '{self.name}'"
            entry = declared[name]
            got = _TYPE_NAMES[self.utils.Tensor(name, np.asarray(array)).triton_dtype()]
            if f"TYPE_{got}" != entry["data_type"]:
                return (f"inference input '{name}' data-type is '{got}', but model '{self.name}' expects "
                        f"'{entry['data_type'].removeprefix('TYPE_')}'")
            dims = ([-1] if batched else []) + list(entry["dims"])
            shape = list(np.shape(array))
            if len(shape) != len(dims) or any(d != -1 and d != s for d, s in zip(dims, shape, strict=True)):
                return f"unexpected shape for input '{name}' for model '{self.name}'. Expected {dims}, got {shape}"
            if batched and shape[0] > int(self.config["max_batch_size"]):
                return (f"inference request batch-size must be <= {self.config['max_batch_size']} for "
                        f"'{self.name}'")
        missing = sorted(n for n, entry in declared.items() if not entry.get("optional") and n not in inputs)
        if missing:
            return (f"expected {len(declared)} inputs but got {len(inputs)} inputs for model '{self.name}'. Got "
                    f"input(s) {sorted(inputs)}, but missing required input(s) {missing}")
        known = set(self.output_names())
        unknown = sorted(set(outputs) - known)
        if unknown:
            return f"unexpected inference output '{unknown[0]}' for model '{self.name}'"
        return None

    def close(self) -> None:
        if hasattr(self.instance, "finalize"):
            self.instance.finalize()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)


class StandinServer:
    """The python models of one built repository, loaded on first use."""

    def __init__(self, repository: str | Path, gpu_models: frozenset[str] = frozenset()):
        path = shipped_utils()
        if path is None:
            raise FileNotFoundError("triton_python_backend_utils.py: nvidia-pytriton is not installed "
                                    "(pip install -e '.[serve]')")
        self.repository, self.gpu_models, self.utils_path = Path(repository), frozenset(gpu_models), path
        self._models: dict[str, LoadedModel] = {}
        self._loading = threading.Lock()

    def model(self, name: str) -> LoadedModel:
        with self._loading:
            if name not in self._models:
                self._models[name] = LoadedModel(self, name)
            return self._models[name]

    def kind(self, name: str) -> str:
        """'python', 'ensemble', or why no model of that name is served here."""
        path = self.repository / name / "config.pbtxt"
        if not path.is_file():
            return f"Request for unknown model: '{name}' is not found"
        config = read_config(path)
        if config.platform == "ensemble":
            return "ensemble"
        return "python" if config.backend == "python" else f"model '{name}' is not a python model"

    def infer(self, name: str, requests: Sequence[Mapping[str, np.ndarray]],
              parameters: Sequence[Mapping] | None = None) -> list[Answer]:
        """A client's requests to ``name``, sent together: one dynamic batch (up to the model's batch size)."""
        parameters = list(parameters) if parameters is not None else [{}] * len(requests)
        model = self.model(name)
        answers: list[Answer | None] = [None] * len(requests)
        batch: list[tuple[int, object]] = []
        for index, (inputs, values) in enumerate(zip(requests, parameters, strict=True)):
            problem = model.refusal(inputs, model.output_names())
            if problem:
                answers[index] = Answer(code=int(model.utils.TritonError.INVALID_ARG), message=problem)
            else:
                request = model.request(inputs)
                request._parameters = json.dumps(dict(values))  # a client's JSON, floats included
                batch.append((index, request))
        largest = max(int(model.config.get("max_batch_size", 0)), 1)
        for start in range(0, len(batch), largest):
            chunk = batch[start:start + largest]
            for (index, _), response in zip(chunk, model.execute([r for _, r in chunk]), strict=True):
                answers[index] = _answer(response)
        return answers

    def close(self) -> None:
        for model in self._models.values():
            model.close()


def _answer(response) -> Answer:
    if response.has_error():
        return Answer(code=int(response.error().code()), message=response.error().message())
    return Answer({t.name(): _carried(t._array) for t in response.output_tensors()})


class _Bls:
    """The stub of one model instance, as its requests' ``exec`` sees it."""

    def __init__(self, server: StandinServer, caller: LoadedModel):
        self.server, self.caller = server, caller

    def exec(self, request):
        utils = self.caller.utils
        name = request._model_name
        kind = self.server.kind(name)
        if kind != "python":
            message = f"the stand-in runs no ensemble ('{name}')" if kind == "ensemble" else kind
            return utils.InferenceResponse(error=utils.TritonError(message, utils.TritonError.NOT_FOUND))
        target = self.server.model(name)
        inputs = {t.name(): t._array for t in request.inputs()}
        outputs = sorted(request.requested_output_names()) or target.output_names()
        problem = target.refusal(inputs, outputs)
        if problem:
            return utils.InferenceResponse(error=utils.TritonError(problem, utils.TritonError.INVALID_ARG))
        (response,) = target.execute([target.request(inputs, json.loads(request.parameters()), outputs)])
        if response.has_error():
            return utils.InferenceResponse(error=utils.TritonError(response.error().message(),
                                                                   response.error().code()))
        preferred = request._preferred_memory.memory_type
        if preferred is None:  # kDefault: where the called model put them
            preferred = utils.TRITONSERVER_MEMORY_GPU if target.on_gpu else utils.TRITONSERVER_MEMORY_CPU
        tensors = []
        for tensor in response.output_tensors():
            if tensor.name() in outputs:
                carried = utils.Tensor(tensor.name(), _carried(tensor._array))
                carried._memory_type = preferred
                tensors.append(carried)
        return utils.InferenceResponse(output_tensors=tensors)
