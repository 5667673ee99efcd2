#!/usr/bin/env python3
"""Generate the backbone prototxt files in specs/ from one compact description per family.

Writing these files by hand means hundreds of near-identical blocks where one wrong pad or group
goes unnoticed; describing each family once (stages, widths, strides) and printing Caffe text
from it makes width, depth and output stride flags, and lets CI prove with `--check` that the
committed files are exactly what the description says.

    python scripts/gen_specs.py                      # regenerate every file of specs/
    python scripts/gen_specs.py --check              # exit 1 if a committed file is stale
    python scripts/gen_specs.py resnet --depth 18 --width 32 --output-stride 16 -o my.prototxt

The files are in the Caffe dialect (BVLC's V2 `layer {}` format): an `Input` layer, convolutions
without bias, BatchNorm + in-place Scale for each normalisation, in-place activations.
"""

from __future__ import annotations

import argparse
import difflib
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "automtl_cli" / "specs"  # package data: ships in the wheel (specs/ links here)
OUTPUT_STRIDES = (8, 16, 32)

# Caffe's running-average fraction: torch's BatchNorm momentum 0.1 (what the AutoMTL reference
# trains with) is a fraction of 0.9; Caffe's own default, 0.999, would leave the running
# statistics of a freshly trained supermodel near their initial values.
_MOVING_AVERAGE_FRACTION = "0.9"


# --------------------------------------------------------------------------- the writer

class NetWriter:
    """Accumulates Caffe layers; each helper returns the blob its caller reads next."""

    def __init__(self, name: str, header: str, input_size: int, batch: int = 1) -> None:
        self.lines: list[str] = [f"# {line}".rstrip() for line in header.splitlines()]
        self.lines.append(f'name: "{name}"')
        self.layer("data", "Input", [], "data", [
            "input_param {",
            f"  shape {{ dim: {batch} dim: 3 dim: {input_size} dim: {input_size} }}",
            "}",
        ])

    def layer(self, name: str, type_: str, bottoms: Sequence[str], top: str,
              body: Sequence[str] = ()) -> str:
        out = self.lines
        out.append("layer {")
        out.append(f'  name: "{name}"')
        out.append(f'  type: "{type_}"')
        out.extend(f'  bottom: "{b}"' for b in bottoms)
        out.append(f'  top: "{top}"')
        out.extend(f"  {line}" for line in body)
        out.append("}")
        return top

    def conv(self, name: str, bottom: str, cout: int, kernel: int, stride: int = 1,
             dilation: int = 1, group: int = 1) -> str:
        """A bias-free convolution with 'same' padding for its kernel and dilation."""
        body = ["convolution_param {", f"  num_output: {cout}", "  bias_term: false"]
        pad = (kernel - 1) // 2 * dilation
        if pad:
            body.append(f"  pad: {pad}")
        body.append(f"  kernel_size: {kernel}")
        if stride != 1:
            body.append(f"  stride: {stride}")
        if dilation != 1:
            body.append(f"  dilation: {dilation}")
        if group != 1:
            body.append(f"  group: {group}")
        body += ['  weight_filler { type: "msra" }', "}"]
        return self.layer(name, "Convolution", [bottom], name, body)

    def bn(self, name: str, blob: str, scale_name: str | None = None) -> str:
        """Caffe's normalisation: statistics (BatchNorm), then affine γ/β (Scale), in place."""
        self.layer(name, "BatchNorm", [blob], blob, [
            "batch_norm_param {",
            f"  moving_average_fraction: {_MOVING_AVERAGE_FRACTION}",
            "  eps: 1e-05",
            "}",
        ])
        return self.layer(scale_name or f"{name}.scale", "Scale", [blob], blob,
                          ["scale_param { bias_term: true }"])

    def act(self, name: str, blob: str, relu6: bool = False) -> str:
        return self.layer(name, "ReLU6" if relu6 else "ReLU", [blob], blob)

    def max_pool(self, name: str, bottom: str, kernel: int, stride: int, pad: int) -> str:
        # Caffe rounds pooling up by default, as the reference's `round_mode: CEIL` does.
        return self.layer(name, "Pooling", [bottom], name, [
            "pooling_param {", "  pool: MAX", f"  kernel_size: {kernel}",
            f"  stride: {stride}", f"  pad: {pad}", "}",
        ])

    def add(self, name: str, a: str, b: str) -> str:
        return self.layer(name, "Eltwise", [a, b], name, ["eltwise_param { operation: SUM }"])

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


