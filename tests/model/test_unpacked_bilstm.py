"""The BiLSTM without packing equals the packed one that was trained, on every step."""

from __future__ import annotations

import torch

from qslr.model.sequence_model import BiLSTM
from qslr.model.unpacked_bilstm import bilstm_unpacked


def small_bilstm() -> BiLSTM:
    torch.manual_seed(0)
    return BiLSTM(12, hidden_size=20, num_layers=2, dropout=0.3).eval()


def test_equals_the_packed_bilstm_on_mixed_lengths():
    bilstm = small_bilstm()
    lengths = torch.tensor([13, 5, 1, 9, 13])
    x = torch.randn(5, 13, 12)
    for row, length in enumerate(lengths.tolist()):
        x[row, length:] = 1e3  # padding must not leak into either direction
    with torch.no_grad():
        packed = bilstm(x, lengths)
        unpacked = bilstm_unpacked(bilstm.rnn, x, lengths)
        torch.testing.assert_close(unpacked, packed, atol=1e-5, rtol=0)  # zero past each length, as padded
        for row, length in enumerate(lengths.tolist()):
            alone = bilstm(x[row:row + 1, :length], torch.tensor([length]))
            torch.testing.assert_close(unpacked[row, :length], alone[0], atol=1e-5, rtol=0)


def test_longer_padding_than_any_sample():
    bilstm = small_bilstm()
    x, lengths = torch.randn(3, 20, 12), torch.tensor([4, 11, 7])
    with torch.no_grad():
        torch.testing.assert_close(bilstm_unpacked(bilstm.rnn, x, lengths), bilstm(x, lengths), atol=1e-5, rtol=0)
