"""Backbones: each maps (x_t, t, conditioning tokens) to a velocity; `BACKBONES` names them.

Every backbone takes `(x, t, cond, cond_mask, pooled=None, state=None)` and returns
`(velocity, state)`; `state` is the latent self-conditioning carry (RIN) or None.
"""

from torch import nn

from miro_train.backbones.dit import DiT
from miro_train.backbones.rin import RIN
from miro_train.backbones.unet import UNet

BACKBONES: dict[str, type[nn.Module]] = {"rin": RIN, "dit": DiT, "unet": UNet}

__all__ = ["BACKBONES", "RIN", "DiT", "UNet"]
