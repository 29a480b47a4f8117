"""Where QSLR's package data lies: presets, Triton templates, static files, the operator table.

Found through importlib.resources, so that an installed wheel, an editable install and any working folder
find the same files; never through a path relative to the source tree.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path


def package_folder(package: str) -> Path:
    """The folder of ``package`` (e.g. ``qslr.configs``) on disk; QSLR is never run from a zip."""
    folder = files(package)
    try:
        return Path(os.fspath(folder))
    except TypeError:
        raise RuntimeError(f"{package}: its files are not in a folder on disk ({folder!r}); install QSLR "
                           f"unpacked (pip does)") from None
