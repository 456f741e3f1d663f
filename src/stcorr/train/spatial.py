"""Stage 1 (spatial): MoCo v2 instance discrimination on images and video frames, Lab input.

The official repository has no stage-1 code (spec section 2); this follows the public MoCo v2 recipe:
a query encoder with a 2-layer MLP head (C -> C -> 128), a momentum copy of both for the keys (m = 0.999),
a queue of negative keys (65,536) and InfoNCE with temperature 0.2. Choices made here:

* The backbone has the **ImageNet topology** (3x3/s2 max-pool stem, layer4 at 1/32; :func:`imagenet_resnet`),
  as MoCo and DetCo train it; the weights are stride-agnostic, so the export is the stride-8 (or 4)
  inference variant and the same file initialises the stage-2 student and teacher.
* The input is normalised Lab (the paper's student input space); augmentations are applied in RGB first.
* Shuffle-BN (MoCo's cross-GPU batch shuffle) is emulated on each process: the key batch is permuted
  and run in ``moco_bn_splits`` groups, so a query and its key never share batch-norm statistics.
  Keys of all processes are gathered before they enter the queue, so queues stay identical.
* ``detco=True`` adds a DetCo-style global/local contrast (a simplification of DetCo): each view is also cut
  into its 2x2 quadrants, each quadrant is encoded separately, the four pooled features are concatenated
  into a "local" embedding (own MLP head and queue), and four InfoNCE terms are summed with weight 1:
  global-global, local-local, global query vs local key, local query vs global key. DetCo's
  multi-stage heads, 3x3 jigsaw patches and AutoAugment are not reproduced.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from stcorr.errors import InputError
from stcorr.model import CorrespondenceModel
from stcorr.train.data import ImageViews, image_items, seeded_generator
from stcorr.train.loop import Distributed, Stage, all_gather_cat, load_init_weights, sum_parts
from stcorr.train.losses import MomentumQueue, info_nce_loss
from stcorr.train.presets import TrainConfig

__all__ = ["imagenet_resnet", "ProjectionHead", "MomentumContrast", "check_queue", "build_spatial"]

_TOPOLOGIES = {32: dict(stride=8, layer4_stride=2), 16: dict(stride=4, layer4_stride=4)}


def imagenet_resnet(arch: str, *, input_space: str = "lab", output_stride: int = 32) -> CorrespondenceModel:
    """A ResNet with a max-pool stem returning layer4 (torchvision keys).

    ``output_stride=32`` is torchvision's ImageNet network (strides 1, 2, 2, 2); ``16`` is the dev repo's
    stride-4 teacher (strides 1, 1, 1, 4). The model's ``config`` does not describe the max-pool: never
    ``save_pretrained`` it, export its state dict instead.
    """
    model = CorrespondenceModel(arch, input_space=input_space, layers=("layer4",), **_TOPOLOGIES[output_stride])
    model.pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    return model


class ProjectionHead(nn.Sequential):
    """MoCo v2's MLP head: Linear(C, C), ReLU, Linear(C, dim)."""

    def __init__(self, channels: int, dim: int) -> None:
        super().__init__(nn.Linear(channels, channels), nn.ReLU(inplace=True), nn.Linear(channels, dim))


def _frozen_copy(module: nn.Module) -> nn.Module:
    return copy.deepcopy(module).requires_grad_(False)


