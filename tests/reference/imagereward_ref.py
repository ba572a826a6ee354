"""ImageReward's own `load` and `ImageReward.score`, on a tiny checkpoint — tests only.

The package hard-codes BLIP's ViT-L (`create_vit('large', …)`) and an MLP on 768 features;
the tiny checkpoint has a narrower ViT and BERT, so those two constructors are given the tiny
sizes. Everything else — loading (`ImageReward.load`, which reads med_config.json and the
`bert-base-uncased` tokenizer from the HF cache), preprocessing, tokenisation, the forward
pass and the standardisation — is the package's code as published.
"""

from __future__ import annotations

from pathlib import Path

from reference import shims


def load(checkpoint: Path, med_config: Path, vision_width: int, vision_depth: int, text_width: int):
    """The reference ImageReward model; `.score(prompt, pil_image)` is the function under test."""
    shims.activate()
    import sys

    import ImageReward.models.BLIP.blip_pretrain as blip_pretrain
    import ImageReward.utils as ir_utils
    from ImageReward.models.BLIP.vit import VisionTransformer

    ir_module = sys.modules[
        "ImageReward.ImageReward"
    ]  # the package re-exports a class by that name

    def create_vit(vit, image_size, use_grad_checkpointing=False, ckpt_layer=0, drop_path_rate=0):
        assert vit == "large", vit  # what the published model asks for
        encoder = VisionTransformer(
            img_size=image_size, patch_size=16, embed_dim=vision_width, depth=vision_depth,
            num_heads=vision_width // 64, use_grad_checkpointing=use_grad_checkpointing,
            ckpt_layer=ckpt_layer, drop_path_rate=0.1,  # published: 0.1 or drop_path_rate
        )  # fmt: skip
        return encoder, vision_width

    published_mlp = ir_module.MLP

    class TinyMLP(published_mlp):
        def __init__(self, input_size):
            assert input_size == 768, input_size
            super().__init__(text_width)

    blip_pretrain.create_vit = create_vit
    ir_module.MLP = TinyMLP
    try:
        return ir_utils.load(str(checkpoint), device="cpu", med_config=str(med_config))
    finally:
        ir_module.MLP = published_mlp
