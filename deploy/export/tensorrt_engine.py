"""TensorRT engines from the exported ONNX: optimisation profiles over (batch, time), a timing cache,
the graph's own precision (FP32, FP16 or INT8) in a strongly typed network, and a parity check against
onnxruntime after the build.

TensorRT cannot be installed on the CPU machines this project's CI runs on; everything here that needs
it says so clearly, and the profile arithmetic, the tensor sizes at a profile's largest shapes and the choice of
network typing are plain Python that is tested everywhere.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Collection
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from qslr.deploy import tensor_names as names
from qslr.deploy.export.nvidia_stack import TENSORRT_VERSION, TRITON_CONTAINER
from qslr.deploy.served_limits import ServedLimits
from qslr.pipelines.atomic_output import write_bytes_atomic, write_text_atomic

log = logging.getLogger(__name__)


class TensorRTUnavailableError(RuntimeError):
    pass


class EngineMismatchError(ValueError):
    """An engine that the repository being built could not load or serve within its limits."""


@dataclass(frozen=True)
class ShapeRange:
    """Batch and time (frames) bounds of one optimisation profile. No bounds of its own: the default profile is the
    one `covering` the default served limits."""

    min_batch: int
    opt_batch: int
    max_batch: int
    min_time: int
    opt_time: int
    max_time: int

    def __post_init__(self) -> None:
        for axis in ("batch", "time"):
            low, mid, high = (getattr(self, f"{k}_{axis}") for k in ("min", "opt", "max"))
            if not 1 <= low <= mid <= high:
                raise ValueError(f"profile {axis}: need 1 <= min <= opt <= max, got {low}, {mid}, {high}")

    @classmethod
    def parse(cls, minimum: str, optimum: str, maximum: str) -> ShapeRange:
        """From 'BxT' strings, e.g. ('1x16', '4x140', '16x400')."""
        values = []
        for text in (minimum, optimum, maximum):
            batch, _, time = text.lower().partition("x")
            if not (batch.isdigit() and time.isdigit()):
                raise ValueError(f"profile shape {text!r}: expected BATCHxFRAMES, e.g. 4x140")
            values.append((int(batch), int(time)))
        (b0, t0), (b1, t1), (b2, t2) = values
        return cls(b0, b1, b2, t0, t1, t2)

    @classmethod
    def covering(cls, limits: ServedLimits, opt_batch: int = 4, opt_time: int = 140) -> ShapeRange:
        """The profile that serves exactly ``limits``; tuned for ``opt`` (clamped into the range)."""
        return cls(1, min(max(opt_batch, 1), limits.max_batch), limits.max_batch, limits.min_frames,
                   min(max(opt_time, limits.min_frames), limits.max_frames), limits.max_frames)

    def shapes(self) -> tuple[str, str, str]:
        """('BxT', 'BxT', 'BxT') for min, opt and max, as the command line takes them."""
        return tuple(f"{getattr(self, k + '_batch')}x{getattr(self, k + '_time')}" for k in ("min", "opt", "max"))

    def uncovered(self, limits: ServedLimits) -> list[str]:
        """What of ``limits`` this profile cannot run."""
        problems = []
        if self.min_time > limits.min_frames:
            problems.append(f"its profile starts at {self.min_time} frames, clips are padded only to "
                            f"{limits.min_frames}")
        if self.max_time < limits.max_frames:
            problems.append(f"its profile ends at {self.max_time} frames, the served maximum is {limits.max_frames}")
        if self.max_batch < limits.max_batch:
            problems.append(f"its profile ends at batch {self.max_batch}, the served maximum is {limits.max_batch}")
        if self.min_batch > 1:
            problems.append(f"its profile starts at batch {self.min_batch}, a single request is a batch of 1")
        return problems


def profile_shapes(shapes: ShapeRange, height: int, width: int) -> dict[str, tuple[tuple[int, ...], ...]]:
    """(min, opt, max) shapes of every network input for TensorRT's optimisation profile."""
    frames = tuple((b, t, height, width, 3) for b, t in ((shapes.min_batch, shapes.min_time),
                                                         (shapes.opt_batch, shapes.opt_time),
                                                         (shapes.max_batch, shapes.max_time)))
    lengths = tuple((b,) for b in (shapes.min_batch, shapes.opt_batch, shapes.max_batch))
    return {names.FRAMES: frames, names.LENGTHS: lengths}


@dataclass(frozen=True)
class EngineRecord:
    """What `qslr export tensorrt` writes beside every engine (``<plan>.json``): a plan loads only in the
    TensorRT version that built it, and serves only the shapes of its profile."""

    tensorrt_version: str
    profile: ShapeRange
    height: int
    width: int
    precision: str
    onnx: str
    # What one execution context needs at the profile's largest shapes (TensorRT's own figure); every
    # KIND_GPU instance of the served model holds one. None in records written before it was kept.
    device_memory_bytes: int | None = None
    # Whether the network was strongly typed (every layer in the graph's own types), and the builder flags that
    # were set (TF32 among them where TensorRT allows it by default). None in records written before they were kept.
    strongly_typed: bool | None = None
    builder_flags: list[str] | None = None