def _quadrants(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B * 4, 3, H/2, W/2), quadrants in raster order."""
    h, w = x.shape[-2] // 2, x.shape[-1] // 2
    return torch.stack([x[..., :h, :w], x[..., :h, w:], x[..., h:, :w], x[..., h:, w:]], dim=1).flatten(0, 1)


class MomentumContrast(nn.Module):
    """MoCo v2 (optionally with DetCo-style local terms) around ``encoder``.

    ``forward(views, draw)`` takes RGB views (B, 2, 3, S, S) in [0, 1] (query, key) and the global index
    of the micro-batch (seeding the key shuffle); it returns ``(total, parts)``. The momentum update and
    the enqueueing happen inside ``forward``, as in MoCo. ``encoder`` is the trained network; everything
    else (heads, key copies, queues) is saved in ``state_dict`` for exact resumption.
    """

    def __init__(self, encoder: CorrespondenceModel, config: TrainConfig, *, rank: int = 0, layer: str = "layer4"):
        super().__init__()
        self.config, self.rank, self.layer = config, rank, layer
        channels = encoder.channels[layer]
        self.encoder = encoder
        self.head = ProjectionHead(channels, config.moco_dim)
        self.key_encoder = _frozen_copy(encoder)
        self.key_head = _frozen_copy(self.head)
        self.queue = MomentumQueue(config.moco_queue, config.moco_dim, generator=seeded_generator(config.seed, "queue"))
        if config.detco:
            self.local_head = ProjectionHead(4 * channels, config.moco_dim)
            self.key_local_head = _frozen_copy(self.local_head)
            self.local_queue = MomentumQueue(
                config.moco_queue, config.moco_dim, generator=seeded_generator(config.seed, "local queue")
            )

    def _pairs(self) -> Sequence[tuple[nn.Module, nn.Module]]:
        pairs = [(self.encoder, self.key_encoder), (self.head, self.key_head)]
        return pairs + ([(self.local_head, self.key_local_head)] if self.config.detco else [])

    @torch.no_grad()
    def _momentum_update(self) -> None:
        m = self.config.moco_momentum
        for query, key in self._pairs():
            for q, k in zip(query.parameters(), key.parameters()):
                k.mul_(m).add_(q.detach(), alpha=1.0 - m)

    def _pooled(self, encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return encoder.forward_features(x)[self.layer].mean(dim=(2, 3))

    def _embed(self, x: torch.Tensor, *, key: bool) -> dict[str, torch.Tensor]:
        """Embeddings of normalised inputs: ``global`` and, with DetCo, ``local``."""
        encoder = self.key_encoder if key else self.encoder
        out = {"global": (self.key_head if key else self.head)(self._pooled(encoder, x))}
        if self.config.detco:
            local = self._pooled(encoder, _quadrants(x)).unflatten(0, (x.shape[0], 4)).flatten(1)
            out["local"] = (self.key_local_head if key else self.local_head)(local)
        return out

    @torch.no_grad()
    def _keys(self, x: torch.Tensor, draw: int) -> dict[str, torch.Tensor]:
        """Key embeddings computed in shuffled batch-norm groups, returned in the original order."""
        order = torch.randperm(x.shape[0], generator=seeded_generator(self.config.seed, "shuffle", self.rank, draw))
        order = order.to(x.device)
        groups = [self._embed(x[index], key=True) for index in order.tensor_split(self.config.moco_bn_splits)]
        keys = {}
        for name in groups[0]:
            shuffled = torch.cat([group[name] for group in groups])
            keys[name] = torch.empty_like(shuffled).index_copy_(0, order, shuffled)
        return keys

    def contrastive_parts(self, views: torch.Tensor, draw: int) -> dict[str, torch.Tensor]:
        """The InfoNCE terms for views (B, 2, 3, S, S); updates the key encoder and the queues."""
        normalised = self.encoder.preprocess(views.flatten(0, 1)).unflatten(0, views.shape[:2])
        queries = self._embed(normalised[:, 0], key=False)
        self._momentum_update()
        keys = self._keys(normalised[:, 1], draw)
        tau = self.config.moco_temperature
        if not self.config.detco:
            parts = {"contrastive": info_nce_loss(queries["global"], keys["global"], self.queue.keys, tau)}
        else:
            queues = {"global": self.queue.keys, "local": self.local_queue.keys}
            parts = {
                f"contrastive_{q}_{k}": info_nce_loss(queries[q], keys[k], queues[k], tau)
                for q, k in (("global", "global"), ("local", "local"), ("global", "local"), ("local", "global"))
            }
        self.queue.enqueue(all_gather_cat(F.normalize(keys["global"], dim=1)))
        if self.config.detco:
            self.local_queue.enqueue(all_gather_cat(F.normalize(keys["local"], dim=1)))
        return parts

    def forward(self, views: torch.Tensor, draw: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts = self.contrastive_parts(views, draw)
        return sum_parts(parts), parts


def check_queue(config: TrainConfig, env: Distributed) -> None:
    """The queue must hold at least one step's keys of all processes."""
    keys = config.batch_size * env.world_size
    if config.moco_queue < keys:
        raise InputError(f"moco_queue ({config.moco_queue}) must be at least batch_size x processes ({keys})")


def build_spatial(config: TrainConfig, env: Distributed, *, data: str, init: str | None = None) -> Stage:
    """Stage 1: MoCo v2 on the images and video frames under ``data``; ``init`` = weights or None."""
    check_queue(config, env)
    clips, items = image_items(data, config.cache_short_side, config.frames_per_video)
    encoder = imagenet_resnet(config.arch)
    load_init_weights(encoder, init)
    return Stage(MomentumContrast(encoder, config, rank=env.rank), ImageViews(clips, items, config))
