"""The inference parts of `qslr bench gpu-check`: the served model on CUDA against the CPU, torch.export's program on
CUDA, onnxruntime's CUDA provider, TensorRT engines and torch-tensorrt. Every comparison is of log-probabilities over
each clip's valid steps, at BATCHES, and is judged against a tolerance stated here."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from functools import partial

import torch

from qslr.tools.gpu_workspace import BATCHES, FRAME_SIZE, PROFILE, Workspace

# The same float32 model run by a GPU and by the CPU. GPUs run float32 convolutions in TF32 by default (cuDNN under
# PyTorch's torch.backends.cudnn.allow_tf32, TensorRT's TF32 builder flag, onnxruntime's CUDA provider): a 10-bit
# significand like fp16's, whose drift on the demo model is 7.7e-3 (deploy/export/export_checks.py). A padding leak
# or a wrong cast moves log-probabilities by order 1.
FLOAT32_TOLERANCE = 5e-2
# The fp16 program (or an fp16 engine) against float32: export_checks' fp16 figure, for the same reasons.
FP16_TOLERANCE = 5e-2
# torch.export's program against eager PyTorch on the same GPU: the same kernels on the same weights, so only the
# order of a few operations may differ; still far below a padding leak. fp16 rounds each step at 1e-3 relative.
SAME_KERNELS_TOLERANCE = {"fp32": 1e-4, "fp16": 5e-3}
PRECISION_TOLERANCE = {"fp32": FLOAT32_TOLERANCE, "fp16": FP16_TOLERANCE}


def examples() -> list[tuple[torch.Tensor, torch.Tensor]]:
    from qslr.deploy.served import example_inputs

    return [example_inputs(batch, time, FRAME_SIZE, FRAME_SIZE, seed=time) for batch, time in BATCHES]


def on(device: str, model) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """``model`` as a function of CPU inputs, run on ``device``: (log-probabilities, steps) back on the CPU."""
    def outputs(frames: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            log_probs, steps = model(frames.to(device), lengths.to(device))[:2]
        return log_probs.float().cpu(), steps.cpu()

    return outputs


def worst(expected: Callable, got: Callable) -> float:
    """Largest difference between two runs of the served signature over every input of examples()."""
    return max(difference(expected(*inputs), got(*inputs)) for inputs in examples())


def difference(expected: tuple[torch.Tensor, torch.Tensor], got: tuple[torch.Tensor, torch.Tensor]) -> float:
    """Largest |difference| of the log-probabilities over every clip's valid steps; the step counts must agree."""
    (want, want_steps), (have, have_steps) = expected, got
    if not torch.equal(want_steps, have_steps):
        raise AssertionError(f"output lengths differ: {have_steps.tolist()} against {want_steps.tolist()}")
    return max(float((have[i, :n] - want[i, :n]).abs().max()) for i, n in enumerate(want_steps.tolist()))


def judged(what: str, worst: float, tolerance: float) -> dict:
    if not worst <= tolerance:
        raise AssertionError(f"{what}: max |difference| {worst:.2e}, over the tolerance of {tolerance:.0e}")
    return {"max_difference": worst, "tolerance": tolerance}


def served(workspace: Workspace, precision: str, device: str, frame_size: bool = False):
    from qslr.deploy.served import served_from_checkpoint

    size = (FRAME_SIZE, FRAME_SIZE) if frame_size else None
    return served_from_checkpoint(workspace.checkpoint(), frame_size=size, precision=precision)[0].to(device).eval()


def cpu_reference(workspace: Workspace) -> Callable:
    """The float32 model on the CPU: what every GPU path is held to."""
    return on("cpu", served(workspace, "fp32", "cpu"))


def cuda_inference(workspace: Workspace) -> dict:
    reference = cpu_reference(workspace)
    details = {}
    for precision, tolerance in PRECISION_TOLERANCE.items():
        apart = worst(reference, on("cuda", served(workspace, precision, "cuda")))
        details[precision] = judged(f"the {precision} model on CUDA against float32 on the CPU", apart, tolerance)
    return details


def torch_export_on_cuda(workspace: Workspace) -> dict:
    from qslr.deploy.export.tensorrt_engine import ShapeRange
    from qslr.deploy.export.torch_export import export_program

    details = {}
    for precision, tolerance in SAME_KERNELS_TOLERANCE.items():
        model = served(workspace, precision, "cuda", frame_size=True)
        program = export_program(model, ShapeRange.parse(*PROFILE)).module()
        apart = worst(on("cuda", model), on("cuda", program))
        details[precision] = judged(f"torch.export's {precision} program against eager PyTorch on CUDA", apart,
                                    tolerance)
    return details


def onnxruntime_cuda(workspace: Workspace) -> dict:
    import onnxruntime as ort

    reference = cpu_reference(workspace)
    details = {}
    for precision, tolerance in PRECISION_TOLERANCE.items():
        graph = workspace.graph(precision)
        session = ort.InferenceSession(str(graph), providers=["CUDAExecutionProvider"])
        # onnxruntime falls back to the CPU without an error when the CUDA provider cannot load its libraries.
        if session.get_providers()[0] != "CUDAExecutionProvider":
            raise AssertionError(f"onnxruntime opened {graph.name} with {session.get_providers()}: its CUDA provider "
                                 f"did not load")
        apart = worst(reference, partial(_onnxruntime, session))
        details[precision] = judged(f"onnxruntime's CUDA provider on the {precision} graph against float32 PyTorch on "
                                    f"the CPU", apart, tolerance)
    return details