def engine_record_path(plan: str | Path) -> Path:
    return Path(f"{plan}.json")


def write_engine_record(plan: str | Path, record: EngineRecord) -> None:
    write_text_atomic(engine_record_path(plan), json.dumps(asdict(record), indent=1) + "\n")


def read_engine_record(plan: str | Path) -> EngineRecord:
    path = engine_record_path(plan)
    try:
        data = json.loads(path.read_text())
        return EngineRecord(**{**data, "profile": ShapeRange(**data["profile"])})
    except FileNotFoundError:
        raise EngineMismatchError(f"{plan}: no engine record {path.name} beside it; build the engine with "
                                  f"`qslr export tensorrt`, which records its TensorRT version and profile") from None
    except (ValueError, TypeError, KeyError) as exc:
        raise EngineMismatchError(f"{path}: not a valid engine record ({exc})") from None


def same_release(version: str, target: str) -> bool:
    """TensorRT plans are tied to the release that built them: major, minor and patch must agree."""
    return version.split(".")[:3] == target.split(".")[:3]


def check_engine(plan: str | Path, limits: ServedLimits, height: int, width: int,
                 target_version: str = TENSORRT_VERSION) -> EngineRecord:
    """The engine's record, if the repository can serve it; else a one-line EngineMismatchError."""
    record = read_engine_record(plan)
    problems = []
    if not same_release(record.tensorrt_version, target_version):
        problems.append(f"it was built with TensorRT {record.tensorrt_version}, the repository targets TensorRT "
                        f"{target_version} ({TRITON_CONTAINER})")
    if (record.height, record.width) != (height, width):
        problems.append(f"it takes {record.height}x{record.width} frames, the model {height}x{width}")
    problems += record.profile.uncovered(limits)
    if problems:
        raise EngineMismatchError(f"{plan}: cannot serve this engine: {'; '.join(problems)}")
    return record


def require_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise TensorRTUnavailableError(
            f"TensorRT is not installed ({exc}); it needs an NVIDIA GPU machine: pip install -e '.[tensorrt]'"
        ) from None
    import torch

    if not torch.cuda.is_available():
        raise TensorRTUnavailableError("TensorRT needs a CUDA GPU, and none is available here")
    return trt


def graph_precision_for(onnx_path: Path, expected: str | None) -> str:
    """The precision the graph states (`qslr export onnx --fp16`, `--int8` or neither), refused if it is not
    ``expected``.

    QSLR builds strongly typed networks only (`strongly_typed_creation`): every layer runs in the type the graph
    gives it, and no builder flag lowers a float32 graph. An FP16 engine therefore needs the FP16 graph, whose
    program keeps the BiLSTM and the length arithmetic out of half precision; a converter run over the float32
    graph would guess instead, and it guesses wrong (mislabelled Casts, an FP16 LSTM).
    """
    from qslr.deploy.export.onnx_export import graph_precision, read_metadata

    precision = graph_precision(read_metadata(onnx_path))
    if expected is not None and precision != expected:
        raise ValueError(f"{onnx_path}: the graph's precision is {precision}, and TensorRT runs a graph in its own "
                         f"types: for an engine in {expected}, export it with `qslr export onnx --{expected}`")
    return precision


def strongly_typed_creation(creation_flags: Collection[str], version: str) -> str:
    """The network creation flag a build asks for, by name, given the names of TensorRT's
    NetworkDefinitionCreationFlag members (``creation_flags``) in ``version``.

    Strongly typed wherever the API has it (TensorRT 10.0 on; in 11 every network is, and the flag is kept and
    ignored): each layer then runs in the type the graph gives it, the graph's precision being stated by the
    program (`ServedModel`). No precision builder flag goes with it (TensorRT 10 refuses FP16 or INT8 with a strongly
    typed network; 11 has none): an INT8 graph's QuantizeLinear/DequantizeLinear pairs are its INT8 layers. A
    weakly typed build is refused: with the FP16 flag and no precision constraints TensorRT 10 may run the
    float32 BiLSTM in FP16, and an INT8 build would need the INT8 flag too.
    """
    if "STRONGLY_TYPED" not in creation_flags:
        raise ValueError(f"TensorRT {version} cannot build strongly typed networks (NetworkDefinitionCreationFlag."
                         f"STRONGLY_TYPED, TensorRT 10.0 and later): QSLR builds each layer in its graph's type, "
                         f"with TensorRT {TENSORRT_VERSION} ({TRITON_CONTAINER})")
    return "STRONGLY_TYPED"


def fitting_profile(onnx_path: str | Path, height: int, width: int, limits: ServedLimits | None = None) -> ShapeRange:
    """The profile `covering` ``limits`` (the default served ones), its batch lowered to the largest at which every
    tensor of the graph stays within what TensorRT holds at the served maximum of frames (`tensor_sizes`)."""
    import onnx

    from qslr.deploy.export.tensor_sizes import largest_batch

    limits = limits or ServedLimits()
    graph = onnx.load(str(onnx_path), load_external_data=False)
    batch = largest_batch(graph, limits.max_frames, height, width, limits.max_batch)
    # Not even one clip fitting is left to the build's own check, which says so.
    return ShapeRange.covering(dataclasses.replace(limits, max_batch=max(batch, 1)))


