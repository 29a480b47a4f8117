"""The original CorrNet and CorrNet+ code's arithmetic, written in its form, as the oracle QSLR's encoders are checked
against: a ResNet of 3D convolutions of temporal size 1 over one clip (B=1, its own padding), with the original's
module names, so that its state dict is an original checkpoint's. CorrNet+'s whole network is here too: its
correlation and temporal weighting modules, its temporal CNN with lifting pools, VAC's BiLSTM and SMKD's shared
weight-normalised classifier.

None of it is batch-independent, by design: it computes what the original computes, windows and statistics over the
whole tensor it is given.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

STAGE_NEIGHBOURS = {2: 1, 3: 3, 4: 5}


class Block3d(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv3d(cin, cout, (1, 3, 3), (1, stride, stride), (0, 1, 1), bias=False)
        self.bn1 = nn.BatchNorm3d(cout)
        self.conv2 = nn.Conv3d(cout, cout, (1, 3, 3), 1, (0, 1, 1), bias=False)
        self.bn2 = nn.BatchNorm3d(cout)
        self.downsample = (nn.Sequential(nn.Conv3d(cin, cout, 1, (1, stride, stride), bias=False),
                                         nn.BatchNorm3d(cout)) if stride > 1 or cin != cout else None)

    def forward(self, x):
        skip = x if self.downsample is None else self.downsample(x)
        return torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))) + skip)


class ResNet3d(nn.Module):
    """The originals' ResNet-18 layout (``conv2d.*`` in their checkpoints), ``width`` channels after the stem; the
    subclasses add their modules after the stages."""

    def __init__(self, width: int = 64):
        super().__init__()
        self.conv1 = nn.Conv3d(3, width, (1, 7, 7), (1, 2, 2), (0, 3, 3), bias=False)
        self.bn1 = nn.BatchNorm3d(width)
        self.maxpool = nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1))
        self.widths = tuple(width * 2 ** i for i in range(4))
        previous = width
        for i, channels in enumerate(self.widths, start=1):
            stride = 1 if i == 1 else 2
            blocks = (Block3d(previous, channels, stride), Block3d(channels, channels, 1))
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
            previous = channels

    def after_stage(self, stage: int, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward(self, clips):  # (N, 3, T, H, W) -> (N, C, T)
        x = self.layer1(self.maxpool(torch.relu(self.bn1(self.conv1(clips)))))
        for stage in (2, 3, 4):
            x = self.after_stage(stage, getattr(self, f"layer{stage}")(x))
        return x.mean((3, 4))


class WindowCorrelation(nn.Module):
    """CorrNet+'s correlation module as the original computes it: temporal windows cut by nn.Unfold (zeros beyond
    the tensor's ends), the attention pooling by PyTorch's multi-head attention function, einsum affinities; with the
    parameters its forward never reads (``weights3``, ``mlp``), which its checkpoints hold."""

    def __init__(self, channels: int, neighbours: int):
        super().__init__()
        reduced = channels // 16
        self.neighbours = neighbours
        self.down_conv2 = nn.Conv3d(channels, channels, 1, bias=False)
        self.weights2 = nn.Parameter(torch.ones(2 * neighbours) / (2 * neighbours))
        self.weights3 = nn.Parameter(torch.ones(3) / 3)
        self.weights4 = nn.Parameter(torch.ones(3) / 3)
        self.attpool = nn.Module()
        for name in ("k_proj", "q_proj", "v_proj", "c_proj"):
            setattr(self.attpool, name, nn.Linear(channels, channels))
        self.attpool.query = nn.Parameter(torch.rand(1, 1, channels))
        self.mlp = nn.Sequential(nn.Conv3d(channels, reduced, 1), nn.GELU(), nn.Conv3d(reduced, channels, 1))
        self.down_conv = nn.Conv3d(channels, reduced, 1, bias=False)
        for i, d in enumerate((1, 2, 3), start=1):
            setattr(self, f"spatial_aggregation{i}",
                    nn.Conv3d(reduced, reduced, (9, 3, 3), padding=(4, d, d), dilation=(1, d, d), groups=reduced))
        self.weights = nn.Parameter(torch.ones(3) / 3)
        self.conv_back = nn.Conv3d(reduced, channels, 1, bias=False)

    def pooled(self, x):  # (N, C, T, H, W) -> (N, C, T, 1)
        n, c, t = x.shape[:3]
        positions = x.flatten(3).permute(3, 0, 2, 1).reshape(-1, n * t, c)  # (HW, NT, C)
        pool = self.attpool
        out, _ = F.multi_head_attention_forward(
            pool.query.repeat(1, n * t, 1), positions, positions, c, 1, None,
            torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]), None, None, False, 0.0,
            pool.c_proj.weight, pool.c_proj.bias, training=False, need_weights=False, use_separate_proj_weight=True,
            q_proj_weight=pool.q_proj.weight, k_proj_weight=pool.k_proj.weight, v_proj_weight=pool.v_proj.weight)
        return out.view(1, n, t, c).permute(1, 3, 2, 0)

    def forward(self, x):
        n, c, t, h, w = x.shape
        size = 2 * self.neighbours + 1
        unfold = nn.Unfold((size, 1), padding=(self.neighbours, 0))
        windows = unfold(self.down_conv2(x).view(n, c, t, h * w)).view(n, c, size, t, h, w).permute(0, 1, 3, 2, 4, 5)
        windows = torch.cat([windows[:, :, :, :self.neighbours], windows[:, :, :, self.neighbours + 1:]], 3)
        keys = (windows * self.weights2.view(1, 1, 1, -1, 1, 1)).reshape(n, c, t, -1)
        query = (x.mean(3, keepdim=True).mean(4) * self.weights4[0]
                 + x.amax(-1).amax(-1, keepdim=True) * self.weights4[1] + self.pooled(x) * self.weights4[2])
        affinities = torch.sigmoid(torch.einsum("nctp,nctl->ntpl", query, keys)) - 0.5
        features = torch.einsum("nctl,ntpl->nctp", keys, affinities).view(n, c, t, 1, 1)
        reduced = self.down_conv(x)
        aggregated = sum(getattr(self, f"spatial_aggregation{i}")(reduced) * self.weights[i - 1] for i in (1, 2, 3))
        return features * (torch.sigmoid(self.conv_back(aggregated)) - 0.5)


class TemporalWeighting(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        hidden = channels // 16
        self.conv_transform = nn.Conv1d(channels, hidden, 1)
        self.conv_back = nn.Conv1d(hidden, channels, 1)
        self.conv_enhance = nn.ModuleList(nn.Conv1d(hidden, hidden, 3, padding=d, groups=hidden, dilation=d)
                                          for d in (1, 2, 3))
        self.weights = nn.Parameter(torch.ones(3) / 3)
        self.alpha = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        out = self.conv_transform(x.mean(-1).mean(-1))
        out = self.conv_back(sum(conv(out) * self.weights[i] for i, conv in enumerate(self.conv_enhance)))
        return x * (torch.sigmoid(out[..., None, None]) - 0.5) * self.alpha


class CorrNetPlusResNet3d(ResNet3d):
    def __init__(self, width: int = 64, stages=(2, 3, 4)):
        super().__init__(width)
        self.stages = tuple(stages)
        for stage in self.stages:
            setattr(self, f"corr{stage}", WindowCorrelation(self.widths[stage - 1], STAGE_NEIGHBOURS[stage]))
            setattr(self, f"temporal_weight{stage}", TemporalWeighting(self.widths[stage - 1]))
        self.alpha = nn.Parameter(torch.zeros(len(self.stages)))

    def after_stage(self, stage, x):
        if stage not in self.stages:
            return x
        x = x + getattr(self, f"corr{stage}")(x) * self.alpha[self.stages.index(stage)]
        return x + getattr(self, f"temporal_weight{stage}")(x)


class LocalWeighting(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, 5, padding=2)
        self.insnorm = nn.InstanceNorm1d(channels, affine=True)

    def forward(self, x):
        return x + x * (torch.sigmoid(self.insnorm(self.conv(x))) - 0.5)


def _lifting_step(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv1d(channels, channels, 3, padding=1, groups=channels), nn.ReLU(),
                         nn.Conv1d(channels, channels, 1), nn.Tanh())


class LiftPool(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.predictor, self.updater = _lifting_step(channels), _lifting_step(channels)
        self.weight1, self.weight2 = LocalWeighting(channels), LocalWeighting(channels)

    def forward(self, x):  # an even number of steps, as the original requires
        even, odd = x[:, :, 0::2], x[:, :, 1::2]
        detail = odd - self.predictor(even)
        smooth = even + self.updater(detail)
        return (self.weight1(smooth) + self.weight2(detail), torch.norm(smooth - odd, p=2),
                torch.norm(detail, p=2))


class LiftingTemporalConv(nn.Module):
    """CorrNet+'s TemporalConv (K5-P2-K5-P2): a block per kernel, lifting pools for P, with its classifier ``fc``."""

    def __init__(self, input_size: int, hidden: int):
        super().__init__()
        self.temporal_conv = nn.ModuleList([
            nn.Sequential(nn.Conv1d(input_size, hidden, 5), nn.BatchNorm1d(hidden), nn.ReLU()), LiftPool(hidden),
            nn.Sequential(nn.Conv1d(hidden, hidden, 5), nn.BatchNorm1d(hidden), nn.ReLU()), LiftPool(hidden)])

    def forward(self, x):  # -> features, each pool's update and prediction norms (the original adds them up)
        updates, predictions = [], []
        for layer in self.temporal_conv:
            if isinstance(layer, LiftPool):
                x, update, prediction = layer(x)
                updates.append(update)
                predictions.append(prediction)
            else:
                x = layer(x)
        return x, torch.stack(updates), torch.stack(predictions)


