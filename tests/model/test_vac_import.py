"""Original VAC/SMKD checkpoints: exact key names and shapes in, the same logits out."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from click.testing import CliRunner

from qslr.model.checkpoints import CheckpointError, load_checkpoint
from qslr.model.vac_import import import_vac
from qslr.pipelines.prepared import write_vocab
from qslr.pipelines.temporal_padding import padded_length
from qslr.tools.cli import cli

CLASSES = 11
VAC = ["K5", "P2", "K5", "P2"]


def _bn(state: dict, prefix: str, size: int, g: torch.Generator) -> None:
    state[f"{prefix}.weight"] = 1 + 0.1 * torch.randn(size, generator=g)
    state[f"{prefix}.bias"] = 0.1 * torch.randn(size, generator=g)
    state[f"{prefix}.running_mean"] = 0.1 * torch.randn(size, generator=g)
    state[f"{prefix}.running_var"] = 0.5 + torch.rand(size, generator=g)
    state[f"{prefix}.num_batches_tracked"] = torch.tensor(7)


def original_state(weight_norm: bool, shared: bool, module: bool = False) -> dict[str, torch.Tensor]:
    """A state dict with exactly the original code's names and shapes (docs/original_vac.md), random values."""
    g = torch.Generator().manual_seed(int(weight_norm) * 2 + int(shared))
    state: dict[str, torch.Tensor] = {}
    resnet = torchvision.models.resnet18().state_dict()
    prefix = "conv2d.module." if module else "conv2d."
    for key, value in resnet.items():
        if key.startswith("fc."):
            continue
        if key.endswith("running_var"):
            value = 0.5 + torch.rand(value.shape, generator=g)
        elif key.endswith("running_mean"):
            value = 0.1 * torch.randn(value.shape, generator=g)
        state[prefix + key] = value
    for index, in_channels in ((0, 512), (4, 1024)):
        state[f"conv1d.temporal_conv.{index}.weight"] = 0.02 * torch.randn(1024, in_channels, 5, generator=g)
        state[f"conv1d.temporal_conv.{index}.bias"] = 0.02 * torch.randn(1024, generator=g)
        _bn(state, f"conv1d.temporal_conv.{index + 1}", 1024, g)
    for layer in (0, 1):
        for suffix in ("", "_reverse"):
            state[f"temporal_model.rnn.weight_ih_l{layer}{suffix}"] = 0.03 * torch.randn(2048, 1024, generator=g)
            state[f"temporal_model.rnn.weight_hh_l{layer}{suffix}"] = 0.03 * torch.randn(2048, 512, generator=g)
            state[f"temporal_model.rnn.bias_ih_l{layer}{suffix}"] = 0.03 * torch.randn(2048, generator=g)
            state[f"temporal_model.rnn.bias_hh_l{layer}{suffix}"] = 0.03 * torch.randn(2048, generator=g)
    for head in ("classifier", "conv1d.fc"):
        if weight_norm:
            state[f"{head}.weight"] = torch.randn(1024, CLASSES, generator=g)  # (in, out): transposed
        else:
            state[f"{head}.weight"] = 0.03 * torch.randn(CLASSES, 1024, generator=g)
            state[f"{head}.bias"] = 0.03 * torch.randn(CLASSES, generator=g)
    if shared:
        state["conv1d.fc.weight"] = state["classifier.weight"]
    return state


def reference_logits(state: dict[str, torch.Tensor], frames: torch.Tensor, weight_norm: bool):
    """The original forward for one clip, written with torchvision and functional ops on the original keys."""
    state = {k.replace(".module", ""): v for k, v in state.items()}
    resnet = torchvision.models.resnet18()
    resnet.fc = torch.nn.Identity()
    resnet.load_state_dict({k[len("conv2d."):]: v for k, v in state.items() if k.startswith("conv2d.")})
    x = resnet.eval()(frames).T[None]  # (1, 512, L)
    for index in (0, 4):
        p = f"conv1d.temporal_conv.{index}"
        bn = f"conv1d.temporal_conv.{index + 1}"
        x = F.conv1d(x, state[f"{p}.weight"], state[f"{p}.bias"])
        x = F.batch_norm(x, state[f"{bn}.running_mean"], state[f"{bn}.running_var"], state[f"{bn}.weight"],
                         state[f"{bn}.bias"], training=False)
        x = F.max_pool1d(F.relu(x), 2)
    visual = x[0].T  # (T', 1024)
    lstm = torch.nn.LSTM(1024, 512, num_layers=2, bidirectional=True)
    lstm.load_state_dict({k[len("temporal_model.rnn."):]: v for k, v in state.items()
                          if k.startswith("temporal_model.rnn.")})
    contextual = lstm.eval()(visual[:, None])[0][:, 0]

    def head(features, name):
        if weight_norm:
            return features @ F.normalize(state[f"{name}.weight"], dim=0)
        return features @ state[f"{name}.weight"].T + state[f"{name}.bias"]

    return head(visual, "conv1d.fc"), head(contextual, "classifier")


