"""`qslr export`, `qslr triton`, `qslr serve` and `qslr infer`: from a checkpoint to a served model."""

from __future__ import annotations

import click


@click.group("export")
def export() -> None:
    """Export a checkpoint to ONNX, TensorRT or torch-tensorrt (arrives with the export issue)."""


@click.group("triton")
def triton() -> None:
    """Build a Triton model repository from a checkpoint (arrives with the serving issue)."""


@click.group("serve")
def serve() -> None:
    """Run tritonserver on a model repository (arrives with the serving issue)."""


@click.group("infer")
def infer() -> None:
    """Recognise videos through a running server (arrives with the serving issue)."""