def _onnxruntime(session, frames: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    from qslr.deploy import tensor_names as names

    log_probs, steps = session.run([names.LOG_PROBS, names.OUTPUT_LENGTHS],
                                   {names.FRAMES: frames.numpy(), names.LENGTHS: lengths.numpy()})
    return torch.from_numpy(log_probs).float(), torch.from_numpy(steps)


def tensorrt_engines(workspace: Workspace) -> dict:
    """`qslr export tensorrt` on both graphs, each engine against onnxruntime running its graph on the CPU."""
    from qslr.deploy.export.tensorrt_engine import engine_parity

    details = {}
    for precision, tolerance in PRECISION_TOLERANCE.items():
        graph, plan = workspace.graph(precision), workspace.root / f"model.{precision}.plan"
        minimum, optimum, maximum = PROFILE
        qslr("export", "tensorrt", "--onnx", str(graph), "--out", str(plan), "--min", minimum, "--opt", optimum,
             "--max", maximum)
        apart = max(engine_parity(plan, graph, frames.numpy(), lengths.numpy()) for frames, lengths in examples())
        details[precision] = judged(f"the TensorRT {precision} engine against onnxruntime on its graph", apart,
                                    tolerance)
    return details


def torch_tensorrt_program(workspace: Workspace) -> dict:
    """`qslr export torch-trt`'s fp16 program, saved, loaded back and run against eager float32 PyTorch on CUDA;
    how much of it runs in TensorRT, from torch-tensorrt's own partitioning of the same program."""
    import torch_tensorrt

    import qslr.model.unpacked_bilstm  # noqa: F401 - registers qslr::lstm, which the saved program calls
    from qslr.deploy.export.tensorrt_engine import ShapeRange
    from qslr.deploy.export.torch_trt import compile_served, save_compiled

    shapes = ShapeRange.parse(*PROFILE)
    placement = tensorrt_placement(workspace, shapes)
    eager = on("cuda", served(workspace, "fp32", "cuda"))
    compiled = compile_served(workspace.checkpoint(), shapes, FRAME_SIZE, FRAME_SIZE, fp16=True)
    before = judged("torch-tensorrt's fp16 module as compiled, against eager float32 on CUDA",
                    worst(eager, on("cuda", compiled.module)), FP16_TOLERANCE)
    saved = save_compiled(compiled, shapes, workspace.root / "model.ep")
    loaded = torch_tensorrt.load(str(saved))
    engines = sum(node.op == "call_function" and "execute_engine" in str(node.target) for node in loaded.graph.nodes)
    if engines != len(placement["operators_per_engine"]):
        raise AssertionError(f"the saved program calls {engines} TensorRT engine(s), its partitioning made "
                             f"{len(placement['operators_per_engine'])}")
    after = judged("torch-tensorrt's fp16 program, saved and loaded, against eager float32 on CUDA",
                   worst(eager, on("cuda", loaded.module())), FP16_TOLERANCE)
    return {"compiled": before, "saved_and_loaded": after, **placement, "engines_in_saved_program": engines}


def tensorrt_placement(workspace: Workspace, shapes) -> dict:
    """Where torch-tensorrt puts each operator of the fp16 program, from a dry run of its compiler (it partitions
    the program as the compile does, converts nothing): operators per TensorRT engine (its `_run_on_acc` submodules,
    counted as its dry-run report counts them) and those left to PyTorch (`_run_on_gpu`), by operator."""
    import torch_tensorrt

    from qslr.deploy import tensor_names as names
    from qslr.deploy.export.tensorrt_engine import profile_shapes
    from qslr.deploy.export.torch_export import export_program

    program = export_program(served(workspace, "fp16", "cuda", frame_size=True), shapes)
    profile = profile_shapes(shapes, FRAME_SIZE, FRAME_SIZE)
    inputs = [torch_tensorrt.Input(min_shape=low, opt_shape=mid, max_shape=high, dtype=dtype)
              for (low, mid, high), dtype in ((profile[names.FRAMES], torch.uint8),
                                              (profile[names.LENGTHS], torch.int64))]
    partitioned = torch_tensorrt.dynamo.compile(program, arg_inputs=inputs, dryrun=True)
    per_engine, in_pytorch = {}, Counter()
    for name, module in partitioned.named_children():
        operators = [node for node in module.graph.nodes if node.op in ("call_function", "call_method", "call_module")]
        if name.startswith("_run_on_acc"):
            per_engine[name] = len(operators)
        elif name.startswith("_run_on_gpu"):
            in_pytorch.update(str(node.target) for node in operators)
    if not per_engine:
        raise AssertionError("torch-tensorrt puts no operator of the program in TensorRT")
    return {"operators_per_engine": per_engine, "operators_in_tensorrt": sum(per_engine.values()),
            "operators_in_pytorch": dict(in_pytorch)}


def qslr(*args: str, timeout: float = 600) -> str:
    """A `qslr` command as users run it, in its own process."""
    command = [sys.executable, "-m", "qslr.tools.cli", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"qslr {' '.join(args)} failed: {(result.stderr or result.stdout)[-600:]}")
    return result.stdout + result.stderr
