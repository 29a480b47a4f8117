"""The named choices of a Triton repository, in a module light enough for the CLI to import at start-up."""

from qslr.deploy.decoder_choices import DALI, GPU_SUFFIX, PYAV

# What runs the visual network: onnxruntime in a python model (CPU), or a TensorRT plan (GPU).
VISUAL_BACKENDS = ("onnxruntime", "tensorrt")
# How `preprocess` decodes uploads: DALI on the CPU or with NVDEC, or FFmpeg through PyAV.
VIDEO_DECODERS = (DALI, DALI + GPU_SUFFIX, PYAV)
