"""Shared helpers of the vision tests: tiny configs, random inputs in HF's processor layout, and
Meta's llama-models reference (`llama3/multimodal/model.py`) built at those tiny sizes."""

from __future__ import annotations

import os
import sys
import tempfile
import types

import torch

from herd.model.args import ModelArgs
from herd.vision.args import VisionArgs

# Several architectures: GQA 1/2/4, fusion schedules of 1-3 blocks, 1-2 intermediate features,
# tile sizes with 17 and 50 tokens (padded to 24 and 56), 2 or 4 tiles.
CONFIGS = {
    "gqa2-4tiles": VisionArgs(text=ModelArgs(dim=64, n_layers=4, n_heads=4, n_kv_heads=2, vocab_size=300,
                                             multiple_of=32, max_seq_len=64, use_scaled_rope=True),
                              n_cross_layers=2, image_size=28, patch_size=7, width=32, layers=4, heads=4,
                              n_global_layers=2, return_intermediate=(1, 3), max_num_tiles=4),
    "gqa4-3xattn": VisionArgs(text=ModelArgs(dim=64, n_layers=5, n_heads=4, n_kv_heads=1, vocab_size=260,
                                             multiple_of=16, ffn_dim_multiplier=1.3, max_seq_len=64),
                              n_cross_layers=3, image_size=20, patch_size=4, width=48, layers=3, heads=3,
                              n_global_layers=2, return_intermediate=(1, 2), max_num_tiles=4),
    "mha-2tiles": VisionArgs(text=ModelArgs(dim=32, n_layers=3, n_heads=2, vocab_size=200, multiple_of=16,
                                            max_seq_len=64, rope_theta=10000.0),
                             n_cross_layers=1, image_size=14, patch_size=7, width=16, layers=2, heads=2,
                             n_global_layers=1, return_intermediate=(1,), max_num_tiles=2),
}


def sharpen_(sd: dict, gen: torch.Generator) -> dict:
    """Random weights at a trained model's scale, non-zero gates (tanh ~ +-0.5), random norms:
    every path shows in the logits."""
    out = {}
    for k, v in sd.items():
        if k.endswith(("gate", "gate_attn", "gate_ffn", "gate_ffwd", "_gate")):
            out[k] = (torch.rand(v.shape, generator=gen) - 0.5) * 1.6
        elif v.dim() == 1:
            out[k] = 1 + 0.1 * torch.randn(v.shape, generator=gen) if k.endswith("weight") \
                else 0.1 * torch.randn(v.shape, generator=gen)
        elif k.endswith(("tok_embeddings.weight", "learnable_embedding.weight")):
            out[k] = torch.randn(v.shape, generator=gen)
        elif v.dim() == 2 and "embedding" not in k:
            out[k] = torch.randn(v.shape, generator=gen) / v.shape[1] ** 0.5
        else:
            out[k] = torch.randn(v.shape, generator=gen) * 0.5
    return out


def random_inputs(a: VisionArgs, batch: int, T: int, n_img: int, seed: int, image_at=None, tiles=None):
    """Tokens with <|image|> at `image_at[b][i]`, images, HF-style aspect_ratio_ids/mask and a
    cross-attention mask where each token attends to the latest image at or before it (HF's
    processor rule, images in order), and the rows before the first image see nothing."""
    g = torch.Generator().manual_seed(seed)
    ratios = a.supported_aspect_ratios()
    nt = a.max_num_tiles
    tokens = torch.randint(0, a.text.vocab_size, (batch, T), generator=g)
    images = torch.randn(batch, n_img, nt, 3, a.image_size, a.image_size, generator=g)
    ids = torch.zeros(batch, n_img, dtype=torch.long)
    armask = torch.zeros(batch, n_img, nt, dtype=torch.long)
    cam = torch.zeros(batch, T, n_img, nt, dtype=torch.long)
    for b in range(batch):
        for i in range(n_img):
            pick = tiles[b][i] if tiles else int(torch.randint(0, len(ratios), (1,), generator=g))
            h, w = ratios[pick]
            ids[b, i] = pick + 1
            armask[b, i, : h * w] = 1
            images[b, i, h * w:] = 0
            start = image_at[b][i] if image_at else 1 + i * 3
            end = image_at[b][i + 1] if image_at and i + 1 < n_img else T
            tokens[b, start] = a.image_token_id
            cam[b, start:end, i, : h * w] = 1
    return tokens, images, ids, armask, cam