def build_engine(onnx_path: str | Path, out: str | Path, shapes: ShapeRange, height: int, width: int,
                 precision: str | None = None, timing_cache: str | Path | None = None,
                 workspace_gib: float = 4.0) -> Path:
    """An engine in the graph's own precision (``precision``, if given, must be it), from a strongly typed
    network; refused before TensorRT is needed where the profile's largest shapes hold a tensor TensorRT cannot
    (`tensor_sizes.check_profile_size`)."""
    from qslr.deploy.export.tensor_sizes import check_profile_size

    precision = graph_precision_for(Path(onnx_path), precision)
    check_profile_size(onnx_path, shapes.max_batch, shapes.max_time, height, width)
    trt = require_tensorrt()
    if not same_release(trt.__version__, TENSORRT_VERSION):
        log.warning("TensorRT %s is building %s, but QSLR serves with TensorRT %s (%s): `qslr triton build` "
                    "will refuse this engine", trt.__version__, out, TENSORRT_VERSION, TRITON_CONTAINER)
    onnx_path, out = Path(onnx_path), Path(out)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    creation = strongly_typed_creation(trt.NetworkDefinitionCreationFlag.__members__, trt.__version__)
    network = builder.create_network(1 << int(getattr(trt.NetworkDefinitionCreationFlag, creation)))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * 2**30))
    profile = builder.create_optimization_profile()
    for name, (low, mid, high) in profile_shapes(shapes, height, width).items():
        profile.set_shape(name, low, mid, high)
    config.add_optimization_profile(profile)
    cache_path = Path(timing_cache) if timing_cache else None
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path and cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path}")
    out.parent.mkdir(parents=True, exist_ok=True)
    # The record first: a plan never lies in place without the facts needed to judge it.
    engine = trt.Runtime(logger).deserialize_cuda_engine(serialized)
    memory = int(getattr(engine, "device_memory_size_v2", 0) or engine.device_memory_size)
    log.info("%s: one execution context needs %.2f GiB of device memory at %s", out, memory / 2**30,
             shapes.shapes()[2])
    flags = sorted(name for name, flag in trt.BuilderFlag.__members__.items() if config.get_flag(flag))
    # TensorRT 11 makes every network strongly typed and ignores the flag, so it need not read back as set there.
    strongly_typed = network.get_flag(getattr(trt.NetworkDefinitionCreationFlag, creation)) or \
        int(trt.__version__.split(".")[0]) >= 11
    write_engine_record(out, EngineRecord(trt.__version__, shapes, height, width, precision, onnx_path.name, memory,
                                          bool(strongly_typed), flags))
    write_bytes_atomic(out, bytes(serialized))
    if cache_path:
        write_bytes_atomic(cache_path, bytes(config.get_timing_cache().serialize()))
    return out


class EngineRunner:
    """Runs a serialized engine on CUDA tensors (TensorRT 10/11 named-tensor API)."""

    def __init__(self, plan: str | Path):
        trt = require_tensorrt()
        import torch

        self.torch = torch
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(Path(plan).read_bytes())
        self.context = self.engine.create_execution_context()
        self.outputs = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)
                        if self.engine.get_tensor_mode(self.engine.get_tensor_name(i)) == trt.TensorIOMode.OUTPUT]

    def __call__(self, frames: np.ndarray, lengths: np.ndarray) -> dict[str, np.ndarray]:
        torch = self.torch
        inputs = {names.FRAMES: torch.from_numpy(frames).cuda(), names.LENGTHS: torch.from_numpy(lengths).cuda()}
        for name, tensor in inputs.items():
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        dtypes = {names.LOG_PROBS: torch.float32, names.OUTPUT_LENGTHS: torch.int64,
                  names.TOPK_LOG_PROBS: torch.float32, names.TOPK_IDS: torch.int64}
        results = {}
        for name in self.outputs:
            results[name] = torch.empty(tuple(self.context.get_tensor_shape(name)), dtype=dtypes[name], device="cuda")
            self.context.set_tensor_address(name, results[name].data_ptr())
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        stream.synchronize()
        return {name: tensor.cpu().numpy() for name, tensor in results.items()}


def engine_parity(plan: str | Path, onnx_path: str | Path, frames: np.ndarray, lengths: np.ndarray) -> float:
    """Largest |TensorRT - onnxruntime| of the log-probabilities over valid steps."""
    from qslr.deploy.export.onnx_export import onnx_session

    expected, expected_lengths = onnx_session(onnx_path).run(
        [names.LOG_PROBS, names.OUTPUT_LENGTHS], {names.FRAMES: frames, names.LENGTHS: lengths})
    got = EngineRunner(plan)(frames, lengths)
    if not np.array_equal(got[names.OUTPUT_LENGTHS], expected_lengths):
        raise AssertionError("TensorRT and onnxruntime disagree on the output lengths")
    log_probs = got[names.LOG_PROBS]
    return max(float(np.abs(log_probs[i, :n] - expected[i, :n]).max()) for i, n in enumerate(expected_lengths))