class NormLinear(nn.Module):
    def __init__(self, inputs: int, classes: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(inputs, classes))

    def forward(self, x):
        return x @ F.normalize(self.weight, dim=0)


class CorrNetPlusNetwork(nn.Module):
    """CorrNet+'s SLRModel with SMKD's shared weight-normalised classifier. Its BiLSTM reads the whole tensor: what
    the original computes for a batch of one clip."""

    def __init__(self, classes: int, width: int = 64, hidden: int = 1024, stages=(2, 3, 4)):
        super().__init__()
        self.conv2d = CorrNetPlusResNet3d(width, stages)
        self.conv1d = LiftingTemporalConv(width * 8, hidden)
        self.temporal_model = nn.Module()
        self.temporal_model.rnn = nn.LSTM(hidden, hidden // 2, num_layers=2, bidirectional=True)
        self.classifier = NormLinear(hidden, classes)
        self.conv1d.fc = self.classifier

    def forward(self, videos):  # (N, T, 3, H, W) -> conv, sequence logits (N, T', classes), pools' Cu, Cp
        visual, update, prediction = self.conv1d(self.conv2d(videos.transpose(1, 2)))
        visual = visual.permute(2, 0, 1)  # (T', N, hidden)
        contextual, _ = self.temporal_model.rnn(visual)
        return (self.conv1d.fc(visual).transpose(0, 1), self.classifier(contextual).transpose(0, 1), update,
                prediction)


def randomised(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and BatchNorm statistics, so that no parameter goes unchecked, at scales that keep the
    activations near 1 through the network (so that 1e-4 is a strict bound, not float32 noise on large values)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if not tensor.is_floating_point():
                continue
            if tensor.ndim > 1:  # convolution and linear weights: variance-preserving
                tensor.copy_(torch.randn_like(tensor) * (2.0 / (tensor.numel() / tensor.shape[0])) ** 0.5)
            elif "running_var" in name:
                tensor.copy_(torch.rand_like(tensor) + 0.5)
            elif name.endswith(("bn1.weight", "bn2.weight", "downsample.1.weight")):
                tensor.copy_(1 + 0.1 * torch.randn_like(tensor))
            else:  # biases, running means, the modules' mixing weights and alpha
                tensor.copy_(torch.rand_like(tensor) * 0.5 + 0.25 if tensor.numel() <= 3 else
                             0.1 * torch.randn_like(tensor))
    return module.eval()


def clips(lengths, size: int = 64, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """A padded batch of random clips, (B, T, 3, size, size), and their lengths."""
    torch.manual_seed(seed)
    return torch.randn(len(lengths), max(lengths), 3, size, size), torch.tensor(lengths)
