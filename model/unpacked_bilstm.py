"""The trained BiLSTM run without packed sequences, so that a graph keeps a dynamic time axis.

Each layer is two forward-only LSTMs over the padded batch, with the trained weights. The forward direction
needs nothing more: steps past a sample's end come after its valid ones and cannot change them. The reverse
direction reads each sample reversed within its own length, so that it starts at the sample's last valid
step and meets the padding last, and its output is put back in order by the same permutation. On valid steps
this equals the packed BiLSTM; past each length the output is zero, as the packed one pads it. Dropout
between layers is left out: this is for a network in eval mode.
"""

from __future__ import annotations

import torch
from torch import nn


@torch.library.custom_op("qslr::lstm", mutates_args=())
def lstm(x: torch.Tensor, weight_ih: torch.Tensor, weight_hh: torch.Tensor, bias_ih: torch.Tensor,
         bias_hh: torch.Tensor) -> torch.Tensor:
    """One forward-only LSTM layer, (B, T, input) -> (B, T, hidden), from a zero state, in its weights' type."""
    # A compiler's autocast pass may hand over a half-precision input; the recurrence keeps its own type.
    # Contiguous, as the fake below says: torch.export 2.5 traced the reshape of its output as a view, which the
    # real, strided output of some shapes refuses ("view size is not compatible").
    return _lstm(x.to(weight_hh.dtype), [weight_ih, weight_hh, bias_ih, bias_hh]).contiguous()


@lstm.register_fake
def _(x, weight_ih, weight_hh, bias_ih, bias_hh):
    return x.new_empty(x.shape[0], x.shape[1], weight_hh.shape[1], dtype=weight_hh.dtype)


def _lstm(x: torch.Tensor, weights: list[torch.Tensor]) -> torch.Tensor:
    state = x.new_zeros(1, x.shape[0], weights[1].shape[1])
    return torch.lstm(x, (state, state), weights, True, 1, 0.0, False, False, True)[0]


def bilstm_unpacked(rnn: nn.LSTM, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, T, input) and (B,) valid steps -> (B, T, 2 * hidden), with the weights of a bidirectional ``rnn``."""
    if not (rnn.bidirectional and rnn.batch_first and rnn.bias) or rnn.proj_size:
        raise ValueError("expected a batch-first bidirectional LSTM with biases and no projection")
    batch, time = x.shape[0], x.shape[1]
    steps = torch.arange(time, device=x.device)[None, :]
    lengths = lengths.to(x.device)[:, None]
    valid = steps < lengths
    # Rows of (batch x time) in reverse within each length and in place past it: its own inverse.
    order = torch.where(valid, lengths - 1 - steps, steps) + torch.arange(batch, device=x.device)[:, None] * time
    order = order.reshape(-1)
    for layer in range(rnn.num_layers):
        ahead = _layer(rnn, layer, "", x)
        behind = _reorder(_layer(rnn, layer, "_reverse", _reorder(x, order)), order)
        x = torch.cat([ahead, behind], dim=-1)
    return x * valid[:, :, None].to(x.dtype)


def _layer(rnn: nn.LSTM, layer: int, direction: str, x: torch.Tensor) -> torch.Tensor:
    weights = [getattr(rnn, f"{name}_l{layer}{direction}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    # The legacy ONNX exporter turns aten::lstm into ONNX's LSTM but knows nothing of the custom op, while
    # torch.export unrolls aten::lstm one step per frame, fixing the time axis, and keeps the custom op whole.
    return _lstm(x, weights) if torch.onnx.is_in_onnx_export() else lstm(x, *weights)


def _reorder(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, x.shape[-1]).index_select(0, rows).reshape(x.shape)
