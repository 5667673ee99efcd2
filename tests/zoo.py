"""Real-world CNN architectures, written here as torchvision and timm write them (their op
patterns, not their code: torchvision is not a dependency), shrunk in width and depth so that each
traces and runs in well under a second on a CPU at 1×3×32×32 (or 64×64).

What is kept exactly is how each calls its ops: functional calls (`F.relu(x, inplace=True)`,
`F.adaptive_avg_pool2d`, `F.avg_pool2d(x, 3, 1, 1)`), `torch.flatten(x, 1)`, `x.mean([2, 3])`,
channel shuffle by view/transpose/view with the sizes read from `x.size()`, `x.chunk(2, dim=1)`,
`torch.cat`, `ceil_mode=True` pooling, `nn.AdaptiveAvgPool2d((7, 7))`, ConvNeXt's channels-last
block with a layer-scale parameter and LayerNorm2d's permutes, stochastic depth / drop path with
Python control flow on `self.training`, the squeeze-and-excitation blocks of MobileNetV3 (with
`F.hardsigmoid`), EfficientNet and RegNet, DenseNet's list of features, and an FCN-style decoder
with `ConvTranspose2d`. `tests/test_torch_zoo.py` compiles every one.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# --------------------------------------------------------------------------- shared pieces


def _make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """MobileNet's channel rounding: to a multiple of `divisor`, never 10% below `v`."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class ConvNormActivation(nn.Sequential):
    """torchvision's Conv2dNormActivation: conv, norm, activation, as one Sequential."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, stride: int = 1,
                 padding: int | None = None, groups: int = 1,
                 norm_layer: Callable[..., nn.Module] | None = nn.BatchNorm2d,
                 activation_layer: Callable[..., nn.Module] | None = nn.ReLU,
                 dilation: int = 1, bias: bool | None = None) -> None:
        if padding is None:
            padding = (kernel_size - 1) // 2 * dilation
        if bias is None:
            bias = norm_layer is None
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel_size, stride, padding,
                                             dilation=dilation, groups=groups, bias=bias)]
        if norm_layer is not None:
            layers.append(norm_layer(cout))
        if activation_layer is not None:
            params = {} if activation_layer in (nn.GELU,) else {"inplace": True}
            layers.append(activation_layer(**params))
        super().__init__(*layers)


class SqueezeExcitation(nn.Module):
    """torchvision.ops.SqueezeExcitation: pool, 1x1 conv, activation, 1x1 conv, gate, scale."""

    def __init__(self, channels: int, squeeze: int,
                 activation: Callable[..., nn.Module] = nn.ReLU,
                 scale_activation: Callable[..., nn.Module] = nn.Sigmoid) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.activation = activation()
        self.scale_activation = scale_activation()

    def _scale(self, x: Tensor) -> Tensor:
        scale = self.avgpool(x)
        scale = self.fc1(scale)
        scale = self.activation(scale)
        scale = self.fc2(scale)
        return self.scale_activation(scale)

    def forward(self, x: Tensor) -> Tensor:
        scale = self._scale(x)
        return scale * x


def stochastic_depth(x: Tensor, p: float, mode: str, training: bool = True) -> Tensor:
    """torchvision.ops.stochastic_depth: drop whole rows (or the batch) while training."""
    if p < 0.0 or p > 1.0:
        raise ValueError(f"drop probability has to be between 0 and 1, but got {p}")
    if not training or p == 0.0:
        return x
    survival_rate = 1.0 - p
    size = [x.shape[0]] + [1] * (x.ndim - 1) if mode == "row" else [1] * x.ndim
    noise = torch.empty(size, dtype=x.dtype, device=x.device).bernoulli_(survival_rate)
    if survival_rate > 0.0:
        noise.div_(survival_rate)
    return x * noise


class StochasticDepth(nn.Module):
    def __init__(self, p: float, mode: str) -> None:
        super().__init__()
        self.p, self.mode = p, mode

    def forward(self, x: Tensor) -> Tensor:
        return stochastic_depth(x, self.p, self.mode, self.training)


def drop_path(x: Tensor, drop_prob: float = 0.0, training: bool = False,
              scale_by_keep: bool = True) -> Tensor:
    """timm's drop_path."""
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    random_tensor = x.new_empty(shape).bernoulli_(keep_prob)
    if keep_prob > 0.0 and scale_by_keep:
        random_tensor.div_(keep_prob)
    return x * random_tensor


class DropPath(nn.Module):
    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(x, self.drop_prob, self.training)


class Permute(nn.Module):
    """torchvision.ops.misc.Permute."""

    def __init__(self, dims: list[int]) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: Tensor) -> Tensor:
        return torch.permute(x, self.dims)


# --------------------------------------------------------------------------- ResNet, ResNeXt


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, groups: int = 1,
                 base_width: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        out = self.relu(out)
        return out


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, groups: int = 1,
                 base_width: int = 64) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        out = self.relu(out)
        return out


