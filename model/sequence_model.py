"""The BiLSTM that aligns visual features to glosses, run on packed sequences so padding is never read."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


class BiLSTM(nn.Module):
    """(B, T, input_size) -> (B, T, hidden_size); ``hidden_size`` counts both directions."""

    def __init__(self, input_size: int, hidden_size: int = 1024, num_layers: int = 2, dropout: float = 0.3,
                 residual: bool = False):
        super().__init__()
        if hidden_size % 2:
            raise ValueError(f"BiLSTM hidden_size must be even (two directions), got {hidden_size}")
        if residual and input_size != hidden_size:
            raise ValueError(f"a residual BiLSTM needs its input as wide as its output ({input_size} != {hidden_size})")
        self.residual = residual
        self.rnn = nn.LSTM(input_size, hidden_size // 2, num_layers=num_layers,
                           dropout=dropout if num_layers > 1 else 0.0, bidirectional=True, batch_first=True)
        self.out_dim = hidden_size

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T, input_size) of any float type -> float32.

        Autocast would run the recurrence in half precision: on a GPU in float16 even when bfloat16 is asked
        for, where no grad scaler guards it. Outside autocast it runs in float32, whatever the input's type.
        """
        with torch.autocast(device_type=x.device.type, enabled=False):
            packed = pack_padded_sequence(x.float(), lengths.cpu(), batch_first=True, enforce_sorted=False)
            output, _ = self.rnn(packed)
        padded, _ = pad_packed_sequence(output, batch_first=True, total_length=x.shape[1])
        return self.add_input(padded, x)

    def add_input(self, output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The residual connection, where there is one; float32 like the recurrence."""
        return output + x.float() if self.residual else output
