"""Llama 3.2 Vision as Meta ships it (paper §7): a ViT image encoder, a projection, and a frozen
Llama 3.1 text model with tanh-gated cross-attention blocks. Parameter names are Meta's
(llama-models `llama3/multimodal/model.py`), so Meta's consolidated checkpoints load as-is.

Image encoder (`vision_model.vision_encoder`): 14x14 patches (a linear map of the unfolded pixels,
Meta's `conv1._linear`), a class token, the positional embedding blended by a tanh gate with a
per-tile one (`gated_positional_embedding[h, w]` for the tile at row h, column w of the image's
tile grid), gated tile-position embeddings before and after the main transformer, the transformer
(LayerNorm, GELU MLP, no RoPE), then 8 gated "global" layers that attend over all tiles of an image.
Each tile's token count is padded to a multiple of 8; the features entering the layers named in
`return_intermediate` are concatenated with the final output (7,680 = 6 x 1,280 per token for 11B)
and projected to the text width (`vision_model.vision_projection`).

Text model (`text_model`): herd's own `Transformer` (the same modules and functions as every other
herd model) plus `cross_attention_layers`, run before the self-attention layers of Meta's fusion
schedule (every 4th, counted from the last). A cross-attention block is
    h = x + tanh(gate_attn) * Wo·Attn(q_norm(Wq RMSNorm(x)), k_norm(Wk v), Wv v)   (no RoPE)
    h = h + tanh(gate_ffwd) * row_mask * FFN(RMSNorm(h)),
where v are the image tokens and row_mask zeroes the text positions that see no image (Meta's
`full_text_row_masked_out_mask`; their attention output is zeroed too). With both gates at zero,
or with no image at all (the blocks are skipped), the logits are those of the text model bit for
bit. `<|image|>` is token id `vocab_size` (128256), the first of 8 learnable embedding rows
(`learnable_embedding`) after the frozen vocabulary.

Inputs are the tensors Hugging Face's `MllamaProcessor` makes (so either preprocessing can feed
the model): images [B, n_img, tiles, 3, H, W], aspect_ratio_ids [B, n_img] (1-based index into
`VisionArgs.supported_aspect_ratios()`, 0 = no image), aspect_ratio_mask [B, n_img, tiles] and
cross_attention_mask [B, T, n_img, tiles] (1 = this token sees this tile).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from herd.errors import HerdError
from herd.model.transformer import FeedForward, KVCache, RMSNorm, Transformer, sdpa_attention
from herd.vision.args import VisionArgs

# ---- image encoder ------------------------------------------------------------------------------


class Conv2dPatch(nn.Module):
    """Non-overlapping patches as Meta computes them: unfold, then one linear map (`_linear`),
    which is a stride-p convolution with weight `_linear.weight.view(width, 3, p, p)`."""

    def __init__(self, in_channels: int, width: int, patch: int):
        super().__init__()
        self.patch = patch
        self._linear = nn.Linear(in_channels * patch * patch, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, C, H, W] -> [N, patches, width]
        x = F.unfold(x, kernel_size=self.patch, stride=self.patch).permute(0, 2, 1)
        return F.linear(x, self._linear.weight)


class ImageAttention(nn.Module):
    def __init__(self, dim: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.wq = nn.Linear(dim, dim, bias=False)
        self.wk = nn.Linear(dim, dim, bias=False)
        self.wv = nn.Linear(dim, dim, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        B, S, _ = x.shape
        q, k, v = (w(x).view(B, S, self.n_heads, -1).transpose(1, 2) for w in (self.wq, self.wk, self.wv))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.wo(out.transpose(1, 2).reshape(B, S, -1))


class ImageFeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.c_fc = nn.Linear(dim, hidden, bias=True)
        self.c_proj = nn.Linear(hidden, dim, bias=True)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x)))


class ImageTransformerBlock(nn.Module):
    def __init__(self, dim: int, n_heads: int, mlp_ratio: float, gated: bool):
        super().__init__()
        self.attn = ImageAttention(dim, n_heads)
        self.ln_1 = nn.LayerNorm(dim)
        self.mlp = ImageFeedForward(dim, int(mlp_ratio * dim))
        self.ln_2 = nn.LayerNorm(dim)
        self.gated = gated
        if gated:
            self.gate_attn = nn.Parameter(torch.zeros(1))
            self.gate_ffn = nn.Parameter(torch.zeros(1))

    def forward(self, x, mask):
        a = self.attn(self.ln_1(x), mask)
        x = x + (self.gate_attn.tanh() * a if self.gated else a)
        f = self.mlp(self.ln_2(x))
        return x + (self.gate_ffn.tanh() * f if self.gated else f)


class ImageTransformer(nn.Module):
    def __init__(self, dim: int, layers: int, n_heads: int, mlp_ratio: float, gated: bool = False):
        super().__init__()
        self.resblocks = nn.ModuleList(ImageTransformerBlock(dim, n_heads, mlp_ratio, gated)
                                       for _ in range(layers))

    def forward(self, x, mask, return_intermediate=()):
        """-> (output, the inputs of the `return_intermediate` layers stacked on a last axis)."""
        taken = []
        for i, block in enumerate(self.resblocks):
            if i in return_intermediate:
                taken.append(x)
            x = block(x, mask)
        return x, (torch.stack(taken, dim=-1) if taken else None)


class TilePositionEmbedding(nn.Module):
    """A learned vector per tile position (row h, column w of the tile grid), tanh-gated."""

    def __init__(self, num_tiles: int, width: int):
        super().__init__()
        self.embedding = nn.Parameter(torch.zeros(num_tiles, num_tiles, 1, width))
        self.gate = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, ar: list[tuple[int, int]]) -> torch.Tensor:  # x [N, tiles, tok, width]
        N, nt, _, width = x.shape
        emb = torch.zeros(N, nt, 1, width, dtype=x.dtype, device=x.device)
        for (h, w), idx in _groups(ar, x.device).items():
            emb[idx, : h * w] = self.embedding[:h, :w].reshape(h * w, 1, width).to(x.dtype)
        return x + emb * self.gate.tanh()


def _groups(ar: list[tuple[int, int]], device) -> dict[tuple[int, int], torch.Tensor]:
    """The images of each tile layout (one indexing per layout, not per image)."""
    out: dict[tuple[int, int], list[int]] = {}
    for i, r in enumerate(ar):
        out.setdefault(tuple(r), []).append(i)
    return {r: torch.tensor(idx, device=device) for r, idx in out.items()}


class VisionEncoder(nn.Module):
    def __init__(self, a: VisionArgs):
        super().__init__()
        self.args = a
        grid = a.image_size // a.patch_size
        self.conv1 = Conv2dPatch(3, a.width, a.patch_size)
        self.class_embedding = nn.Parameter(torch.zeros(a.width))
        self.positional_embedding = nn.Parameter(torch.zeros(grid * grid + 1, a.width))
        self.ln_post = nn.LayerNorm(a.width)
        self.ln_pre = nn.LayerNorm(a.width)
        self.transformer = ImageTransformer(a.width, a.layers, a.heads, a.mlp_ratio)
        self.global_transformer = ImageTransformer(a.width, a.n_global_layers, a.heads,
                                                   a.mlp_ratio, gated=True)
        self.pre_tile_pos_embed = TilePositionEmbedding(a.max_num_tiles, a.width)
        self.post_tile_pos_embed = TilePositionEmbedding(a.max_num_tiles, a.width)
        self.gated_positional_embedding = nn.Parameter(
            torch.zeros(a.max_num_tiles, a.max_num_tiles, grid * grid + 1, a.width))
        self.gated_positional_embedding_gate = nn.Parameter(torch.zeros(1))

    def _positional(self, x, ar):
        g = self.gated_positional_embedding_gate.tanh()
        x = x + self.positional_embedding * (1 - g)
        extra = torch.zeros_like(x)
        for (h, w), idx in _groups(ar, x.device).items():
            extra[idx, : h * w] = (self.gated_positional_embedding[:h, :w]
                                   .reshape(h * w, *x.shape[2:]).to(x.dtype))
        return x + extra * g

    def forward(self, images: torch.Tensor, ar: list[tuple[int, int]]) -> torch.Tensor:
        """images [B, n_img, tiles, 3, H, W]; ar: (tile rows, tile columns) of each of the B*n_img
        images -> [B, n_img, tiles, tokens, width * (len(return_intermediate) + 1)]."""
        B, n_img, nt, C, H, W = images.shape
        N = B * n_img
        x = self.conv1(images.reshape(N * nt, C, H, W))
        _, npatch, dim = x.shape
        x = self.pre_tile_pos_embed(x.reshape(N, nt, npatch, dim), ar)
        x = x.reshape(N * nt, npatch, dim)
        x = torch.cat([self.class_embedding.to(x.dtype).expand(N * nt, 1, dim), x], dim=1)
        ntok = npatch + 1
        x = self._positional(x.reshape(N, nt, ntok, dim), ar)
        x = self.ln_pre(x)
        npad = 8 - ntok % 8  # Meta pads 1..8 tokens (8 when ntok is already a multiple of 8)
        x = F.pad(x, (0, 0, 0, npad))
        mask = encoder_mask(ar, nt, ntok, ntok + npad, x.dtype, x.device)
        x = x.view(N, nt * (ntok + npad), dim)
        x, inter = self.transformer(x, mask, self.args.return_intermediate)
        x = self.ln_post(x)
        x = self.post_tile_pos_embed(x.reshape(N, nt, ntok + npad, dim), ar)
        x, _ = self.global_transformer(x.reshape(N, nt * (ntok + npad), dim), mask)
        x = x.reshape(N, nt, ntok + npad, dim)[:, :, :ntok].reshape(B, n_img, nt, ntok, dim)
        inter = inter.reshape(N, nt, ntok + npad, -1)[:, :, :ntok].reshape(B, n_img, nt, ntok, -1)
        return torch.cat([x, inter], dim=-1)


def encoder_mask(ar, nt: int, ntok: int, padded: int, dtype, device) -> torch.Tensor:
    """Meta's encoder mask: a large negative bias between two tokens that are both padding (a tile
    past the image's h*w tiles, or one of the pad tokens); [N, 1, nt*padded, nt*padded]."""
    pad = torch.ones(len(ar), nt, padded, dtype=dtype, device=device)
    for (h, w), idx in _groups(ar, device).items():
        pad[idx, : h * w, :ntok] = 0
    pad = pad.view(len(ar), -1, 1)
    return (pad @ pad.transpose(1, 2) * torch.finfo(dtype).min).unsqueeze(1)