class ResNet(nn.Module):
    """torchvision's ResNet (and ResNeXt: groups, width_per_group); `deep_stem` and
    `avg_down` give timm's ResNet-D: a three-conv stem and an average-pooled shortcut
    (`nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)` before the 1x1 conv)."""

    def __init__(self, block: type[BasicBlock | Bottleneck] = BasicBlock,
                 layers: tuple[int, ...] = (1, 1, 1, 1), num_classes: int = 10,
                 groups: int = 1, width_per_group: int = 64, base: int = 8,
                 deep_stem: bool = False, avg_down: bool = False) -> None:
        super().__init__()
        self.inplanes, self.groups, self.base_width = base, groups, width_per_group
        self.avg_down = avg_down
        if deep_stem:
            self.conv1 = nn.Sequential(
                nn.Conv2d(3, base // 2, 3, 2, 1, bias=False), nn.BatchNorm2d(base // 2),
                nn.ReLU(inplace=True), nn.Conv2d(base // 2, base // 2, 3, 1, 1, bias=False),
                nn.BatchNorm2d(base // 2), nn.ReLU(inplace=True),
                nn.Conv2d(base // 2, base, 3, 1, 1, bias=False))
        else:
            self.conv1 = nn.Conv2d(3, base, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(base)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, base, layers[0])
        self.layer2 = self._make_layer(block, base * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, base * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, base * 8, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(base * 8 * block.expansion, num_classes)

    def _make_layer(self, block: type[BasicBlock | Bottleneck], planes: int, blocks: int,
                    stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            out = planes * block.expansion
            if self.avg_down:
                pool = nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False) \
                    if stride != 1 else nn.Identity()
                downsample = nn.Sequential(pool, nn.Conv2d(self.inplanes, out, 1, bias=False),
                                           nn.BatchNorm2d(out))
            else:
                downsample = nn.Sequential(
                    nn.Conv2d(self.inplanes, out, 1, stride, bias=False), nn.BatchNorm2d(out))
        layers = [block(self.inplanes, planes, stride, downsample, self.groups,
                        self.base_width)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes, groups=self.groups,
                                base_width=self.base_width))
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.relu(x)
        x = self.maxpool(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        x = self.fc(x)
        return x


def resnet18() -> ResNet:
    return ResNet(BasicBlock, (2, 1, 1, 1))


def resnet50() -> ResNet:
    return ResNet(Bottleneck, (2, 1, 1, 1), base=4)


def resnext50_32x4d() -> ResNet:
    return ResNet(Bottleneck, (1, 1, 1, 1), groups=4, width_per_group=16, base=8)


def resnet50d() -> ResNet:
    return ResNet(Bottleneck, (1, 1, 1, 1), base=8, deep_stem=True, avg_down=True)


# --------------------------------------------------------------------------- VGG


class VGG(nn.Module):
    def __init__(self, cfg: tuple[int | str, ...] = (8, "M", 16, "M", 16, 16, "M", 32, "M", 32,
                                                     "M"), batch_norm: bool = False,
                 num_classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in cfg:
            if v == "M":
                layers += [nn.MaxPool2d(kernel_size=2, stride=2)]
            else:
                conv = nn.Conv2d(cin, int(v), kernel_size=3, padding=1)
                layers += [conv, nn.BatchNorm2d(int(v)), nn.ReLU(inplace=True)] if batch_norm \
                    else [conv, nn.ReLU(inplace=True)]
                cin = int(v)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(cin * 7 * 7, 32), nn.ReLU(True), nn.Dropout(p=0.5),
            nn.Linear(32, 32), nn.ReLU(True), nn.Dropout(p=0.5), nn.Linear(32, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        x = self.classifier(x)
        return x


def vgg11_bn() -> VGG:
    return VGG(batch_norm=True)


# --------------------------------------------------------------------------- MobileNet v2 / v3


class InvertedResidual(nn.Module):
    """MobileNetV2's block."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        self.stride = stride
        hidden_dim = round(inp * expand_ratio)
        self.use_res_connect = self.stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvNormActivation(inp, hidden_dim, kernel_size=1,
                                             activation_layer=nn.ReLU6))
        layers.extend([
            ConvNormActivation(hidden_dim, hidden_dim, stride=stride, groups=hidden_dim,
                               activation_layer=nn.ReLU6),
            nn.Conv2d(hidden_dim, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        ])
        self.conv = nn.Sequential(*layers)
        self.out_channels = oup

    def forward(self, x: Tensor) -> Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 10, width_mult: float = 0.25) -> None:
        super().__init__()
        setting = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 2, 2], [6, 64, 1, 2], [6, 96, 1, 1]]
        input_channel = _make_divisible(32 * width_mult)
        self.last_channel = _make_divisible(320 * width_mult)
        features: list[nn.Module] = [ConvNormActivation(3, input_channel, stride=2,
                                                        activation_layer=nn.ReLU6)]
        for t, c, n, s in setting:
            output_channel = _make_divisible(c * width_mult)
            for i in range(n):
                stride = s if i == 0 else 1
                features.append(InvertedResidual(input_channel, output_channel, stride, t))
                input_channel = output_channel
        features.append(ConvNormActivation(input_channel, self.last_channel, kernel_size=1,
                                           activation_layer=nn.ReLU6))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=0.2),
                                        nn.Linear(self.last_channel, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        x = nn.functional.adaptive_avg_pool2d(x, (1, 1))
        x = torch.flatten(x, 1)
        x = self.classifier(x)
        return x


class SqueezeExcitationV3(nn.Module):
    """MobileNetV3's SE as torchvision first wrote it: `F.adaptive_avg_pool2d`, ReLU,
    `F.hardsigmoid(scale, inplace=...)`, then `scale * input`."""

    def __init__(self, input_channels: int, squeeze_factor: int = 4) -> None:
        super().__init__()
        squeeze_channels = _make_divisible(input_channels // squeeze_factor, 8)
        self.fc1 = nn.Conv2d(input_channels, squeeze_channels, 1)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(squeeze_channels, input_channels, 1)

    def _scale(self, input: Tensor, inplace: bool) -> Tensor:
        scale = F.adaptive_avg_pool2d(input, 1)
        scale = self.fc1(scale)
        scale = self.relu(scale)
        scale = self.fc2(scale)
        return F.hardsigmoid(scale, inplace=inplace)

    def forward(self, input: Tensor) -> Tensor:
        scale = self._scale(input, True)
        return scale * input


class InvertedResidualV3(nn.Module):
    def __init__(self, cin: int, kernel: int, expanded: int, cout: int, use_se: bool,
                 activation: str, stride: int) -> None:
        super().__init__()
        self.use_res_connect = stride == 1 and cin == cout
        act = nn.Hardswish if activation == "HS" else nn.ReLU
        layers: list[nn.Module] = []
        if expanded != cin:
            layers.append(ConvNormActivation(cin, expanded, kernel_size=1,
                                             activation_layer=act))
        layers.append(ConvNormActivation(expanded, expanded, kernel_size=kernel, stride=stride,
                                         groups=expanded, activation_layer=act))
        if use_se:
            layers.append(SqueezeExcitationV3(expanded))
        layers.append(ConvNormActivation(expanded, cout, kernel_size=1, activation_layer=None))
        self.block = nn.Sequential(*layers)

    def forward(self, input: Tensor) -> Tensor:
        result = self.block(input)
        if self.use_res_connect:
            result += input
        return result


class MobileNetV3(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        settings = [(8, 3, 8, 8, True, "RE", 2), (8, 3, 24, 16, False, "RE", 2),
                    (16, 3, 32, 16, False, "RE", 1), (16, 5, 48, 24, True, "HS", 2),
                    (24, 5, 64, 24, True, "HS", 1)]
        layers: list[nn.Module] = [ConvNormActivation(3, 8, stride=2,
                                                      activation_layer=nn.Hardswish)]
        for s in settings:
            layers.append(InvertedResidualV3(*s))
        layers.append(ConvNormActivation(24, 96, kernel_size=1, activation_layer=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(96, 64), nn.Hardswish(inplace=True),
                                        nn.Dropout(p=0.2, inplace=True),
                                        nn.Linear(64, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        x = self.classifier(x)
        return x


# --------------------------------------------------------------------------- EfficientNet


class MBConv(nn.Module):
    """EfficientNet's block: expand (SiLU), depthwise (SiLU), SE (SiLU, Sigmoid), project;
    stochastic depth before the residual."""

    def __init__(self, cin: int, cout: int, expand_ratio: int, kernel: int, stride: int,
                 sd_prob: float) -> None:
        super().__init__()
        self.use_res_connect = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        expanded = _make_divisible(cin * expand_ratio)
        if expanded != cin:
            layers.append(ConvNormActivation(cin, expanded, kernel_size=1,
                                             activation_layer=nn.SiLU))
        layers.append(ConvNormActivation(expanded, expanded, kernel_size=kernel, stride=stride,
                                         groups=expanded, activation_layer=nn.SiLU))
        squeeze = max(1, cin // 4)
        layers.append(SqueezeExcitation(expanded, squeeze, activation=partial(nn.SiLU,
                                                                              inplace=True)))
        layers.append(ConvNormActivation(expanded, cout, kernel_size=1, activation_layer=None))
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = StochasticDepth(sd_prob, "row")

    def forward(self, input: Tensor) -> Tensor:
        result = self.block(input)
        if self.use_res_connect:
            result = self.stochastic_depth(result)
            result += input
        return result


class EfficientNet(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        settings = [(1, 3, 1, 8, 8, 1), (6, 3, 2, 8, 16, 2), (6, 5, 2, 16, 24, 2)]
        layers: list[nn.Module] = [ConvNormActivation(3, 8, stride=2,
                                                      activation_layer=nn.SiLU)]
        total = sum(s[-1] for s in settings)
        k = 0
        for expand, kernel, stride, cin, cout, n in settings:
            stage = []
            for i in range(n):
                stage.append(MBConv(cin if i == 0 else cout, cout, expand, kernel,
                                    stride if i == 0 else 1, 0.2 * k / total))
                k += 1
            layers.append(nn.Sequential(*stage))
        layers.append(ConvNormActivation(24, 64, kernel_size=1, activation_layer=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(p=0.2, inplace=True),
                                        nn.Linear(64, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        x = self.classifier(x)
        return x


# --------------------------------------------------------------------------- RegNet


class BottleneckTransform(nn.Sequential):
    def __init__(self, cin: int, cout: int, stride: int, group_width: int, bottleneck: float,
                 se_ratio: float | None) -> None:
        w_b = round(cout * bottleneck)
        g = w_b // group_width
        layers: dict[str, nn.Module] = {
            "a": ConvNormActivation(cin, w_b, kernel_size=1),
            "b": ConvNormActivation(w_b, w_b, kernel_size=3, stride=stride, groups=g),
        }
        if se_ratio:
            layers["se"] = SqueezeExcitation(w_b, round(se_ratio * cin))
        layers["c"] = ConvNormActivation(w_b, cout, kernel_size=1, activation_layer=None)
        super().__init__(OrderedDict(layers))


class ResBottleneckBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, group_width: int = 4,
                 bottleneck: float = 1.0, se_ratio: float | None = 0.25) -> None:
        super().__init__()
        self.proj = None
        if cin != cout or stride != 1:
            self.proj = ConvNormActivation(cin, cout, kernel_size=1, stride=stride,
                                           activation_layer=None)
        self.f = BottleneckTransform(cin, cout, stride, group_width, bottleneck, se_ratio)
        self.activation = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        if self.proj is not None:
            x = self.proj(x) + self.f(x)
        else:
            x = x + self.f(x)
        return self.activation(x)


class RegNet(nn.Module):
    def __init__(self, widths: tuple[int, ...] = (8, 16, 32), depths: tuple[int, ...] = (1, 2, 1),
                 num_classes: int = 10) -> None:
        super().__init__()
        self.stem = ConvNormActivation(3, 8, kernel_size=3, stride=2)
        blocks = []
        cin = 8
        for i, (w, d) in enumerate(zip(widths, depths)):
            stage = nn.Sequential(*(ResBottleneckBlock(cin if j == 0 else w, w,
                                                       2 if j == 0 else 1) for j in range(d)))
            blocks.append((f"block{i + 1}", stage))
            cin = w
        self.trunk_output = nn.Sequential()
        for name, stage in blocks:
            self.trunk_output.add_module(name, stage)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        x = self.trunk_output(x)
        x = self.avgpool(x)
        x = x.flatten(start_dim=1)
        x = self.fc(x)
        return x


# --------------------------------------------------------------------------- ConvNeXt


class LayerNorm2d(nn.LayerNorm):
    """torchvision's: LayerNorm over the channels of an NCHW tensor, by permuting around it."""

    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        x = x.permute(0, 3, 1, 2)
        return x


class CNBlock(nn.Module):
    """torchvision's ConvNeXt block: depthwise 7x7, Permute, LayerNorm, Linear, GELU, Linear,
    Permute back; a layer scale `[C, 1, 1]` in NCHW; stochastic depth; the residual."""

    def __init__(self, dim: int, layer_scale: float, stochastic_depth_prob: float) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim, bias=True),
            Permute([0, 2, 3, 1]),
            nn.LayerNorm(dim, eps=1e-6),
            nn.Linear(in_features=dim, out_features=4 * dim, bias=True),
            nn.GELU(),
            nn.Linear(in_features=4 * dim, out_features=dim, bias=True),
            Permute([0, 3, 1, 2]),
        )
        self.layer_scale = nn.Parameter(torch.ones(dim, 1, 1) * layer_scale)
        self.stochastic_depth = StochasticDepth(stochastic_depth_prob, "row")

    def forward(self, input: Tensor) -> Tensor:
        result = self.layer_scale * self.block(input)
        result = self.stochastic_depth(result)
        result += input
        return result


class ConvNeXt(nn.Module):
    def __init__(self, dims: tuple[int, ...] = (8, 16, 32), depths: tuple[int, ...] = (1, 2, 1),
                 num_classes: int = 10) -> None:
        super().__init__()
        norm_layer = partial(LayerNorm2d, eps=1e-6)
        layers: list[nn.Module] = [ConvNormActivation(3, dims[0], kernel_size=4, stride=4,
                                                      padding=0, norm_layer=norm_layer,
                                                      activation_layer=None, bias=True)]
        total, k = sum(depths), 0
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            stage = []
            for _ in range(depth):
                stage.append(CNBlock(dim, 1e-6 * 1e5, 0.1 * k / (total - 1)))
                k += 1
            layers.append(nn.Sequential(*stage))
            if i + 1 < len(dims):
                layers.append(nn.Sequential(norm_layer(dim),
                                            nn.Conv2d(dim, dims[i + 1], kernel_size=2,
                                                      stride=2)))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(norm_layer(dims[-1]), nn.Flatten(1),
                                        nn.Linear(dims[-1], num_classes))

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        x = self.avgpool(x)
        x = self.classifier(x)
        return x


class TimmLinear(nn.Linear):
    """timm's Linear: `F.linear` with the module's own weight and bias."""

    def forward(self, input: Tensor) -> Tensor:
        if torch.jit.is_scripting():
            return F.linear(input, self.weight.to(dtype=input.dtype), self.bias)
        return F.linear(input, self.weight, self.bias)


class Mlp(nn.Module):
    """timm's Mlp: fc1, act, drop, norm (Identity), fc2, drop."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = TimmLinear(dim, hidden)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(0.0)
        self.norm = nn.Identity()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop2 = nn.Dropout(0.0)

    def forward(self, x: Tensor) -> Tensor:
        x = self.fc1(x)
        x = self.act(x)
        x = self.drop1(x)
        x = self.norm(x)
        x = self.fc2(x)
        x = self.drop2(x)
        return x


class TimmConvNeXtBlock(nn.Module):
    """timm's ConvNeXt block: `x.permute(0, 2, 3, 1)`, LayerNorm, Mlp, `x.mul(self.gamma)`
    with a `[C]` layer scale in channels-last, `x.permute(0, 3, 1, 2)`, drop path."""

    def __init__(self, dim: int, ls_init_value: float = 1e-6, drop_path: float = 0.1) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, 4 * dim)
        self.gamma = nn.Parameter(ls_init_value * torch.ones(dim))
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.conv_dw(x)
        x = x.permute(0, 2, 3, 1)
        x = self.norm(x)
        x = self.mlp(x)
        if self.gamma is not None:
            x = x.mul(self.gamma)
        x = x.permute(0, 3, 1, 2)
        x = self.drop_path(x) + shortcut
        return x


class TimmConvNeXt(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, kernel_size=4, stride=4),
                                  LayerNorm2d(8, eps=1e-6))
        self.stages = nn.Sequential(
            nn.Sequential(TimmConvNeXtBlock(8, 0.5), TimmConvNeXtBlock(8, 0.5)),
            nn.Sequential(LayerNorm2d(8, eps=1e-6), nn.Conv2d(8, 16, 2, 2),
                          TimmConvNeXtBlock(16, 0.5)))
        self.norm_pre = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.norm_pre(self.stages(self.stem(x)))


# --------------------------------------------------------------------------- DenseNet


class _DenseLayer(nn.Module):
    def __init__(self, num_input_features: int, growth_rate: int, bn_size: int,
                 drop_rate: float) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(num_input_features)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(num_input_features, bn_size * growth_rate, 1, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, 3, 1, 1, bias=False)
        self.drop_rate = float(drop_rate)

    def bn_function(self, inputs: list[Tensor]) -> Tensor:
        concated_features = torch.cat(inputs, 1)
        return self.conv1(self.relu1(self.norm1(concated_features)))

    def forward(self, input: list[Tensor] | Tensor) -> Tensor:
        prev_features = [input] if isinstance(input, Tensor) else input
        bottleneck_output = self.bn_function(prev_features)
        new_features = self.conv2(self.relu2(self.norm2(bottleneck_output)))
        if self.drop_rate > 0:
            new_features = F.dropout(new_features, p=self.drop_rate, training=self.training)
        return new_features


class _DenseBlock(nn.ModuleDict):
    def __init__(self, num_layers: int, num_input_features: int, bn_size: int,
                 growth_rate: int, drop_rate: float) -> None:
        super().__init__()
        for i in range(num_layers):
            self.add_module(f"denselayer{i + 1}", _DenseLayer(
                num_input_features + i * growth_rate, growth_rate, bn_size, drop_rate))

    def forward(self, init_features: Tensor) -> Tensor:
        features = [init_features]
        for _name, layer in self.items():
            new_features = layer(features)
            features.append(new_features)
        return torch.cat(features, 1)


class _Transition(nn.Sequential):
    def __init__(self, num_input_features: int, num_output_features: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(num_input_features)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(num_input_features, num_output_features, 1, 1, bias=False)
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2)


class DenseNet(nn.Module):
    def __init__(self, growth_rate: int = 4, block_config: tuple[int, ...] = (2, 2, 2),
                 num_init_features: int = 8, bn_size: int = 2, drop_rate: float = 0.1,
                 num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential()
        self.features.add_module("conv0", nn.Conv2d(3, num_init_features, 7, 2, 3, bias=False))
        self.features.add_module("norm0", nn.BatchNorm2d(num_init_features))
        self.features.add_module("relu0", nn.ReLU(inplace=True))
        self.features.add_module("pool0", nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
        num_features = num_init_features
        for i, num_layers in enumerate(block_config):
            block = _DenseBlock(num_layers, num_features, bn_size, growth_rate, drop_rate)
            self.features.add_module(f"denseblock{i + 1}", block)
            num_features = num_features + num_layers * growth_rate
            if i != len(block_config) - 1:
                trans = _Transition(num_features, num_features // 2)
                self.features.add_module(f"transition{i + 1}", trans)
                num_features = num_features // 2
        self.features.add_module("norm5", nn.BatchNorm2d(num_features))
        self.classifier = nn.Linear(num_features, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        features = self.features(x)
        out = F.relu(features, inplace=True)
        out = F.adaptive_avg_pool2d(out, (1, 1))
        out = torch.flatten(out, 1)
        out = self.classifier(out)
        return out


# --------------------------------------------------------------------------- SqueezeNet


class Fire(nn.Module):
    def __init__(self, inplanes: int, squeeze_planes: int, expand1x1_planes: int,
                 expand3x3_planes: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(inplanes, squeeze_planes, kernel_size=1)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze_planes, expand1x1_planes, kernel_size=1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze_planes, expand3x3_planes, kernel_size=3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat([self.expand1x1_activation(self.expand1x1(x)),
                          self.expand3x3_activation(self.expand3x3(x))], 1)


class SqueezeNet(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, kernel_size=7, stride=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            Fire(16, 4, 8, 8), Fire(16, 4, 8, 8),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            Fire(16, 8, 16, 16),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            Fire(32, 8, 16, 16))
        final_conv = nn.Conv2d(32, num_classes, kernel_size=1)
        self.classifier = nn.Sequential(nn.Dropout(p=0.5), final_conv, nn.ReLU(inplace=True),
                                        nn.AdaptiveAvgPool2d((1, 1)))

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        x = self.classifier(x)
        return torch.flatten(x, 1)


# --------------------------------------------------------------------------- ShuffleNetV2


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    batchsize, num_channels, height, width = x.size()
    channels_per_group = num_channels // groups
    x = x.view(batchsize, groups, channels_per_group, height, width)
    x = torch.transpose(x, 1, 2).contiguous()
    x = x.view(batchsize, num_channels, height, width)
    return x


class ShuffleUnit(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        branch_features = oup // 2
        if self.stride > 1:
            self.branch1 = nn.Sequential(
                self.depthwise_conv(inp, inp, 3, self.stride, 1), nn.BatchNorm2d(inp),
                nn.Conv2d(inp, branch_features, 1, 1, 0, bias=False),
                nn.BatchNorm2d(branch_features), nn.ReLU(inplace=True))
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(
            nn.Conv2d(inp if self.stride > 1 else branch_features, branch_features, 1, 1, 0,
                      bias=False),
            nn.BatchNorm2d(branch_features), nn.ReLU(inplace=True),
            self.depthwise_conv(branch_features, branch_features, 3, self.stride, 1),
            nn.BatchNorm2d(branch_features),
            nn.Conv2d(branch_features, branch_features, 1, 1, 0, bias=False),
            nn.BatchNorm2d(branch_features), nn.ReLU(inplace=True))

    @staticmethod
    def depthwise_conv(i: int, o: int, kernel_size: int, stride: int = 1, padding: int = 0,
                       bias: bool = False) -> nn.Conv2d:
        return nn.Conv2d(i, o, kernel_size, stride, padding, bias=bias, groups=i)

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        out = channel_shuffle(out, 2)
        return out


class ShuffleNetV2(nn.Module):
    def __init__(self, stages_repeats: tuple[int, ...] = (2, 1, 1),
                 stages_out_channels: tuple[int, ...] = (8, 16, 32, 64, 64),
                 num_classes: int = 10) -> None:
        super().__init__()
        input_channels = 3
        output_channels = stages_out_channels[0]
        self.conv1 = nn.Sequential(nn.Conv2d(input_channels, output_channels, 3, 2, 1,
                                             bias=False),
                                   nn.BatchNorm2d(output_channels), nn.ReLU(inplace=True))
        input_channels = output_channels
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        for name, repeats, output_channels in zip(("stage2", "stage3", "stage4"),
                                                  stages_repeats, stages_out_channels[1:]):
            seq = [ShuffleUnit(input_channels, output_channels, 2)]
            for _ in range(repeats - 1):
                seq.append(ShuffleUnit(output_channels, output_channels, 1))
            setattr(self, name, nn.Sequential(*seq))
            input_channels = output_channels
        output_channels = stages_out_channels[-1]
        self.conv5 = nn.Sequential(nn.Conv2d(input_channels, output_channels, 1, 1, 0,
                                             bias=False),
                                   nn.BatchNorm2d(output_channels), nn.ReLU(inplace=True))
        self.fc = nn.Linear(output_channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        x = self.maxpool(x)
        x = self.stage2(x)
        x = self.stage3(x)
        x = self.stage4(x)
        x = self.conv5(x)
        x = x.mean([2, 3])  # globalpool
        x = self.fc(x)
        return x


# --------------------------------------------------------------------------- Inception, GoogLeNet


class BasicConv2d(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, **kwargs: object) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        x = self.bn(x)
        return F.relu(x, inplace=True)


class InceptionA(nn.Module):
    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 8, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, 6, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(6, 8, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 8, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(8, 12, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(12, 12, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

    def _forward(self, x: Tensor) -> list[Tensor]:
        branch1x1 = self.branch1x1(x)
        branch5x5 = self.branch5x5_1(x)
        branch5x5 = self.branch5x5_2(branch5x5)
        branch3x3dbl = self.branch3x3dbl_1(x)
        branch3x3dbl = self.branch3x3dbl_2(branch3x3dbl)
        branch3x3dbl = self.branch3x3dbl_3(branch3x3dbl)
        branch_pool = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1)
        branch_pool = self.branch_pool(branch_pool)
        return [branch1x1, branch5x5, branch3x3dbl, branch_pool]

    def forward(self, x: Tensor) -> Tensor:
        outputs = self._forward(x)
        return torch.cat(outputs, 1)


class InceptionB(nn.Module):
    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 16, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 8, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(8, 12, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(12, 12, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        branch3x3 = self.branch3x3(x)
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        branch_pool = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([branch3x3, branch3x3dbl, branch_pool], 1)


class InceptionC(nn.Module):
    def __init__(self, in_channels: int, c7: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 8, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 8, kernel_size=(7, 1), padding=(3, 0))
        self.branch_pool = BasicConv2d(in_channels, 8, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        branch1x1 = self.branch1x1(x)
        branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        branch_pool = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1)
        branch_pool = self.branch_pool(branch_pool)
        return torch.cat([branch1x1, branch7x7, branch_pool], 1)


class InceptionTrunk(nn.Module):
    """Inception v3's pattern: BasicConv2d stem, `nn.MaxPool2d(3, 2)`, A, B, C blocks."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 8, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(8, 8, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(8, 16, kernel_size=3, padding=1)
        self.maxpool1 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Mixed_5b = InceptionA(16, pool_features=4)
        self.Mixed_6a = InceptionB(32)
        self.Mixed_6b = InceptionC(60, c7=6)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=0.5)
        self.fc = nn.Linear(24, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.Conv2d_1a_3x3(x)
        x = self.Conv2d_2a_3x3(x)
        x = self.Conv2d_2b_3x3(x)
        x = self.maxpool1(x)
        x = self.Mixed_5b(x)
        x = self.Mixed_6a(x)
        x = self.Mixed_6b(x)
        x = self.avgpool(x)
        x = self.dropout(x)
        x = torch.flatten(x, 1)
        x = self.fc(x)
        return x


class GoogLeNetInception(nn.Module):
    def __init__(self, in_channels: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int,
                 ch5x5: int, pool_proj: int) -> None:
        super().__init__()
        self.branch1 = BasicConv2d(in_channels, ch1x1, kernel_size=1)
        self.branch2 = nn.Sequential(BasicConv2d(in_channels, ch3x3red, kernel_size=1),
                                     BasicConv2d(ch3x3red, ch3x3, kernel_size=3, padding=1))
        self.branch3 = nn.Sequential(BasicConv2d(in_channels, ch5x5red, kernel_size=1),
                                     BasicConv2d(ch5x5red, ch5x5, kernel_size=3, padding=1))
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True),
            BasicConv2d(in_channels, pool_proj, kernel_size=1))

    def forward(self, x: Tensor) -> Tensor:
        outputs = [self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)]
        return torch.cat(outputs, 1)


class GoogLeNet(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = BasicConv2d(3, 8, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = BasicConv2d(8, 8, kernel_size=1)
        self.conv3 = BasicConv2d(8, 16, kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception3a = GoogLeNetInception(16, 8, 8, 12, 4, 4, 4)
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a = GoogLeNetInception(28, 8, 8, 12, 4, 4, 4)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=0.2)
        self.fc = nn.Linear(28, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        x = self.maxpool3(self.inception3a(x))
        x = self.inception4a(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        x = self.dropout(x)
        return self.fc(x)


# --------------------------------------------------------------------------- FCN-style decoder


class FCNDecoder(nn.Module):
    """An FCN-style segmentation trunk: a VGG-ish encoder, then `ConvTranspose2d` upsampling
    (stride 2, kernel 4, padding 1) with skip additions, and a nearest `F.interpolate` by 2."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.enc1 = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.MaxPool2d(2, 2))
        self.enc2 = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.MaxPool2d(2, 2))
        self.enc3 = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.MaxPool2d(2, 2))
        self.score3 = nn.Conv2d(32, classes, 1)
        self.score2 = nn.Conv2d(16, classes, 1)
        self.up3 = nn.ConvTranspose2d(classes, classes, 4, stride=2, padding=1, bias=False)
        self.up2 = nn.ConvTranspose2d(classes, classes, 4, stride=2, padding=1, groups=classes)

    def forward(self, x: Tensor) -> Tensor:
        f1 = self.enc1(x)
        f2 = self.enc2(f1)
        f3 = self.enc3(f2)
        out = self.up3(self.score3(f3)) + self.score2(f2)
        out = self.up2(out)
        return F.interpolate(out, scale_factor=2, mode="nearest")


class UNetStyleUp(nn.Module):
    """A GroupNorm encoder and a decoder that resizes bilinearly with the corners aligned to a
    skip's size (DeepLab's Interp) and concatenates."""

    def __init__(self) -> None:
        super().__init__()
        self.down = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.GroupNorm(4, 8),
                                  nn.ReLU(inplace=True), nn.Conv2d(8, 16, 3, 2, 1),
                                  nn.GroupNorm(2, 16), nn.ReLU(inplace=True))
        self.skip = nn.Conv2d(3, 4, 1)
        self.fuse = nn.Conv2d(20, 8, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        deep = self.down(x)
        up = F.interpolate(deep, size=x.shape[-2:], mode="bilinear", align_corners=True)
        return self.fuse(torch.cat([up, self.skip(x)], dim=1))


class TorchvisionFCNHead(nn.Module):
    """torchvision's FCN: a backbone, an FCNHead, and the logits resized bilinearly (corners not
    aligned) to the input's size; the result is a dict, as torchvision's segmentation models
    return."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.backbone = nn.Sequential(ConvNormActivation(3, 8, stride=2),
                                      ConvNormActivation(8, 16, stride=2))
        self.classifier = nn.Sequential(nn.Conv2d(16, 8, 3, padding=1, bias=False),
                                        nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.1),
                                        nn.Conv2d(8, classes, 1))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        input_shape = x.shape[-2:]
        features = self.backbone(x)
        result = OrderedDict()
        x = self.classifier(features)
        x = F.interpolate(x, size=input_shape, mode="bilinear", align_corners=False)
        result["out"] = x
        return result


class ASPPConv(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, dilation: int) -> None:
        super().__init__(nn.Conv2d(in_channels, out_channels, 3, padding=dilation,
                                   dilation=dilation, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU())


class ASPPPooling(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, out_channels, 1,
                                                            bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU())

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        for mod in self:
            x = mod(x)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    def __init__(self, in_channels: int, atrous_rates: tuple[int, ...], out_channels: int = 8
                 ) -> None:
        super().__init__()
        modules: list[nn.Module] = [nn.Sequential(nn.Conv2d(in_channels, out_channels, 1,
                                                            bias=False),
                                                  nn.BatchNorm2d(out_channels), nn.ReLU())]
        modules += [ASPPConv(in_channels, out_channels, rate) for rate in atrous_rates]
        modules.append(ASPPPooling(in_channels, out_channels))
        self.convs = nn.ModuleList(modules)
        self.project = nn.Sequential(
            nn.Conv2d(len(self.convs) * out_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(), nn.Dropout(0.5))

    def forward(self, x: Tensor) -> Tensor:
        _res = []
        for conv in self.convs:
            _res.append(conv(x))
        res = torch.cat(_res, dim=1)
        return self.project(res)


class DeepLabV3(nn.Module):
    """torchvision's DeepLabV3 pattern: a dilated backbone, ASPP (with image pooling resized
    back from 1×1), a head, bilinear resizing to the input; a dict out."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.backbone = nn.Sequential(ConvNormActivation(3, 8, stride=2),
                                      ConvNormActivation(8, 16, stride=2),
                                      ConvNormActivation(16, 16, dilation=2))
        self.classifier = nn.Sequential(ASPP(16, (2, 3)), nn.Conv2d(8, 8, 3, padding=1,
                                                                    bias=False),
                                        nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, classes, 1))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        input_shape = x.shape[-2:]
        features = self.backbone(x)
        x = self.classifier(features)
        x = F.interpolate(x, size=input_shape, mode="bilinear", align_corners=False)
        return {"out": x}


class GhostModule(nn.Module):
    """GhostNet's module: a primary conv, a cheap depthwise conv of its output, both
    concatenated and cut to `oup` channels with `out[:, :self.oup, :, :]`."""

    def __init__(self, inp: int, oup: int, kernel_size: int = 1, ratio: int = 2,
                 dw_size: int = 3, stride: int = 1, relu: bool = True) -> None:
        super().__init__()
        self.oup = oup
        init_channels = math.ceil(oup / ratio)
        new_channels = init_channels * (ratio - 1)
        self.primary_conv = nn.Sequential(
            nn.Conv2d(inp, init_channels, kernel_size, stride, kernel_size // 2, bias=False),
            nn.BatchNorm2d(init_channels), nn.ReLU(inplace=True) if relu else nn.Sequential())
        self.cheap_operation = nn.Sequential(
            nn.Conv2d(init_channels, new_channels, dw_size, 1, dw_size // 2,
                      groups=init_channels, bias=False),
            nn.BatchNorm2d(new_channels), nn.ReLU(inplace=True) if relu else nn.Sequential())

    def forward(self, x: Tensor) -> Tensor:
        x1 = self.primary_conv(x)
        x2 = self.cheap_operation(x1)
        out = torch.cat([x1, x2], dim=1)
        return out[:, :self.oup, :, :]


class GhostNetTrunk(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv_stem = nn.Conv2d(3, 8, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.act1 = nn.ReLU(inplace=True)
        self.ghost1 = GhostModule(8, 7)
        self.ghost2 = GhostModule(7, 12, relu=False)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act1(self.bn1(self.conv_stem(x)))
        return self.ghost2(self.ghost1(x))


class SegNetStyle(nn.Module):
    """SegNet in PyTorch: `nn.MaxPool2d(2, 2, return_indices=True)` in the encoder and
    `nn.MaxUnpool2d(2, 2)` by those indices in the decoder (SegNet's Upsample by a mask), a
    `F.max_pool2d(..., return_indices=True)` / `F.max_unpool2d` pair, MobileNetV1-style
    `nn.Hardtanh(0, 6)` and `x.clamp(min=0)`, a softmax over the classes."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.enc1 = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8),
                                  nn.Hardtanh(0.0, 6.0))
        self.enc2 = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.pool = nn.MaxPool2d(2, 2, return_indices=True)
        self.unpool = nn.MaxUnpool2d(2, 2)
        self.dec2 = nn.Sequential(nn.Conv2d(16, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.dec1 = nn.Conv2d(8, classes, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x, i1 = self.pool(self.enc1(x))
        x = self.enc2(x).clamp(min=0)
        x, i2 = F.max_pool2d(x, 2, 2, return_indices=True)
        x = F.max_unpool2d(x, i2, 2, 2)
        x = self.unpool(self.dec2(x), i1)
        return F.softmax(self.dec1(x), dim=1)


# --------------------------------------------------------------------------- refused


class Conv2dSame(nn.Conv2d):
    """timm's Conv2dSame (TensorFlow's "SAME" padding, for ported EfficientNets): the padding
    is computed from the input's size with Python's `max`, which torch.fx cannot trace: refused
    with the line."""

    def forward(self, x: Tensor) -> Tensor:
        ih, iw = x.size()[-2:]
        kh, kw = self.kernel_size
        sh, sw = self.stride
        pad_h = max((math.ceil(ih / sh) - 1) * sh + (kh - 1) * self.dilation[0] + 1 - ih, 0)
        pad_w = max((math.ceil(iw / sw) - 1) * sw + (kw - 1) * self.dilation[1] + 1 - iw, 0)
        x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, (0, 0), self.dilation,
                        self.groups)


class TFSameStem(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv_stem = Conv2dSame(3, 8, 3, 2, bias=False)
        self.bn1 = nn.BatchNorm2d(8)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn1(self.conv_stem(x))


@dataclass(frozen=True)
class Entry:
    """One architecture: how to build it, its input, where its trunk ends (`--feature`) and
    the module paths after that cut (the classifier), whose parameters the cut leaves out."""

    name: str
    build: Callable[[], nn.Module]
    shape: tuple[int, int, int, int]
    feature: str | None = None
    head: tuple[str, ...] = ()


# every one compiles exactly, whole (classifier included) and cut at its trunk
ZOO: list[Entry] = [
    Entry("resnet18", resnet18, (1, 3, 32, 32), "layer4", ("fc",)),
    Entry("resnet50", resnet50, (1, 3, 32, 32), "layer4", ("fc",)),
    Entry("resnext50_32x4d", resnext50_32x4d, (1, 3, 32, 32), "layer4", ("fc",)),
    Entry("resnet50d", resnet50d, (1, 3, 32, 32), "layer4", ("fc",)),
    Entry("vgg11_bn", vgg11_bn, (1, 3, 32, 32), "features", ("classifier",)),
    Entry("MobileNetV2", MobileNetV2, (1, 3, 32, 32), "features", ("classifier",)),
    Entry("MobileNetV3", MobileNetV3, (1, 3, 32, 32), "features", ("classifier",)),
    Entry("EfficientNet", EfficientNet, (1, 3, 32, 32), "features", ("classifier",)),
    Entry("RegNet", RegNet, (1, 3, 32, 32), "trunk_output", ("fc",)),
    Entry("ConvNeXt", ConvNeXt, (1, 3, 32, 32), "features", ("classifier",)),
    Entry("TimmConvNeXt", TimmConvNeXt, (1, 3, 32, 32)),
    Entry("DenseNet", DenseNet, (1, 3, 32, 32), "features", ("classifier",)),
    Entry("SqueezeNet", SqueezeNet, (1, 3, 64, 64), "features", ("classifier",)),
    Entry("ShuffleNetV2", ShuffleNetV2, (1, 3, 32, 32), "conv5", ("fc",)),
    Entry("InceptionTrunk", InceptionTrunk, (1, 3, 64, 64), "Mixed_6b", ("fc",)),
    Entry("GoogLeNet", GoogLeNet, (1, 3, 64, 64), "inception4a", ("fc",)),
    Entry("FCNDecoder", FCNDecoder, (1, 3, 32, 32)),
    Entry("UNetStyleUp", UNetStyleUp, (1, 3, 32, 32)),
    Entry("TorchvisionFCNHead", TorchvisionFCNHead, (1, 3, 32, 32)),
    Entry("DeepLabV3", DeepLabV3, (1, 3, 32, 32)),
    Entry("GhostNetTrunk", GhostNetTrunk, (1, 3, 32, 32)),
    Entry("SegNetStyle", SegNetStyle, (1, 3, 32, 32)),
]