class Strides:
    """Turns the strides past the wanted output stride into dilation, as DeepLab does.

    A stage that would take the network beyond `output_stride` keeps its resolution: its stride
    becomes 1 and the dilation of it and everything after grows by that stride instead, so the
    receptive field is what the strided network would have had.
    """

    def __init__(self, output_stride: int, start: int = 1) -> None:
        self.output_stride = output_stride
        self.current = start
        self.dilation = 1

    def take(self, stride: int) -> tuple[int, int]:
        """(stride, dilation) for a stage or block asking for `stride`."""
        if stride > 1 and self.current * stride > self.output_stride:
            self.dilation *= stride
            return 1, self.dilation
        self.current *= stride
        return stride, self.dilation


# --------------------------------------------------------------------------- families

RESNET_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


def resnet(w: NetWriter, depth: int, width: int, output_stride: int) -> None:
    """Deeplab ResNet with BasicBlocks (AdaShare / AutoMTL benchmarks).

    The layer order follows the reference conversion: in a block with a projection shortcut the
    shortcut's 1x1 conv comes first, then the main branch. A dilated stage uses its dilation in
    every block, the first included, as the reference does.
    """
    x = w.conv("conv1", "data", width, 7, stride=2)
    w.bn("bn1", x)
    w.act("relu", x)
    x = w.max_pool("maxpool", x, 3, 2, 1)
    strides = Strides(output_stride, start=4)
    inplanes = width
    for stage, blocks in enumerate(RESNET_BLOCKS[depth]):
        planes = width * 2 ** stage
        stride, dilation = strides.take(1 if stage == 0 else 2)
        for i in range(blocks):
            p = f"layer{stage + 1}.{i}"
            s = stride if i == 0 else 1
            shortcut = x
            if s != 1 or inplanes != planes:
                shortcut = w.conv(f"{p}.downsample.0", x, planes, 1, stride=s)
                w.bn(f"{p}.downsample.1", shortcut)
            y = w.conv(f"{p}.conv1", x, planes, 3, stride=s, dilation=dilation)
            w.bn(f"{p}.bn1", y)
            w.act(f"{p}.relu1", y)
            y = w.conv(f"{p}.conv2", y, planes, 3, dilation=dilation)
            w.bn(f"{p}.bn2", y)
            x = w.add(f"{p}.add", shortcut, y)
            w.act(f"{p}.relu2", x)
            inplanes = planes


def make_divisible(v: float, divisor: int = 8) -> int:
    """torchvision's `_make_divisible`: nearest multiple, never more than 10% below `v`."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


# (expansion t, channels c, repeats n, stride s) of torchvision's MobileNetV2.
MOBILENETV2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                        (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def mobilenetv2(w: NetWriter, width: float, output_stride: int) -> None:
    """torchvision's mobilenet_v2 features (names included), without the classifier."""
    cin = make_divisible(32 * width)
    last = make_divisible(1280 * max(1.0, width))
    x = w.conv("features.0.0", "data", cin, 3, stride=2)
    w.bn("features.0.1", x)
    w.act("features.0.2", x, relu6=True)
    strides = Strides(output_stride, start=2)
    index = 1
    for t, c, n, s in MOBILENETV2_SETTINGS:
        cout = make_divisible(c * width)
        stride, dilation = strides.take(s)
        for i in range(n):
            p = f"features.{index}.conv"
            hidden = round(cin * t)
            y, k = x, 0
            if t != 1:
                y = w.conv(f"{p}.0.0", y, hidden, 1)
                w.bn(f"{p}.0.1", y)
                w.act(f"{p}.0.2", y, relu6=True)
                k = 1
            y = w.conv(f"{p}.{k}.0", y, hidden, 3, stride=stride if i == 0 else 1,
                       dilation=dilation, group=hidden)
            w.bn(f"{p}.{k}.1", y)
            w.act(f"{p}.{k}.2", y, relu6=True)
            y = w.conv(f"{p}.{k + 1}", y, cout, 1)
            w.bn(f"{p}.{k + 2}", y)
            if i > 0 or (stride == 1 and cin == cout):
                y = w.add(f"features.{index}.add", x, y)
            x, cin = y, cout
            index += 1
    x = w.conv(f"features.{index}.0", x, last, 1)
    w.bn(f"features.{index}.1", x)
    w.act(f"features.{index}.2", x, relu6=True)