@pytest.mark.parametrize("preset, weight_norm, shared", [
    ("baseline", False, False), ("vac", False, False), ("smkd", True, True),
])
def test_imported_network_gives_the_original_logits(tmp_path, preset, weight_norm, shared):
    state = original_state(weight_norm, shared, module=preset == "vac")
    checkpoint = tmp_path / f"{preset}.pt"
    # As the original saves it: weights next to an epoch and numpy RNG states.
    torch.save({"epoch": 39, "model_state_dict": state, "rng_state": {"numpy": np.random.get_state()}}, checkpoint)
    model, sections = import_vac(checkpoint)
    assert sections["classifier"] == {"weight_norm": weight_norm, "shared": shared}
    assert model.num_classes == CLASSES
    torch.manual_seed(0)
    lengths = [padded_length(n, VAC) for n in (10, 5)]
    clips = [torch.rand(n, 3, 64, 64) * 2 - 1 for n in lengths]
    batch = torch.zeros(2, max(lengths), 3, 64, 64)
    for i, clip in enumerate(clips):
        batch[i, : len(clip)] = clip
    with torch.no_grad():
        out = model.eval()(batch, torch.tensor(lengths))
        for i, clip in enumerate(clips):
            conv, sequence = reference_logits(state, clip, weight_norm)
            steps = int(out.lengths[i])
            assert steps == len(sequence)
            torch.testing.assert_close(out.conv_logits[i, :steps], conv, atol=2e-4, rtol=1e-4)
            torch.testing.assert_close(out.sequence_logits[i, :steps], sequence, atol=2e-4, rtol=1e-4)


def test_mismatches_name_the_original_keys(tmp_path):
    state = original_state(False, False)
    del state["conv1d.temporal_conv.4.weight"]
    state["conv1d.fc.bias"] = torch.zeros(CLASSES + 1)
    state["decoder.extra"] = torch.zeros(1)
    torch.save({"model_state_dict": state}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as error:
        import_vac(tmp_path / "bad.pt")
    message = str(error.value)
    assert "missing conv1d.temporal_conv.4.weight" in message
    assert "unexpected decoder.extra" in message
    assert "conv1d.fc.bias has shape (12,), the model wants (11,)" in message


@pytest.mark.slow
def test_cli_writes_a_loadable_qslr_checkpoint(tmp_path):
    state = original_state(True, True)
    torch.save({"model_state_dict": state}, tmp_path / "smkd.pt")
    write_vocab(tmp_path / "vocab.json", {f"G{i}": i for i in range(1, CLASSES)})
    runner = CliRunner()
    result = runner.invoke(cli, ["model", "import-vac", str(tmp_path / "smkd.pt"), "--out", str(tmp_path / "q.pt"),
                                 "--vocab", str(tmp_path / "vocab.json")])
    assert result.exit_code == 0, result.output
    assert "SMKD" in result.output
    loaded = load_checkpoint(tmp_path / "q.pt")
    assert loaded.vocab == {f"G{i}": i for i in range(1, CLASSES)}
    torch.testing.assert_close(loaded.model.classifier.weight, state["classifier.weight"])
    assert loaded.model.conv_classifier is loaded.model.classifier
    write_vocab(tmp_path / "small.json", {"A": 1})
    bad = runner.invoke(cli, ["model", "import-vac", str(tmp_path / "smkd.pt"), "--out", str(tmp_path / "r.pt"),
                              "--vocab", str(tmp_path / "small.json")])
    assert bad.exit_code == 1 and "do not match the checkpoint's 11 classes" in bad.output
    assert not (tmp_path / "r.pt").exists()
    original = runner.invoke(cli, ["model", "describe", str(tmp_path / "smkd.pt")])
    assert original.exit_code == 1 and "not a QSLR checkpoint" in original.output
    # An imported checkpoint knows its network, not its data: evaluating it needs --data.
    unnamed = runner.invoke(cli, ["eval", "run", "--checkpoint", str(tmp_path / "q.pt"), "--split", "test"])
    assert unnamed.exit_code == 1 and "q.pt: holds no training config naming its data" in unnamed.output


class _Pickled:  # an arbitrary object, which a weights-only load refuses
    pass


def test_unreadable_and_untrusted_checkpoints_are_told_apart(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("hello\n")
    with pytest.raises(CheckpointError, match=r"notes.pt: not a readable PyTorch checkpoint") as error:
        load_checkpoint(text)
    assert "--trust" not in str(error.value)
    pickled = tmp_path / "pickled.pt"
    torch.save({"state_dict": {}, "extra": _Pickled()}, pickled)
    with pytest.raises(CheckpointError, match=r"pickled.pt: the checkpoint holds Python objects .* --trust"):
        load_checkpoint(pickled)