class CrossAttentionTransformerVision(nn.Module):
    def __init__(self, a: VisionArgs):
        super().__init__()
        self.vision_encoder = VisionEncoder(a)
        self.vision_projection = nn.Linear(a.vision_output_dim, a.text.dim, bias=True)

    def forward(self, images, ar):
        return self.vision_projection(self.vision_encoder(images, ar))


# ---- text model with cross-attention ------------------------------------------------------------


class CrossAttention(nn.Module):
    def __init__(self, args):
        super().__init__()
        D = args.head_dim
        self.head_dim = D
        self.wq = nn.Linear(args.dim, args.n_heads * D, bias=False)
        self.wk = nn.Linear(args.dim, args.n_kv_heads * D, bias=False)
        self.wv = nn.Linear(args.dim, args.n_kv_heads * D, bias=False)
        self.wo = nn.Linear(args.n_heads * D, args.dim, bias=False)
        self.q_norm = RMSNorm(D, eps=args.norm_eps)
        self.k_norm = RMSNorm(D, eps=args.norm_eps)

    def kv(self, vision: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Image tokens [B, S, dim] -> this layer's keys and values [B, Hkv, S, D] (computed once
        per image, reused by every decoding step)."""
        B, S, _ = vision.shape
        k = self.k_norm(self.wk(vision).view(B, S, -1, self.head_dim)).transpose(1, 2)
        v = self.wv(vision).view(B, S, -1, self.head_dim).transpose(1, 2)
        return k, v

    def forward(self, x, kv, mask, rows):
        B, T, _ = x.shape
        q = self.q_norm(self.wq(x).view(B, T, -1, self.head_dim)).transpose(1, 2)
        out = sdpa_attention(q, kv[0], kv[1], None, mask) * rows
        return self.wo(out.transpose(1, 2).reshape(B, T, -1))


class CrossAttentionTransformerBlock(nn.Module):
    def __init__(self, args):
        super().__init__()
        self.attention = CrossAttention(args)
        self.attention_norm = RMSNorm(args.dim, eps=args.norm_eps)
        self.gate_attn = nn.Parameter(torch.zeros(1))
        self.feed_forward = FeedForward(args.dim, args.ffn_hidden_dim)
        self.ffn_norm = RMSNorm(args.dim, eps=args.norm_eps)
        self.gate_ffwd = nn.Parameter(torch.zeros(1))

    def forward(self, x, kv, mask, rows):
        """rows [B, 1, T, 1]: 1 where the text position sees an image, else 0."""
        h = x + self.gate_attn.tanh() * self.attention(self.attention_norm(x), kv, mask, rows)
        return h + self.gate_ffwd.tanh() * (rows[:, 0] * self.feed_forward(self.ffn_norm(h)))


class CrossAttentionTransformerText(Transformer):
    """herd's Transformer (its layers, norm, output and forward unchanged) plus Meta's learnable
    embedding rows and cross-attention blocks."""

    def __init__(self, a: VisionArgs):
        super().__init__(a.text)
        self.fusion_schedule = a.fusion_schedule
        self.learnable_embedding = nn.Embedding(a.n_learnable_embeddings, a.text.dim)
        self.cross_attention_layers = nn.ModuleList(CrossAttentionTransformerBlock(a.text)
                                                    for _ in self.fusion_schedule)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids below vocab_size read the frozen table, the rest the learnable rows."""
        V = self.tok_embeddings.num_embeddings
        new = tokens >= V
        h = self.tok_embeddings(tokens.clamp(max=V - 1))
        if bool(new.any()):
            extra = self.learnable_embedding((tokens - V).clamp(min=0)).to(h.dtype)
            h = torch.where(new[..., None], extra, h)
        return h

    def cross_kv(self, vision: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Projected image tokens [B, n_img, tiles, tok, dim] -> (K, V) of each cross-attention layer."""
        flat = vision.reshape(vision.shape[0], -1, vision.shape[-1])
        return [layer.attention.kv(flat) for layer in self.cross_attention_layers]

    def forward_multimodal(self, tokens, kv, mask, rows, *, targets=None, pos=None,
                           cache: KVCache | None = None,
                           cache_pos=None, kv_len=None, attn_mask=None, last_only: bool = False):
        """The text forward with cross-attention before the fusion-schedule layers. Everything else
        is `Transformer.forward`'s (same functions, same order), so zero gates give its bits."""
        _B, T = tokens.shape
        if cache is not None:
            if cache_pos is None:
                cache_pos = 0
            if attn_mask is not None:
                kv_len = attn_mask.shape[-1]
            elif kv_len is None:
                kv_len = cache_pos + T
            if pos is None:
                pos = (torch.arange(cache_pos, cache_pos + T, device=tokens.device)
                       if isinstance(cache_pos, int) else cache_pos)
        if pos is not None and pos.dim() == 1:
            pos = pos[None]
        top = T - 1 if pos is None else int(pos.max())
        if top >= self.args.max_seq_len:
            raise HerdError(f"position {top} is beyond the model's max_seq_len ({self.args.max_seq_len})")
        freqs = self.rope_factors(pos, T)
        h = self.embed(tokens)
        xi = {layer_id: i for i, layer_id in enumerate(self.fusion_schedule)}
        n = len(self.layers)
        trick = last_only and targets is None
        for i, layer in enumerate(self.layers):
            if i in xi:
                h = self.cross_attention_layers[xi[i]](h, kv[xi[i]], mask, rows)
            lkv = cache.layer(layer.layer_id) if cache is not None else None
            h = layer(h, freqs, last_only=trick and i == n - 1, segments=None, cache=lkv, cache_pos=cache_pos,
                      kv_len=kv_len, attn_mask=attn_mask)
        h = self.norm(h)
        if targets is not None:
            from herd.model.loss import cross_entropy_sum

            return cross_entropy_sum(h, self.output.weight, targets)
        if last_only:
            h = h[:, -1:]
        return self.output(h).float()


def cross_masks(cross_attention_mask: torch.Tensor, n_tok: int) -> tuple[torch.Tensor, torch.Tensor]:
    """HF's cross_attention_mask [B, T, n_img, tiles] (1 = attend) -> (boolean attention mask
    [B, 1, T, n_img*tiles*n_tok], row mask [B, 1, T, 1]). A row that sees no tile attends to every
    image token (Meta multiplies its -inf bias by zero) and its output is then zeroed."""
    m = cross_attention_mask.to(torch.bool)
    B, T = m.shape[:2]
    m = m.reshape(B, T, -1).repeat_interleave(n_tok, dim=2).unsqueeze(1)
    rows = m.any(dim=-1, keepdim=True)
    return m | ~rows, rows


class VisionLlama(nn.Module):
    """Meta's `CrossAttentionTransformer`: `vision_model` + `text_model`."""

    def __init__(self, args: VisionArgs):
        super().__init__()
        self.args = args
        self.vision_model = CrossAttentionTransformerVision(args)
        self.text_model = CrossAttentionTransformerText(args)

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def build(cls, args: VisionArgs, device="cpu", dtype: torch.dtype = torch.float32, init: bool = True,
              seed: int | None = None) -> VisionLlama:
        with torch.device("meta"):
            model = cls(args)
        if str(device) == "meta":
            return model
        model.to_empty(device=device)
        if init:
            if seed is not None:
                torch.manual_seed(seed)
            model.init_weights()
        model = model.to(dtype)
        model.text_model.reset_rope()
        return model

    @torch.no_grad()
    def init_weights(self):
        """The text model as herd initialises one from scratch; the encoder as Meta's constructor
        (N(0, width^-1/2) for class, positional and tile embeddings; N(0, 0.02) matrices, zero
        biases, LayerNorm 1/0); all gates 0, so a fresh adapter leaves the text model's outputs
        unchanged; q/k norms 1; learnable rows like the embedding (N(0, 1))."""
        t = self.text_model
        plan = dict(Transformer.init_plan(_TextView(t)))
        params = dict(t.named_parameters())
        for name, fn in plan.items():
            fn(params[name])
        nn.init.normal_(t.learnable_embedding.weight, std=1.0)
        for blk in t.cross_attention_layers:
            for lin in (blk.attention.wq, blk.attention.wk, blk.attention.wv, blk.feed_forward.w1,
                        blk.feed_forward.w3):
                nn.init.trunc_normal_(lin.weight, std=0.02, a=-0.06, b=0.06)
            for lin in (blk.attention.wo, blk.feed_forward.w2):
                nn.init.trunc_normal_(lin.weight, std=0.02 / math.sqrt(2 * len(t.layers)), a=-0.06, b=0.06)
            for norm in (blk.attention.q_norm, blk.attention.k_norm, blk.attention_norm, blk.ffn_norm):
                nn.init.ones_(norm.weight)
            nn.init.zeros_(blk.gate_attn)
            nn.init.zeros_(blk.gate_ffwd)
        self.init_adapter_encoder()

    @torch.no_grad()
    def init_adapter_encoder(self):
        enc = self.vision_model.vision_encoder
        scale = self.args.width ** -0.5
        for p in (enc.class_embedding, enc.positional_embedding, enc.gated_positional_embedding):
            nn.init.normal_(p, std=scale)
        for te in (enc.pre_tile_pos_embed, enc.post_tile_pos_embed):
            nn.init.normal_(te.embedding, std=scale)
            nn.init.zeros_(te.gate)
        nn.init.zeros_(enc.gated_positional_embedding_gate)
        for name, p in enc.named_parameters():
            if name.startswith(("transformer.", "global_transformer.", "conv1")):
                if name.endswith(("gate_attn", "gate_ffn")):
                    nn.init.zeros_(p)
                elif p.dim() == 2:
                    nn.init.normal_(p, std=0.02)
                elif name.endswith(("ln_1.weight", "ln_2.weight")):
                    nn.init.ones_(p)
                else:
                    nn.init.zeros_(p)
        for ln in (enc.ln_pre, enc.ln_post):
            nn.init.ones_(ln.weight)
            nn.init.zeros_(ln.bias)
        proj = self.vision_model.vision_projection
        nn.init.normal_(proj.weight, std=self.args.vision_output_dim ** -0.5)
        nn.init.zeros_(proj.bias)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def adapter_parameters(self):
        """(name, parameter) of what adapter training updates: the encoder, the projection, the
        cross-attention blocks and the learnable embedding rows (the text model stays frozen)."""
        for name, p in self.named_parameters():
            if name.startswith(("vision_model.", "text_model.cross_attention_layers.",
                                "text_model.learnable_embedding.")):
                yield name, p

    # ---- forward ------------------------------------------------------------------------------
    def aspect_ratios(self, aspect_ratio_ids: torch.Tensor) -> list[tuple[int, int]]:
        """HF's aspect-ratio ids [B, n_img] -> Meta's (tile rows, tile columns) per image; id 0
        (a padding image) is one tile, as Meta stacks padding images."""
        table = [(1, 1)] + self.args.supported_aspect_ratios()
        ids = aspect_ratio_ids.reshape(-1).tolist()
        bad = [i for i in ids if not 0 <= i < len(table)]
        if bad:
            raise HerdError(f"aspect_ratio_id {bad[0]} is out of range: this model has {len(table) - 1} "
                            f"aspect ratios for up to {self.args.max_num_tiles} tiles")
        return [table[i] for i in ids]

    def encode_images(self, images: torch.Tensor, aspect_ratio_ids: torch.Tensor) -> torch.Tensor:
        """-> projected image tokens [B, n_img, tiles, tokens, text dim]."""
        a = self.args
        if images.dim() != 6 or images.shape[3] != 3 or images.shape[4] != a.image_size \
                or images.shape[5] != a.image_size:
            raise HerdError(f"images must be [batch, images, tiles, 3, {a.image_size}, {a.image_size}] for "
                            f"this model, got {list(images.shape)}")
        nt = images.shape[2]
        if nt > a.max_num_tiles:
            raise HerdError(f"{nt} tiles per image; this model takes at most {a.max_num_tiles}")
        if nt < a.max_num_tiles:  # the tile embeddings are laid out for max_num_tiles; pad with empty tiles
            images = F.pad(images, (0, 0, 0, 0, 0, 0, 0, a.max_num_tiles - nt))
        w = self.vision_model.vision_projection.weight
        vision = self.vision_model(images.to(w.dtype), self.aspect_ratios(aspect_ratio_ids))
        return vision[:, :, :nt]

    def forward(self, tokens: torch.Tensor, images: torch.Tensor | None = None,
                aspect_ratio_ids: torch.Tensor | None = None, aspect_ratio_mask: torch.Tensor | None = None,
                cross_attention_mask: torch.Tensor | None = None, *, vision_kv=None,
                **kw) -> torch.Tensor:
        """tokens [B, T] -> fp32 logits [B, T, vocab] (or the loss with `targets=`; `cache=`,
        `cache_pos=`, `attn_mask=`, `last_only=` as in `Transformer.forward`). Without images the
        cross-attention blocks are skipped and this is the text model's own forward. `vision_kv`:
        the cross-attention keys/values of `encode_kv` (decoding reuses them).
        `aspect_ratio_mask` is accepted for HF's processor output; the tiles an image has follow
        from its aspect ratio, as in Meta's model."""
        if images is None and vision_kv is None:
            if bool((tokens >= self.args.text.vocab_size).any()):
                raise HerdError("the prompt has an <|image|> token but no image was given")
            return self.text_model(tokens, **kw)
        if cross_attention_mask is None:
            raise HerdError("cross_attention_mask is required with images: [batch, tokens, images, tiles], "
                            "1 where a token sees a tile")
        if vision_kv is None:
            if aspect_ratio_ids is None:
                raise HerdError("aspect_ratio_ids are required with images")
            vision_kv = self.encode_kv(images, aspect_ratio_ids)
        B, T = tokens.shape
        if cross_attention_mask.shape[:2] != (B, T):
            raise HerdError(f"cross_attention_mask has shape {list(cross_attention_mask.shape)}; expected "
                            f"[{B}, {T}, images, tiles] for these tokens")
        n_tok = vision_kv[0][0].shape[2] // (cross_attention_mask.shape[2] * cross_attention_mask.shape[3])
        mask, rows = cross_masks(cross_attention_mask, n_tok)
        return self.text_model.forward_multimodal(tokens, vision_kv, mask,
                                                  rows.to(vision_kv[0][0].dtype), **kw)

    def encode_kv(self, images, aspect_ratio_ids):
        return self.text_model.cross_kv(self.encode_images(images, aspect_ratio_ids))


class _TextView:
    """What `Transformer.init_plan` reads (args, layers, named_parameters) restricted to the text
    model's own parameters, so its plan and coverage check apply unchanged."""

    def __init__(self, t: CrossAttentionTransformerText):
        self.args, self.layers = t.args, t.layers
        self._t = t

    def named_parameters(self):
        for name, p in self._t.named_parameters():
            if not name.startswith(("cross_attention_layers.", "learnable_embedding.")):
                yield name, p


__all__ = [
    "CrossAttentionTransformerText",
    "CrossAttentionTransformerVision",
    "VisionEncoder",
    "VisionLlama",
    "cross_masks",
    "encoder_mask",
]