def round_to_multiple_of(v: float, divisor: int = 8, round_up_bias: float = 0.9) -> int:
    """torchvision's MNASNet channel rounding (a different bias than `make_divisible`)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v if new_v >= round_up_bias * v else new_v + divisor


MNASNET_DEPTHS = (32, 16, 24, 40, 80, 96, 192, 320)
# (kernel, stride, expansion, repeats) of each stack; channels come from MNASNET_DEPTHS[2:].
MNASNET_STACKS = ((3, 2, 3, 3), (5, 2, 3, 3), (5, 2, 6, 3), (3, 1, 6, 2), (5, 2, 6, 4),
                  (3, 1, 6, 1))


def mnasnet(w: NetWriter, width: float, output_stride: int) -> None:
    """torchvision's mnasnet (`layers.*` names), without the classifier; 1.0 is mnasnet1_0."""
    d = [round_to_multiple_of(c * width) for c in MNASNET_DEPTHS]
    x = w.conv("layers.0", "data", d[0], 3, stride=2)
    w.bn("layers.1", x)
    w.act("layers.2", x)
    x = w.conv("layers.3", x, d[0], 3, group=d[0])
    w.bn("layers.4", x)
    w.act("layers.5", x)
    x = w.conv("layers.6", x, d[1], 1)
    w.bn("layers.7", x)
    strides = Strides(output_stride, start=2)
    cin = d[1]
    for j, (k, s, e, n) in enumerate(MNASNET_STACKS):
        cout = d[j + 2]
        stride, dilation = strides.take(s)
        for i in range(n):
            p = f"layers.{8 + j}.{i}"
            mid = cin * e
            y = w.conv(f"{p}.layers.0", x, mid, 1)
            w.bn(f"{p}.layers.1", y)
            w.act(f"{p}.layers.2", y)
            y = w.conv(f"{p}.layers.3", y, mid, k, stride=stride if i == 0 else 1,
                       dilation=dilation, group=mid)
            w.bn(f"{p}.layers.4", y)
            w.act(f"{p}.layers.5", y)
            y = w.conv(f"{p}.layers.6", y, cout, 1)
            w.bn(f"{p}.layers.7", y)
            if i > 0 or (stride == 1 and cin == cout):
                y = w.add(f"{p}.add", y, x)
            x, cin = y, cout
    x = w.conv("layers.14", x, 1280, 1)
    w.bn("layers.15", x)
    w.act("layers.16", x)


# --------------------------------------------------------------------------- specs

@dataclass(frozen=True)
class Spec:
    """One file's full description; `args` is the command line that regenerates it."""

    family: str
    depth: int = 34
    width: float = 64
    output_stride: int = 8
    input_size: int = 224

    @property
    def args(self) -> list[str]:
        a = [self.family]
        if self.family == "resnet":
            a += ["--depth", str(self.depth), "--width", str(int(self.width))]
        else:
            a += ["--width", _fmt(self.width)]
        a += ["--output-stride", str(self.output_stride)]
        if self.input_size != 224:
            a += ["--input-size", str(self.input_size)]
        return a

    def name(self) -> str:
        if self.family == "resnet":
            return f"resnet{self.depth}" + ("" if self.width == 64 else f"_w{int(self.width)}")
        return self.family + ("" if self.width == 1.0 else f"_{_fmt(self.width)}")

    def render(self, regenerate: str) -> str:
        """The file's text; `regenerate` is the command the header tells a reader to run."""
        header = (f"Generated by scripts/gen_specs.py {shlex.join(self.args)}; do not edit.\n"
                  f"Regenerate with: {regenerate}")
        w = NetWriter(self.name(), header, self.input_size)
        builders: dict[str, Callable[[], None]] = {
            "resnet": lambda: resnet(w, self.depth, int(self.width), self.output_stride),
            "mobilenetv2": lambda: mobilenetv2(w, self.width, self.output_stride),
            "mnasnet": lambda: mnasnet(w, self.width, self.output_stride),
        }
        builders[self.family]()
        return w.text()


