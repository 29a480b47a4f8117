"""The video decoders' names, in a module light enough for command lines to import (deploy/served_video.py imports
PyAV and PyTorch). A clip decoder is DALI's or FFmpeg's (through PyAV); a repository's `preprocess` may run DALI's
on the GPU too (NVDEC), named with the GPU suffix."""

DALI, PYAV = "dali", "pyav"
CLIP_DECODERS = (PYAV, DALI)
GPU_SUFFIX = "-gpu"