# ---- Meta's reference ---------------------------------------------------------------------------
def meta_multimodal():
    """llama-models' `llama3.multimodal.model`. That file imports its image transform, which imports
    torchvision (not importable beside this torch); the tests never build the transform, so stub
    modules stand in while the file is imported and are removed again afterwards (transformers'
    checks for torchvision must not see them)."""
    if "llama_models.llama3.multimodal.model" in sys.modules:
        return sys.modules["llama_models.llama3.multimodal.model"]
    names = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional")
    saved = {n: sys.modules.get(n) for n in names}
    tv, tr, fn = (types.ModuleType(n) for n in names)
    tr.functional = fn
    tv.transforms = tr
    sys.modules.update(dict(zip(names, (tv, tr, fn))))
    try:
        import llama_models.llama3.multimodal.model as mm
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m
    return mm


def meta_group():
    """A one-process gloo group and fairscale's model-parallel state (size 1); -> teardown."""
    import torch.distributed as dist
    from fairscale.nn.model_parallel import initialize as fs_init

    created = not dist.is_initialized()
    if created:
        fd, init_file = tempfile.mkstemp(prefix="herd-gloo-")
        os.close(fd)
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=0, world_size=1)
    mp_created = not fs_init.model_parallel_is_initialized()
    if mp_created:
        fs_init.initialize_model_parallel(1)

    def teardown():
        if mp_created:
            fs_init.destroy_model_parallel()
        if created:
            dist.destroy_process_group()

    return teardown


class MetaReference(torch.nn.Module):
    """Meta's `CrossAttentionTransformer` at a tiny size: its `CrossAttentionTransformerVision`
    hard-codes the 1280-wide, 32-layer encoder, so the same two modules are assembled around a
    `VisionEncoder` of the config's size (Meta's class, Meta's forward). State-dict keys are those
    of Meta's consolidated checkpoints."""

    def __init__(self, a: VisionArgs, params: dict):
        super().__init__()
        from fairscale.nn.model_parallel.layers import ColumnParallelLinear
        from llama_models.llama3.args import ModelArgs as MetaArgs

        mm = meta_multimodal()

        self.mm = mm
        self.a = a
        vis = mm.CrossAttentionTransformerVision.__new__(mm.CrossAttentionTransformerVision)
        torch.nn.Module.__init__(vis)
        vis.vision_input_dim = a.vision_output_dim
        vis.image_res = a.image_size
        vis.max_num_chunks = a.max_num_tiles
        vis.patch_size = a.patch_size
        vis.vision_encoder = mm.VisionEncoder(max_num_tiles=a.max_num_tiles, image_size=a.image_size,
                                              patch_size=a.patch_size, width=a.width, layers=a.layers,
                                              heads=a.heads, mlp_ratio=a.mlp_ratio,
                                              n_global_layers=a.n_global_layers, global_model=True,
                                              return_intermediate=list(a.return_intermediate))
        vis.vision_projection = ColumnParallelLinear(a.vision_output_dim, a.text.dim, bias=True,
                                                     init_method=lambda x: x)
        self.vision_model = vis
        self.text_model = mm.CrossAttentionTransformerText(MetaArgs(max_batch_size=4, **params))

    @torch.no_grad()
    def logits(self, tokens, images, aspect_ratio_ids, cross_attention_mask):
        """Meta's own steps (`compute_vision_tokens_masks` + `forward`) from HF-layout tensors."""
        a = self.a
        table = [(1, 1)] + a.supported_aspect_ratios()
        ar = torch.tensor([[table[i] for i in row] for row in aspect_ratio_ids.tolist()], dtype=torch.long)
        B, T = tokens.shape
        vision_tokens = self.vision_model(images, ar)
        dim = vision_tokens.shape[-1]
        xattn_caches = torch.stack([layer.compute_xattn_kv_cache(vision_tokens.view(B, -1, dim))
                                    for layer in self.text_model.cross_attention_layers])
        neg = torch.finfo(torch.float32).min
        padded = torch.where(cross_attention_mask.bool(), 0.0, neg).float()
        self.text_model.setup_cache(B, torch.device("cpu"), torch.float32)
        xmask, rows = self.text_model._get_xattn_mask(num_tokens=T, text_device="cpu",
                                                      text_dtype=torch.float32, vision_tokens=vision_tokens,
                                                      cross_attention_masks=padded)
        pos = torch.arange(T)
        h = self.text_model.get_partially_trainable_embedding(tokens[:, pos])
        return self.text_model.forward(position_ids=pos, h=h, xattn_mask=xmask[:, :, pos],
                                       full_text_row_masked_out_mask=rows[:, :, pos],
                                       xattn_caches=xattn_caches)
