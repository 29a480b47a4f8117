"""The BiLSTM: float32 under mixed precision."""

from __future__ import annotations

import torch

from qslr.model.network import build_model
from qslr.model.sequence_model import BiLSTM


def test_the_lstm_stays_float32_under_bf16_autocast():
    # On a GPU, autocast runs cuDNN's RNN in float16 even when bfloat16 is asked for. CPU autocast shows the
    # same leak: its oneDNN LSTM layer is on the bfloat16 list, so even a float32 input is computed in
    # bfloat16 (about 2e-3 off), and a bfloat16 input gives a bfloat16 output.
    torch.manual_seed(0)
    bilstm = BiLSTM(12, hidden_size=20, num_layers=2, dropout=0.0).eval()
    x, lengths = torch.randn(3, 9, 12), torch.tensor([9, 4, 6])
    with torch.no_grad():
        expected = bilstm(x, lengths)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = bilstm(x.to(torch.bfloat16), lengths)
            exact = bilstm(x, lengths)
    assert got.dtype == exact.dtype == torch.float32
    torch.testing.assert_close(exact, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(got, bilstm(x.to(torch.bfloat16).float(), lengths), atol=1e-6, rtol=0)


def test_the_whole_model_under_bf16_autocast_gives_float32_sequence_features():
    torch.manual_seed(0)
    model = build_model(9, {"arch": "tiny_cnn", "weights": None, "options": {"channels": [4, 8], "out_dim": 16}},
                        {"kernels": ["K5", "P2", "K5", "P2"], "hidden_size": 24},
                        {"hidden_size": 20, "num_layers": 2, "dropout": 0.0}, {}).eval()
    seen = []
    model.sequence.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    lengths = torch.tensor([40, 28])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(2, 40, 3, 32, 32), lengths)
    assert seen == [torch.float32]
    assert out.visual.dtype == torch.bfloat16  # autocast itself is on: the temporal convolutions ran in bf16
