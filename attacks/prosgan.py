"""ProS-GAN (Wang et al., CVPR 2021): a generative targeted attack.

Preparation has two stages, both per victim. First a PrototypeNet with a
classifier head learns the ProS-GAN prototype loss against the victim's
binary training codes (``attacks._prototype``) and is then frozen. Second a
generator ``G(x~, f)`` and a discriminator ``D`` train adversarially on the
victim's training images, where ``x~ = 2x - 1`` and ``f`` is the
PrototypeNet feature of a random target label. The attack is one forward
pass: ``x_adv = (G(2x - 1, f(l_t)) + 1) / 2``.

The method has no eps-ball: imperceptibility comes only from the
reconstruction loss. ``run`` therefore returns two image sets.
``AttackOutput.images`` are the generated images clipped to the eps-ball
around the input and to [0, 1], comparable with the L-infinity attacks.
``AttackOutput.extra_images["unbounded"]`` are the raw generated images,
the method as published. ``capabilities.bounded`` is False, so the base
class does not project, and ``_perturb`` does the clipping itself.

Architecture. The reference networks are for 3 x 224 x 224 images: the
label encoder upsamples a 14 x 14 map four times, the image encoder
downsamples twice and the discriminator five times to a 7 x 7 map. Here
each stage count is the number of times the image side can be halved
exactly while staying at least 4 pixels, capped at the reference count
(``count_halvings``). For 224 this reproduces the reference; for 28 x 28
it gives 2 label-encoder, 2 encoder and 2 discriminator stages. Channel
widths and residual-block counts are constructor arguments. Every
InstanceNorm has no affine parameters and no running statistics.

GAN training follows the reference code: batch 24, Adam(1e-4, betas
(0.5, 0.999)) for both networks and a discriminator step on every third
batch of an epoch (the first, fourth, ...). The discriminator fits
least-squares targets ``[labels, flag]`` with flag 0 for real and 1 for
generated images. The generator minimises
``w_rec MSE(x_g, x~) + 5 (1 - mean(F((x_g + 1) / 2) * t)) + 1 LS(D(x_g), [l_t, 0])``
with ``t = sign(p(l_t))``; the three weights are ``reconstruction_weight``,
``hash_weight`` and ``adversarial_weight``. The learning rate stays
constant for the first half of the epochs and decays linearly in the
second half (reference: 50 + 50 epochs). The reference sets ``w_rec`` to
100 for FLICKR-25K and 50 for NUS-WIDE and MS-COCO; the default here is
50. Target labels are drawn uniformly from the distinct non-zero database
label vectors.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from attacks._base import ATTACKS, Attack, AttackOutput, Capabilities, VictimKnowledge, _model_device
from attacks._prototype import PrototypeNet, sample_target_labels, seeded_init, train_prototype_net
from attacks._targets import target_candidates
from models.base import HashingModel
from models.codes import binarize
from models.errors import ConfigError, DataError, TrainingDivergedError
from models.imageset import ImageSet, iterate_batches

log = logging.getLogger(__name__)

PROTOTYPE_PREFIX = "prototype."
GENERATOR_PREFIX = "generator."
IMAGE_SHAPE_KEY = "image_shape"

# Reference stage counts for 224 x 224 images, and the smallest map side kept.
LABEL_ENCODER_STAGES = 4
IMAGE_ENCODER_STAGES = 2
DISCRIMINATOR_STAGES = 5
MIN_MAP_SIZE = 4


def count_halvings(height: int, width: int, max_count: int, min_size: int = MIN_MAP_SIZE) -> int:
    """Return how often both sides halve exactly while staying at least ``min_size``, at most ``max_count``."""
    count = 0
    while count < max_count and all(side % 2 == 0 and side // 2 >= min_size for side in (height, width)):
        height, width = height // 2, width // 2
        count += 1
    return count


# -- networks ----------------------------------------------------------------
def _norm_relu(channels: int) -> list[nn.Module]:
    return [nn.InstanceNorm2d(channels), nn.ReLU(inplace=True)]


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with InstanceNorm, added to the input."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            *_norm_relu(channels),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.InstanceNorm2d(channels),
        )

    def forward(self, inputs: Tensor) -> Tensor:
        return inputs + self.body(inputs)


class ProsGanGenerator(nn.Module):
    """``G(x~, f)``: images in [-1, 1] and PrototypeNet features -> images in (-1, 1).

    The label encoder turns ``f`` into a one-image-sized label map that is
    concatenated with ``x~``. The image encoder (stride-2 convolutions and
    residual blocks) and the decoder (residual blocks and transposed
    convolutions) follow, and the output head convolves the decoder output
    concatenated with ``x~`` again, then applies tanh.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        *,
        feature_size: int = 512,
        width: int = 64,
        label_width: int = 128,
        residual_blocks: int = 3,
    ) -> None:
        super().__init__()
        channels, height, image_width = (int(side) for side in image_shape)
        if min(channels, height, image_width, feature_size, width, label_width) < 1 or residual_blocks < 0:
            raise ConfigError(
                f"invalid ProS-GAN generator settings: image_shape {tuple(image_shape)}, feature_size "
                f"{feature_size}, width {width}, label_width {label_width}, residual_blocks {residual_blocks}"
            )
        self.image_shape = (channels, height, image_width)
        self.label_stages = count_halvings(height, image_width, LABEL_ENCODER_STAGES)
        self.image_stages = count_halvings(height, image_width, IMAGE_ENCODER_STAGES)

        start = (height >> self.label_stages, image_width >> self.label_stages)
        self.label_start = (label_width, *start)
        self.label_project = nn.Sequential(nn.Linear(feature_size, label_width * start[0] * start[1]),
                                           nn.ReLU(inplace=True))
        layers: list[nn.Module] = []
        depth = label_width
        for _ in range(self.label_stages):
            narrower = max(depth // 2, 1)
            layers += [nn.ConvTranspose2d(depth, narrower, 4, stride=2, padding=1, bias=False), *_norm_relu(narrower)]
            depth = narrower
        layers.append(nn.Conv2d(depth, channels, 3, padding=1, bias=False))
        self.label_decoder = nn.Sequential(*layers)

        layers = [nn.Conv2d(2 * channels, width, 7, padding=3), *_norm_relu(width)]
        depth = width
        for _ in range(self.image_stages):
            layers += [nn.Conv2d(depth, 2 * depth, 4, stride=2, padding=1), *_norm_relu(2 * depth)]
            depth *= 2
        layers += [ResidualBlock(depth) for _ in range(residual_blocks)]
        self.encoder = nn.Sequential(*layers)

        layers = [ResidualBlock(depth) for _ in range(residual_blocks)]
        for _ in range(self.image_stages):
            layers += [nn.ConvTranspose2d(depth, depth // 2, 4, stride=2, padding=1, bias=False),
                       *_norm_relu(depth // 2)]
            depth //= 2
        self.decoder = nn.Sequential(*layers)
        self.head = nn.Conv2d(depth + channels, channels, 3, padding=1, bias=False)

    def forward(self, images: Tensor, features: Tensor) -> Tensor:
        label_map = self.label_project(features).view(-1, *self.label_start)
        label_map = self.label_decoder(label_map)
        decoded = self.decoder(self.encoder(torch.cat([label_map, images], dim=1)))
        return torch.tanh(self.head(torch.cat([decoded, images], dim=1)))


class ProsGanDiscriminator(nn.Module):
    """``D(x)``: images in [-1, 1] -> (batch, n_classes + 1) logits.

    The first ``n_classes`` columns score the labels and the last one the
    real/fake flag. Stride-2 spectral-norm convolutions with LeakyReLU(0.01)
    double the width at each stage, and a final convolution spans the whole
    remaining map (7 x 7 for 224 x 224 images).
    """

    def __init__(self, image_shape: tuple[int, int, int], n_classes: int, *, width: int = 64) -> None:
        super().__init__()
        channels, height, image_width = (int(side) for side in image_shape)
        if min(channels, height, image_width, n_classes, width) < 1:
            raise ConfigError(
                f"invalid ProS-GAN discriminator settings: image_shape {tuple(image_shape)}, n_classes "
                f"{n_classes}, width {width}"
            )
        self.stages = count_halvings(height, image_width, DISCRIMINATOR_STAGES)
        layers: list[nn.Module] = []
        depth, wider = channels, width
        for _ in range(self.stages):
            layers += [spectral_norm(nn.Conv2d(depth, wider, 4, stride=2, padding=1)), nn.LeakyReLU(0.01)]
            depth, wider = wider, 2 * wider
        self.main = nn.Sequential(*layers)
        kernel = (height >> self.stages, image_width >> self.stages)
        self.output = nn.Conv2d(depth, n_classes + 1, kernel, bias=False)

    def forward(self, images: Tensor) -> Tensor:
        # flatten(1), not squeeze(): a batch of one keeps its batch dimension.
        return self.output(self.main(images)).flatten(1)


def least_squares_loss(logits: Tensor, labels: Tensor, flag: float) -> Tensor:
    """Return the MSE between discriminator logits and the target ``[labels, flag]``."""
    flags = torch.full((labels.shape[0], 1), flag, dtype=logits.dtype, device=logits.device)
    return F.mse_loss(logits, torch.cat([labels.to(logits.dtype), flags], dim=1))


# -- the attack ----------------------------------------------------------------
@ATTACKS.register("prosgan")
class ProSGAN(Attack):
    """Generative targeted attack: one generator pass conditioned on the target label's feature."""

    name = "prosgan"
    capabilities = Capabilities(
        targeted=True, needs_train_codes=True, needs_database_codes=True, needs_train_images=True, bounded=False
    )

    def __init__(
        self,
        *,
        epochs: int = 100,
        gan_batch_size: int = 24,
        gan_lr: float = 1e-4,
        reconstruction_weight: float = 50.0,
        hash_weight: float = 5.0,
        adversarial_weight: float = 1.0,
        discriminator_every: int = 3,
        width: int = 64,
        label_width: int = 128,
        residual_blocks: int = 3,
        discriminator_width: int = 64,
        prototype_steps: int = 30_000,
        prototype_batch_size: int = 64,
        prototype_lr: float = 1e-4,
        hidden_size: int = 4096,
        feature_size: int = 512,
        steps: int = 0,
        random_start: bool = False,
        scale_schedule: str = "none",
        **kwargs: Any,
    ) -> None:
        super().__init__(steps=steps, random_start=random_start, scale_schedule=scale_schedule, **kwargs)
        positive_options = {
            "epochs": epochs, "gan_batch_size": gan_batch_size, "discriminator_every": discriminator_every,
            "width": width, "label_width": label_width, "discriminator_width": discriminator_width,
            "prototype_steps": prototype_steps, "prototype_batch_size": prototype_batch_size,
            "hidden_size": hidden_size, "feature_size": feature_size,
        }
        for option, value in positive_options.items():
            if int(value) < 1:
                raise ConfigError(f"{option} must be a positive integer, got {value}")
        if residual_blocks < 0:
            raise ConfigError(f"residual_blocks must be non-negative, got {residual_blocks}")
        if gan_lr <= 0 or prototype_lr <= 0:
            raise ConfigError(f"gan_lr ({gan_lr}) and prototype_lr ({prototype_lr}) must be positive")
        self.epochs = int(epochs)
        self.gan_batch_size = int(gan_batch_size)
        self.gan_lr = float(gan_lr)
        self.reconstruction_weight = float(reconstruction_weight)
        self.hash_weight = float(hash_weight)
        self.adversarial_weight = float(adversarial_weight)
        self.discriminator_every = int(discriminator_every)
        self.width = int(width)
        self.label_width = int(label_width)
        self.residual_blocks = int(residual_blocks)
        self.discriminator_width = int(discriminator_width)
        self.prototype_steps = int(prototype_steps)
        self.prototype_batch_size = int(prototype_batch_size)
        self.prototype_lr = float(prototype_lr)
        self.hidden_size = int(hidden_size)
        self.feature_size = int(feature_size)
        self.prototype_net: PrototypeNet | None = None
        self.generator: ProsGanGenerator | None = None
        self._unbounded: list[Tensor] = []

    # -- configuration -------------------------------------------------------
    def _training_config(self) -> dict[str, Any]:
        return {
            "epochs": self.epochs,
            "gan_batch_size": self.gan_batch_size,
            "gan_lr": self.gan_lr,
            "reconstruction_weight": self.reconstruction_weight,
            "hash_weight": self.hash_weight,
            "adversarial_weight": self.adversarial_weight,
            "discriminator_every": self.discriminator_every,
            "width": self.width,
            "label_width": self.label_width,
            "residual_blocks": self.residual_blocks,
            "discriminator_width": self.discriminator_width,
            "prototype_steps": self.prototype_steps,
            "prototype_batch_size": self.prototype_batch_size,
            "prototype_lr": self.prototype_lr,
            "hidden_size": self.hidden_size,
            "feature_size": self.feature_size,
        }

    def method_config(self) -> dict[str, Any]:
        return self._training_config()

    def fit_config(self) -> dict[str, Any]:
        return {"attack": self.name, "version": self.version, "seed": self.seed, **self._training_config()}

    def build_generator(self, image_shape: tuple[int, int, int]) -> ProsGanGenerator:
        """Build an untrained generator with this attack's widths for images of ``image_shape``."""
        return ProsGanGenerator(image_shape, feature_size=self.feature_size, width=self.width,
                                label_width=self.label_width, residual_blocks=self.residual_blocks)

    # -- per-victim preparation ----------------------------------------------
    def _fit(self, model: HashingModel, knowledge: VictimKnowledge) -> None:
        device = _model_device(model)
        codes = knowledge.train_codes.to(device, torch.float32)
        labels = knowledge.train_labels.to(device, torch.float32)
        candidates = target_candidates(knowledge.database_labels).to(device, torch.float32)
        images = knowledge.train_images
        if images.labels.shape[1] != candidates.shape[1]:
            raise DataError(
                f"training images have {images.labels.shape[1]} classes but the database labels "
                f"have {candidates.shape[1]}"
            )

        with seeded_init(self.seed):
            net = PrototypeNet(labels.shape[1], codes.shape[1], hidden_size=self.hidden_size,
                               feature_size=self.feature_size, classifier=True)
        net.to(device)
        train_prototype_net(
            net, codes, labels, candidates,
            steps=self.prototype_steps,
            batch_size=self.prototype_batch_size,
            lr=self.prototype_lr,
            loss="prosgan",
            generator=torch.Generator().manual_seed(self.seed),
        )
        self.prototype_net = net.eval().requires_grad_(False)

        # A separate seed keeps the GAN's initial weights independent of the PrototypeNet's.
        with seeded_init(self.seed + 1):
            generator = self.build_generator(images.image_shape)
            discriminator = ProsGanDiscriminator(images.image_shape, labels.shape[1], width=self.discriminator_width)
        generator.to(device)
        discriminator.to(device)
        self._train_gan(model, generator, discriminator, images, candidates, device)
        self.generator = generator.eval().requires_grad_(False)

    def _train_gan(
        self,
        model: HashingModel,
        generator: ProsGanGenerator,
        discriminator: ProsGanDiscriminator,
        images: ImageSet,
        candidates: Tensor,
        device: torch.device,
    ) -> None:
        """Train G and D; the victim stays frozen in eval mode and passes gradients to G's output."""
        optimizer_g = torch.optim.Adam(generator.parameters(), lr=self.gan_lr, betas=(0.5, 0.999))
        optimizer_d = torch.optim.Adam(discriminator.parameters(), lr=self.gan_lr, betas=(0.5, 0.999))
        constant_epochs = self.epochs - self.epochs // 2
        decay_epochs = self.epochs // 2

        def decay(epoch: int) -> float:
            return 1.0 - max(0, epoch + 1 - constant_epochs) / (decay_epochs + 1)

        schedulers = [torch.optim.lr_scheduler.LambdaLR(optimizer, decay) for optimizer in (optimizer_g, optimizer_d)]
        sampler = torch.Generator().manual_seed(self.seed + 1)
        generator.train()
        discriminator.train()
        log.info("training ProS-GAN: %d epochs over %d images, batch %d", self.epochs, len(images),
                 self.gan_batch_size)
        for epoch in range(self.epochs):
            started = time.perf_counter()
            total_g = torch.zeros((), device=device)
            total_d = torch.zeros((), device=device)
            batches = iterate_batches(images, self.gan_batch_size, shuffle=True, generator=sampler, device=device)
            for batch, (clean, labels, _) in enumerate(batches):
                real = clean * 2 - 1
                targets = sample_target_labels(candidates, real.shape[0], sampler)
                with torch.no_grad():
                    output = self.prototype_net(targets)
                    target_codes = binarize(output.prototypes)
                fake = generator(real, output.features)

                if batch % self.discriminator_every == 0:
                    loss_d = 0.5 * (least_squares_loss(discriminator(real), labels, 0.0)
                                    + least_squares_loss(discriminator(fake.detach()), targets, 1.0))
                    optimizer_d.zero_grad(set_to_none=True)
                    loss_d.backward()
                    optimizer_d.step()
                    total_d += loss_d.detach()

                discriminator.requires_grad_(False)
                hashing = 1 - (model((fake + 1) / 2) * target_codes).mean()
                loss_g = (self.reconstruction_weight * F.mse_loss(fake, real)
                          + self.hash_weight * hashing
                          + self.adversarial_weight * least_squares_loss(discriminator(fake), targets, 0.0))
                optimizer_g.zero_grad(set_to_none=True)
                loss_g.backward()
                optimizer_g.step()
                discriminator.requires_grad_(True)
                total_g += loss_g.detach()
            for scheduler in schedulers:
                scheduler.step()
            sum_g, sum_d = float(total_g), float(total_d)
            if not (math.isfinite(sum_g) and math.isfinite(sum_d)):
                raise TrainingDivergedError(
                    f"ProS-GAN losses became non-finite in epoch {epoch + 1} (G sum {sum_g}, D sum {sum_d}); "
                    "lower gan_lr"
                )
            log.info("ProS-GAN epoch %d/%d: G loss sum %.4g, D loss sum %.4g, %.1f s", epoch + 1, self.epochs,
                     sum_g, sum_d, time.perf_counter() - started)

    def prepared_state(self) -> dict[str, Tensor]:
        if self.prototype_net is None or self.generator is None:
            return {}
        state = {PROTOTYPE_PREFIX + key: value.detach().cpu().clone()
                 for key, value in self.prototype_net.state_dict().items()}
        state.update({GENERATOR_PREFIX + key: value.detach().cpu().clone()
                      for key, value in self.generator.state_dict().items()})
        state[IMAGE_SHAPE_KEY] = torch.tensor(self.generator.image_shape, dtype=torch.int64)
        return state

    def load_prepared_state(self, state: dict[str, Tensor]) -> None:
        prototype = {key[len(PROTOTYPE_PREFIX):]: value for key, value in state.items()
                     if key.startswith(PROTOTYPE_PREFIX)}
        generator_state = {key[len(GENERATOR_PREFIX):]: value for key, value in state.items()
                           if key.startswith(GENERATOR_PREFIX)}
        if not prototype or not generator_state or IMAGE_SHAPE_KEY not in state:
            raise DataError("ProS-GAN prepared state is missing the PrototypeNet, the generator or the image shape; "
                            "refit the attack instead")
        net = PrototypeNet.from_state_dict(prototype)
        if (net.hidden_size, net.feature_size) != (self.hidden_size, self.feature_size):
            raise ConfigError(
                f"cached PrototypeNet has hidden sizes {net.hidden_size}/{net.feature_size} but this attack "
                f"is configured for {self.hidden_size}/{self.feature_size}"
            )
        generator = self.build_generator(tuple(int(side) for side in state[IMAGE_SHAPE_KEY].tolist()))
        try:
            generator.load_state_dict(generator_state)
        except RuntimeError as error:
            raise ConfigError(
                f"cached ProS-GAN generator does not match width {self.width}, label_width {self.label_width}, "
                f"residual_blocks {self.residual_blocks}: {error}"
            ) from error
        self.prototype_net = net.eval().requires_grad_(False)
        self.generator = generator.eval().requires_grad_(False)
        self._fitted = True

    # -- the attack --------------------------------------------------------
    def run(self, model: HashingModel, images: Tensor, labels: Tensor,
            target_labels: Tensor | None = None) -> AttackOutput:
        """Return the eps-clipped images in ``images`` and the raw ones in ``extra_images["unbounded"]``."""
        self._unbounded = []
        return super().run(model, images, labels, target_labels)

    def _networks(self, images: Tensor, target_labels: Tensor) -> tuple[PrototypeNet, ProsGanGenerator]:
        if self.prototype_net is None or self.generator is None:
            raise ConfigError("ProS-GAN is not trained; call fit() or load_prepared_state() first")
        if tuple(images.shape[1:]) != self.generator.image_shape:
            raise DataError(
                f"images have shape {tuple(images.shape[1:])} but the generator was trained on "
                f"{self.generator.image_shape}"
            )
        if target_labels.shape[1] != self.prototype_net.n_classes:
            raise DataError(
                f"target labels have {target_labels.shape[1]} classes but the PrototypeNet was trained "
                f"for {self.prototype_net.n_classes}"
            )
        return self.prototype_net.to(images.device), self.generator.to(images.device)

    def _perturb(self, model: HashingModel, images: Tensor, labels: Tensor, target_labels: Tensor | None,
                 generator: torch.Generator) -> Tensor:
        net, image_generator = self._networks(images, target_labels)
        with torch.no_grad():
            features = net(target_labels).features
            unbounded = (image_generator(images * 2 - 1, features) + 1) / 2
        self._unbounded.append(unbounded.cpu())
        return self.project(images, unbounded)

    def _finish(self, output: AttackOutput) -> None:
        output.extra_images["unbounded"] = torch.cat(self._unbounded)
        self._unbounded = []

    @torch.no_grad()
    def _theory_codes(self, model: HashingModel, images: Tensor, labels: Tensor,
                      target_labels: Tensor | None) -> Tensor:
        net, _ = self._networks(images, target_labels)
        return binarize(net(target_labels).prototypes)
