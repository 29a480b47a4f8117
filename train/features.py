"""Frame-wise features of every video, as the original's ``--phase features`` writes them.

    <out>/<split>/<id>.npy       float32 (T_pad, D): the frame encoder's output for the padded clip (6
                                 copies of the first frame, the clip, copies of the last frame up to a
                                 multiple of 4 plus 12), centre crop, no augmentation
    <out>/<split>/index.jsonl    one row per video: id, frames (T_pad), feature_dim, targets (gloss ids)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from qslr.model.network import SLRModel
from qslr.pipelines.atomic_output import atomic_path, write_text_atomic
from qslr.train.config import ExperimentConfig
from qslr.train.data import make_loader


@torch.no_grad()
def extract_features(model: SLRModel, config: ExperimentConfig, split: str, device: torch.device,
                     vocab: dict[str, int], out: Path) -> int:
    folder = out / split
    folder.mkdir(parents=True, exist_ok=True)
    loader = make_loader(config, split, train=False, device=str(device), vocab=vocab)
    model.eval()
    rows = []
    for batch in loader:
        framewise = model.encode_frames(batch.videos.to(device), batch.lengths.to(device)).float().cpu().numpy()
        offsets = np.concatenate([[0], np.cumsum(batch.target_lengths.numpy())])
        for row, video_id in enumerate(batch.ids):
            length = int(batch.lengths[row])
            features = np.ascontiguousarray(framewise[row, :length])
            with atomic_path(folder / f"{video_id}.npy") as tmp, tmp.open("wb") as handle:
                np.save(handle, features)
            rows.append({"id": video_id, "frames": length, "feature_dim": int(features.shape[1]),
                         "targets": batch.targets[offsets[row]:offsets[row + 1]].tolist()})
    write_text_atomic(folder / "index.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    return len(rows)