def _fmt(x: float) -> str:
    return f"{x:g}" if x != int(x) else f"{x:.1f}"


# The committed files: path under specs/ → description.
DEFAULT_SPECS: dict[str, Spec] = {
    "resnet34.prototxt": Spec("resnet", 34, 64, 8),
    "resnet18_w16.prototxt": Spec("resnet", 18, 16, 8),
    "resnet18_w8.prototxt": Spec("resnet", 18, 8, 8),
    "resnet34_w16.prototxt": Spec("resnet", 34, 16, 8),
    "resnet34_w8.prototxt": Spec("resnet", 34, 8, 8),
    "mobilenetv2.prototxt": Spec("mobilenetv2", width=1.0, output_stride=32),
    "mnasnet.prototxt": Spec("mnasnet", width=1.0, output_stride=32),
}


def _rel(path: Path) -> str:
    try:
        return path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


def write_all(check: bool, out_dir: Path) -> int:
    """Write (or with `check`, compare) every default spec; the exit status."""
    stale: list[str] = []
    for file, spec in DEFAULT_SPECS.items():
        path = out_dir / file
        text = spec.render("python scripts/gen_specs.py")
        old = path.read_text(encoding="utf-8") if path.exists() else None
        if old == text:
            continue
        if check:
            stale.append(_rel(path))
            if old is not None:
                diff = list(difflib.unified_diff(old.splitlines(), text.splitlines(),
                                                 f"{_rel(path)} (committed)",
                                                 f"{_rel(path)} (generated)", lineterm="", n=1))
                sys.stderr.writelines(line + "\n" for line in diff[:20])
        else:
            out_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {_rel(path)}")
    if stale:
        print("stale or missing (run `python scripts/gen_specs.py`):", file=sys.stderr)
        for s in stale:
            print(f"  {s}", file=sys.stderr)
        return 1
    return 0


def _positive_float(text: str) -> float:
    v = float(text)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return v


def _positive_int(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return v


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Generate backbone prototxt files (Caffe dialect). With no command, "
                    "regenerate every file of specs/.")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 listing the specs/ files that differ")
    p.add_argument("--out-dir", type=Path, default=SPECS, help=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="family")

    def common(sp: argparse.ArgumentParser, width_help: str, width: float, os_: int) -> None:
        sp.add_argument("--width", type=_positive_float, default=width, help=width_help)
        sp.add_argument("--output-stride", type=int, choices=OUTPUT_STRIDES, default=os_,
                        help=f"input size / output size; later strides become dilation "
                             f"(default {os_})")
        sp.add_argument("--input-size", type=_positive_int, default=224,
                        help="height and width of the Input layer (default 224)")
        sp.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")

    r = sub.add_parser("resnet", help="Deeplab ResNet-18/34 (BasicBlock)")
    r.add_argument("--depth", type=int, choices=sorted(RESNET_BLOCKS), default=34,
                   help="ResNet-18 or ResNet-34 block counts (default 34)")
    common(r, "base width w: stages have w, 2w, 4w, 8w channels (default 64)", 64, 8)
    m = sub.add_parser("mobilenetv2", help="MobileNetV2 features")
    common(m, "width multiplier (default 1.0)", 1.0, 32)
    n = sub.add_parser("mnasnet", help="MNASNet features")
    common(n, "depth multiplier alpha (default 1.0, mnasnet1_0)", 1.0, 32)
    args = p.parse_args(argv)
    if args.family == "resnet" and args.width != int(args.width):
        p.error("resnet --width must be a whole number of channels")
    if args.family is not None and args.check:
        p.error("--check compares the default specs; it takes no family")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.family is None:
        return write_all(args.check, args.out_dir)
    spec = Spec(args.family, getattr(args, "depth", 34), args.width, args.output_stride,
                args.input_size)
    command = f"python scripts/gen_specs.py {shlex.join(spec.args)}"
    if args.output is None:
        sys.stdout.write(spec.render(command))
        return 0
    command += f" -o {shlex.quote(_rel(args.output))}"
    args.output.write_text(spec.render(command), encoding="utf-8")
    print(f"wrote {_rel(args.output)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
