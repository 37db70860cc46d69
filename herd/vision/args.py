"""The shapes of Llama 3.2 Vision (paper §7): a Llama 3.1 text model (herd's `ModelArgs`) plus the
image encoder and the cross-attention adapter, with Meta's names and defaults.

Meta's params.json of Llama-3.2-11B-Vision holds the text fields plus `vision_chunk_size` (560),
`vision_max_num_chunks` (4) and `vision_num_cross_attention_layers` (8); the encoder's own sizes
(width 1280, 32 layers, 16 heads, patch 14, 8 gated global layers, intermediate features entering
layers 3, 7, 15, 23, 30) are constants of Meta's code (`CrossAttentionTransformerVision`). herd keeps
them as fields so that tiny models of the same architecture can be built and tested.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from herd.errors import HerdError
from herd.model.args import ModelArgs

# Meta's constants for the released models (llama-models `CrossAttentionTransformerVision`).
META_RETURN_INTERMEDIATE = (3, 7, 15, 23, 30)


@dataclass
class VisionArgs:
    text: ModelArgs = field(default_factory=ModelArgs)
    n_cross_layers: int = 8  # vision_num_cross_attention_layers
    image_size: int = 560  # vision_chunk_size: the side of one tile
    max_num_tiles: int = 4  # vision_max_num_chunks
    patch_size: int = 14
    width: int = 1280
    layers: int = 32
    heads: int = 16
    n_global_layers: int = 8
    mlp_ratio: float = 4.0
    return_intermediate: tuple[int, ...] = META_RETURN_INTERMEDIATE
    n_learnable_embeddings: int = 8  # rows after the text vocabulary; the first is <|image|>

    def __post_init__(self):
        if isinstance(self.text, dict):
            self.text = ModelArgs.from_dict(self.text)
        self.return_intermediate = tuple(int(i) for i in self.return_intermediate)
        for name in ("n_cross_layers", "image_size", "max_num_tiles", "patch_size", "width", "layers",
                     "heads",
                     "n_global_layers", "n_learnable_embeddings"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise HerdError(f"vision config: {name} must be a positive integer, got {v!r}")
        if self.n_cross_layers > self.text.n_layers:
            raise HerdError(f"vision config: {self.n_cross_layers} cross-attention layers for a text model "
                            f"of {self.text.n_layers} layers; use at most one per layer")
        if self.image_size % self.patch_size:
            raise HerdError(f"vision config: image_size {self.image_size} is not a multiple of patch_size "
                            f"{self.patch_size}")
        if self.width % self.heads:
            raise HerdError(f"vision config: width {self.width} is not divisible by heads {self.heads}")
        if any(not 0 <= i < self.layers for i in self.return_intermediate):
            raise HerdError(f"vision config: return_intermediate {list(self.return_intermediate)} must name "
                            f"layers 0..{self.layers - 1}")
        if self.text.tie_embeddings:
            raise HerdError("vision config: Llama 3.2 Vision's text model has an untied output layer")

    @property
    def image_token_id(self) -> int:
        """<|image|>: the first row after the text vocabulary (128256 for Llama 3)."""
        return self.text.vocab_size

    @property
    def n_patches(self) -> int:
        """Tokens per tile: the patches plus the class token."""
        return (self.image_size // self.patch_size) ** 2 + 1

    @property
    def vision_output_dim(self) -> int:
        return self.width * (len(self.return_intermediate) + 1)

    @property
    def fusion_schedule(self) -> list[int]:
        """The text layers a cross-attention block runs before (Meta's `_init_fusion_schedule`):
        spread uniformly, counted from the last layer (3, 7, ..., 31 for 8 in 32)."""
        layers = list(range(self.text.n_layers))
        k = -(-len(layers) // self.n_cross_layers)
        return layers[::-1][::k][: self.n_cross_layers][::-1]

    def supported_aspect_ratios(self) -> list[tuple[int, int]]:
        """(tiles in height, tiles in width) of each aspect-ratio id minus one (HF's order)."""
        n = self.max_num_tiles
        return [(h, w) for h in range(1, n + 1) for w in range(1, n + 1) if h * w <= n]

    def num_params(self) -> int:
        from herd.vision.model import VisionLlama

        return sum(p.numel() for p in VisionLlama.build(self, device="meta").parameters())

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["return_intermediate"] = list(self.return_intermediate)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> VisionArgs:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise HerdError(f"vision config: unknown field(s) {', '.join(unknown)}")
        return cls(**d)

    def replace(self, **kw) -> VisionArgs:
        return dataclasses.replace(self, **kw)


def _text(dim, n_layers, n_heads, multiple_of):
    return ModelArgs(dim=dim, n_layers=n_layers, n_heads=n_heads, n_kv_heads=8, multiple_of=multiple_of,
                     ffn_dim_multiplier=1.3, use_scaled_rope=True, max_seq_len=131072)


VISION_PRESETS: dict[str, VisionArgs] = {
    # Llama 3.2 Vision [llama-models sku_list; params.json]: text model of Llama 3.1 8B / 70B.
    "llama3.2-11b-vision": VisionArgs(text=_text(4096, 32, 32, 1024), n_cross_layers=8),
    "llama3.2-90b-vision": VisionArgs(text=_text(8192, 80, 64, 4096), n_cross_layers=20),
    # Tiny models of the same architecture for CPU work and tests (the encoder's 8 global layers,
    # several intermediate features, 4 tiles); vocab_size fits herd's small tokenizers.
    "vision-tiny": VisionArgs(text=ModelArgs(dim=64, n_layers=4, n_heads=4, n_kv_heads=2, vocab_size=512,
                                             multiple_of=32, max_seq_len=256),
                              n_cross_layers=2, image_size=28, patch_size=7, width=32, layers=4, heads=4,
                              n_global_layers=2, return_intermediate=(1, 3)),
    "vision-small": VisionArgs(text=ModelArgs(dim=256, n_layers=4, n_heads=4, n_kv_heads=2, vocab_size=4096,
                                              multiple_of=64, max_seq_len=2048),
                               n_cross_layers=2, image_size=28, patch_size=4, width=128, layers=4, heads=4,
                               n_global_layers=2, return_intermediate=(1, 3)),
}


def get_vision_preset(name: str, **overrides) -> VisionArgs:
    if name not in VISION_PRESETS:
        raise HerdError(f"unknown vision preset {name!r}; choose one of: {', '.join(VISION_PRESETS)}")
    a = dataclasses.replace(VISION_PRESETS[name], text=dataclasses.replace(VISION_PRESETS[name].text))
    return a.replace(**overrides) if overrides else a


__all__ = ["META_RETURN_INTERMEDIATE", "VISION_PRESETS", "VisionArgs", "get_vision_preset"]
