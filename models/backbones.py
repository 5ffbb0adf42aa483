"""Feature extractors that a hash layer sits on.

``small-cnn`` trains in minutes on a 2-core CPU for 28x28 and 56x56 inputs.
The torchvision networks (AlexNet, VGG11/16, ResNet18/50) follow the layer
choices of the SAAT, TADH and CgAT code: AlexNet and VGG keep the pretrained
fc6/fc7 layers and drop the ImageNet classifier, ResNet keeps everything up
to the global average pool.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from models._registry import Registry
from models.errors import CheckpointError, ConfigError

BACKBONES: Registry = Registry("backbone")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Backbone(nn.Module):
    """A network that maps images to a flat feature vector of ``out_features``."""

    out_features: int
    default_mean: tuple[float, ...] = IMAGENET_MEAN
    default_std: tuple[float, ...] = IMAGENET_STD
    # Whether a BatchNorm1d sits between the hash layer and tanh by default.
    default_head_batchnorm: bool = False


@BACKBONES.register("small-cnn")
class SmallCNN(Backbone):
    """Three strided convolutions and one hidden dense layer (about 0.6M weights).

    Strided convolutions instead of pooling keep a sign-PGD step at about
    0.16 s per 1,000 28x28 images on 2 CPU cores. The hash head adds a
    BatchNorm1d before tanh by default: without it the DPH loss drove a small
    CNN's codes to zero.
    """

    default_head_batchnorm = True

    def __init__(self, *, in_channels: int = 1, image_size: int = 28, width: int = 32, **_: object) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 4, stride=2, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(inplace=True),
            nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1),
            nn.BatchNorm2d(4 * width),
            nn.ReLU(inplace=True),
            # 28 -> 4 and 56 -> 7; other sizes are pooled to 4x4.
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(4 * width * 16, 256),
            nn.ReLU(inplace=True),
        )
        self.out_features = 256

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images)


def _torchvision_model(arch: str, weights: str | None) -> nn.Module:
    import torchvision

    builder = getattr(torchvision.models, arch)
    if weights is None:
        return builder(weights=None)
    if weights == "imagenet":
        # torchvision downloads these on first use; offline users pass a file path.
        return builder(weights="DEFAULT")
    path = Path(weights)
    if not path.is_file():
        raise ConfigError(
            f"pretrained weights {weights!r} not found; pass 'imagenet' (downloaded by "
            "torchvision) or the path of a torchvision state_dict file"
        )
    model = builder(weights=None)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except (RuntimeError, ValueError, OSError) as error:
        raise CheckpointError(f"cannot load {arch} weights from {path}: {error}") from error
    return model


@BACKBONES.register("alexnet")
class AlexNetFeatures(Backbone):
    """AlexNet conv layers + fc6 + fc7 (4096 features); needs 3x224x224 input."""

    def __init__(self, *, weights: str | None = None, **_: object) -> None:
        super().__init__()
        net = _torchvision_model("alexnet", weights)
        self.features = net.features
        self.avgpool = net.avgpool
        # Dropout, fc6, ReLU, Dropout, fc7, ReLU; the 1000-way classifier is dropped.
        self.fc = nn.Sequential(*list(net.classifier.children())[:6])
        self.out_features = 4096

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.features(images)), 1))


class _VGGFeatures(Backbone):
    arch = "vgg11"

    def __init__(self, *, weights: str | None = None, **_: object) -> None:
        super().__init__()
        net = _torchvision_model(self.arch, weights)
        self.features = net.features
        self.avgpool = net.avgpool
        # fc6, ReLU, Dropout, fc7, ReLU, Dropout; the 1000-way classifier is dropped.
        self.fc = nn.Sequential(*list(net.classifier.children())[:6])
        self.out_features = 4096

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.features(images)), 1))


@BACKBONES.register("vgg11")
class VGG11Features(_VGGFeatures):
    """VGG11 conv layers + fc6 + fc7 (4096 features)."""

    arch = "vgg11"


@BACKBONES.register("vgg16")
class VGG16Features(_VGGFeatures):
    """VGG16 conv layers + fc6 + fc7 (4096 features)."""

    arch = "vgg16"


class _ResNetFeatures(Backbone):
    arch = "resnet18"

    def __init__(self, *, weights: str | None = None, **_: object) -> None:
        super().__init__()
        net = _torchvision_model(self.arch, weights)
        self.out_features = net.fc.in_features
        net.fc = nn.Identity()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


@BACKBONES.register("resnet18")
class ResNet18Features(_ResNetFeatures):
    """ResNet18 up to the global average pool (512 features)."""

    arch = "resnet18"


@BACKBONES.register("resnet50")
class ResNet50Features(_ResNetFeatures):
    """ResNet50 up to the global average pool (2048 features)."""

    arch = "resnet50"
