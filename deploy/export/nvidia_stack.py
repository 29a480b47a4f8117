"""The NVIDIA release QSLR's GPU serving path targets, named once.

A TensorRT plan loads only in the TensorRT release that built it, and Triton's TensorRT backend is linked
against the TensorRT of its own container. So one Triton container release is chosen, the `tensorrt` extra
pins its TensorRT (and the torch-tensorrt built against that TensorRT), `qslr export tensorrt` records the
version that built each engine, and `qslr triton build --visual tensorrt` refuses an engine of any other.
docs/nvidia_versions.md gives the whole matrix and where each figure comes from.
"""

TRITON_RELEASE = "26.07"  # the release whose TensorRT (11.1) torch-tensorrt 2.14 is built against
TRITON_CONTAINER = f"nvcr.io/nvidia/tritonserver:{TRITON_RELEASE}-py3"
TENSORRT_VERSION = "11.1.0"  # major.minor.patch; a plan needs all three to match
TENSORRT_PIP_PIN = "11.1.0.106"  # the tensorrt-cu13 wheel of that release (pyproject's `tensorrt` extra)
TORCH_TENSORRT_PIN = "2.14.0"


def libnvinfer_version(search: str | None = None) -> str | None:
    """The release of the TensorRT runtime library the dynamic linker finds (major.minor.patch), or None.

    That library, not the pip wheel, is what Triton's TensorRT backend loads in the container; its real file
    name carries the full release (``libnvinfer.so.11.1.0``). ``search``: a folder to look in instead of
    the linker's cache.
    """
    import re
    import subprocess
    from pathlib import Path

    if search is not None:
        candidates = sorted(Path(search).glob("libnvinfer.so.*"))
    else:
        try:
            listing = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.TimeoutExpired):
            return None
        candidates = [Path(line.rsplit("=>", 1)[1].strip()) for line in listing.splitlines()
                      if re.match(r"\s*libnvinfer\.so\.\d+\s", line) and "=>" in line]
    for candidate in candidates:
        found = re.fullmatch(r"libnvinfer\.so\.(\d+\.\d+\.\d+)", candidate.resolve().name)
        if found:
            return found.group(1)
    return None
