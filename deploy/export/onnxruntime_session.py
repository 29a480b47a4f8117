"""An onnxruntime session on an exported graph, opened with nothing else imported.

The served `visual` model opens one at every server start, so this module imports onnxruntime and the standard
library only: not onnx_export (PyTorch and the network, 2.5 s of imports) and, for a float graph, not onnx. A
QDQ graph is first lowered for onnxruntime's CPU provider (`qdq_layout.for_onnxruntime`), which needs onnx.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def onnx_session(path: str | Path, threads: int = 1):
    import onnxruntime as ort  # here, so that importing onnx_export stays free of it

    options = ort.SessionOptions()
    # One thread per session: several sessions (and PyTorch) share the machine's cores.
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Idle workers sleep instead of spinning: in a server the cores they would spin on decode and search
    # for the other models (measured in docs/benchmarks.md).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(onnxruntime_graph(path), options, providers=["CPUExecutionProvider"])


def onnxruntime_graph(path: str | Path) -> str | bytes:
    """What an onnxruntime session is made from: the file's path for a float graph, the graph lowered by
    `for_onnxruntime` (serialised) for a QDQ one; a QDQ graph it cannot lower is refused naming the file."""
    data = Path(path).read_bytes()
    # A byte search before any parse: every served or local session starts here, and parsing a float graph only
    # to find it has no quantisation costs 0.28 s for ResNet-18 with 1,296 classes (130 MB), the search 0.13 s.
    if b"QuantizeLinear" not in data:
        return str(path)
    import onnx

    from qslr.deploy.export.qdq_layout import for_onnxruntime

    model = onnx.load_from_string(data)
    if not any(node.op_type == "QuantizeLinear" for node in model.graph.node):
        return str(path)
    try:
        lowering = for_onnxruntime(model)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    log.debug("%s: %d convolution branches' pairs restored, %d quantised tensors stored as UINT8 for onnxruntime, "
              "%d INT8", path, lowering.restored, lowering.unsigned, lowering.signed)
    return model.SerializeToString()
