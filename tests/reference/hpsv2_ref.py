"""HPSv2's own `hpsv2.img_score.score`, pointed at a tiny checkpoint — tests only.

The published scorer hard-codes `create_model_and_transforms('ViT-H-14', 'laion2B-s32B-b79K',
…)`, which downloads 3.9 GB of base weights before loading the HPS checkpoint over them. The
only change made here: the architecture name becomes a tiny model of the same family
(registered with hpsv2's bundled open_clip) and the base weights are not fetched, since the
checkpoint replaces every one of them (its `load_state_dict` is strict). Preprocessing,
tokenisation, checkpoint loading and the score are the package's own code.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from reference import shims


def scorer(tiny_arch: str, configs: Path):
    """A `score(image, prompt, checkpoint, version)` function backed by hpsv2's code."""
    shims.activate()
    import hpsv2.img_score as img_score
    from hpsv2.src import open_clip as hps_open_clip

    hps_open_clip.add_model_config(configs)
    original = hps_open_clip.create_model_and_transforms

    def create_model_and_transforms(model_name, pretrained=None, **kwargs):
        assert model_name == "ViT-H-14", model_name  # what the published scorer asks for
        return original(tiny_arch, None, **kwargs)

    img_score.create_model_and_transforms = create_model_and_transforms
    img_score.model_dict.clear()

    def score(image: Image.Image, prompt: str, checkpoint: Path, version: str = "v2.1") -> float:
        return float(img_score.score(image, prompt, cp=str(checkpoint), hps_version=version)[0])

    return score
