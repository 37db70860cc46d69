"""Image preprocessing of Llama 3.2 Vision (paper §7.2: up to 4 tiles of 560² for 11B/90B), in
torch/PIL and equal to Hugging Face's `MllamaImageProcessor` (and so to the tensors its processor
hands the model):

1. choose the tile canvas: among the (rows, columns) grids of at most `max_tiles` tiles, the one
   that needs the smallest upscaling, else the least downscaling, ties to the smallest area;
2. resize without distortion to fit the canvas (PIL bilinear; never below one tile's side);
3. pad right/bottom with black to the canvas, rescale by 1/255 (in float64, then fp32), normalise
   with CLIP's mean and std;
4. cut into tiles in row-major order; pad the tile axis to `max_tiles`.

`aspect_ratio_ids` index `supported_aspect_ratios(max_tiles)` from 1 (0 = no image), and
`cross_attention_mask` follows HF's rule: each `<|image|>` token and the text after it, up to the
next image, see that image's tiles (a run of consecutive image tokens shares the text after it).
"""

from __future__ import annotations

import itertools
import math

import torch

from herd.errors import HerdError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def supported_aspect_ratios(max_tiles: int) -> list[tuple[int, int]]:
    """(tile rows, tile columns) with rows*columns <= max_tiles, in HF's order."""
    return [(h, w) for h in range(1, max_tiles + 1) for w in range(1, max_tiles + 1) if h * w <= max_tiles]


def optimal_canvas(height: int, width: int, max_tiles: int, tile: int) -> tuple[int, int]:
    """The canvas (height, width) in pixels that the image is fitted into (HF's
    `get_optimal_tiled_canvas`, the same float arithmetic)."""
    best = None
    for h, w in supported_aspect_ratios(max_tiles):
        ch, cw = h * tile, w * tile
        sh, sw = ch / height, cw / width
        scale = min(sw, sh)  # the limiting side
        up = scale >= 1
        # rank: upscaling options first (smallest scale), then downscaling (largest scale), then area
        key = (0 if up else 1, scale if up else -scale, ch * cw)
        if best is None or key < best[0]:
            best = (key, (ch, cw))
    return best[1]


def fit_to_canvas(height: int, width: int, canvas_h: int, canvas_w: int, tile: int) -> tuple[int, int]:
    """New (height, width) keeping the aspect ratio (HF's `get_image_size_fit_to_canvas`)."""
    tw = min(max(width, tile), canvas_w)
    th = min(max(height, tile), canvas_h)
    sh, sw = th / height, tw / width
    if sw < sh:
        return min(math.floor(height * sw) or 1, th), tw
    return th, min(math.floor(width * sh) or 1, tw)


def image_tiles(image, tile: int = 560, max_tiles: int = 4, mean=CLIP_MEAN, std=CLIP_STD):
    """A PIL image -> (tiles [n, 3, tile, tile] fp32, (rows, columns))."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        raise HerdError(f"expected a PIL image, got {type(image).__name__}")
    image = image.convert("RGB")
    W, H = image.size
    ch, cw = optimal_canvas(H, W, max_tiles, tile)
    nh, nw = fit_to_canvas(H, W, ch, cw, tile)
    if (nw, nh) != (W, H):
        image = image.resize((nw, nh), resample=Image.Resampling.BILINEAR)
    x = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(nh, nw, 3).permute(2, 0, 1)
    canvas = torch.zeros(3, ch, cw, dtype=torch.float64)
    canvas[:, :nh, :nw] = x.double()
    canvas = (canvas * (1 / 255)).float()
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    canvas = (canvas - m) / s
    rows, cols = ch // tile, cw // tile
    tiles = canvas.view(3, rows, tile, cols, tile).permute(1, 3, 0, 2, 4).reshape(rows * cols, 3, tile, tile)
    return tiles.contiguous(), (rows, cols)


def process_images(batch, tile: int = 560, max_tiles: int = 4, mean=CLIP_MEAN, std=CLIP_STD) -> dict:
    """A batch of lists of PIL images -> the tensors of HF's processor: pixel_values
    [B, n_img, max_tiles, 3, tile, tile], aspect_ratio_ids [B, n_img], aspect_ratio_mask
    [B, n_img, max_tiles], and num_tiles (a list of lists)."""
    ratios = supported_aspect_ratios(max_tiles)
    B, n_img = len(batch), max((len(row) for row in batch), default=0)
    if n_img == 0:
        raise HerdError("no images to process")
    pixels = torch.zeros(B, n_img, max_tiles, 3, tile, tile)
    ids = torch.zeros(B, n_img, dtype=torch.long)
    mask = torch.zeros(B, n_img, max_tiles, dtype=torch.long)
    mask[:, :, 0] = 1
    num_tiles = []
    for b, row in enumerate(batch):
        num_tiles.append([])
        for i, im in enumerate(row):
            t, (h, w) = image_tiles(im, tile, max_tiles, mean, std)
            pixels[b, i, : len(t)] = t
            ids[b, i] = ratios.index((h, w)) + 1
            mask[b, i, : h * w] = 1
            num_tiles[b].append(h * w)
    return {"pixel_values": pixels, "aspect_ratio_ids": ids, "aspect_ratio_mask": mask,
            "num_tiles": num_tiles}


def image_spans(tokens: list[int], image_token_id: int) -> list[tuple[int, int]]:
    """(start, end) of the text each image token's image is seen by (HF's rule)."""
    locs = [i for i, t in enumerate(tokens) if t == image_token_id]
    if not locs:
        return []
    spans = [[a, b] for a, b in itertools.pairwise(locs)] + [[locs[-1], len(tokens)]]
    last = spans[-1][1]
    for s in spans[::-1]:
        if s[0] == s[1] - 1:  # consecutive image tokens: all see the text after the run
            s[1] = last
        last = s[1]
    return [(a, b) for a, b in spans]


def cross_attention_mask(batch_tokens: list[list[int]], num_tiles: list[list[int]], image_token_id: int,
                         max_tiles: int = 4, length: int | None = None) -> torch.Tensor:
    """[B, length, n_img, max_tiles] int64: 1 where a token sees a tile of an image."""
    length = length or max(len(t) for t in batch_tokens)
    n_img = max((len(n) for n in num_tiles), default=0)
    out = torch.zeros(len(batch_tokens), length, n_img, max_tiles, dtype=torch.long)
    for b, toks in enumerate(batch_tokens):
        spans = image_spans(toks, image_token_id)
        if len(spans) != len(num_tiles[b]):
            raise HerdError(f"prompt {b} has {len(spans)} <|image|> token(s) but {len(num_tiles[b])} "
                            "image(s); give one image per <|image|>")
        if len(spans) == 1:  # HF: a lone image is seen up to the end, padding included
            spans = [(spans[0][0], length)]
        for i, ((s, e), n) in enumerate(zip(spans, num_tiles[b])):
            out[b, s:min(e, length), i, :n] = 1
    return out


__all__ = ["CLIP_MEAN", "CLIP_STD", "cross_attention_mask", "fit_to_canvas", "image_spans", "image_tiles",
           "optimal_canvas", "process_images", "supported_aspect_ratios"]
