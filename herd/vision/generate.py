"""Generation with images (paper §7): `herd generate CKPT --image FILE --prompt TEXT`.

The images are preprocessed as HF's processor does (herd.vision.preprocess), encoded once, and each
cross-attention layer's keys/values are computed once and reused by every decoding step; the text
model decodes with herd's static KV cache. A new token sees the images the last prompt token saw
(HF's rule). `<|image|>` in the prompt marks where each image goes; without it the images come
first, after `<|begin_of_text|>`.
"""

from __future__ import annotations

from pathlib import Path

from herd.errors import HerdError

IMAGE_TAG = "<|image|>"


def encode_prompt(tok, text: str, n_images: int, image_token_id: int) -> list[int]:
    """Token ids of a prompt with `n_images` <|image|> tokens (where the text says, else first)."""
    parts = text.split(IMAGE_TAG)
    if len(parts) == 1:
        return [tok.bos_id] + [image_token_id] * n_images + tok.encode(text)
    if len(parts) - 1 != n_images:
        raise HerdError(f"the prompt has {len(parts) - 1} {IMAGE_TAG} tag(s) but {n_images} image(s) "
                        "were given")
    ids = [tok.bos_id]
    for i, part in enumerate(parts):
        if i:
            ids.append(image_token_id)
        ids += tok.encode(part)
    return ids


def open_images(paths) -> list:
    from PIL import Image, UnidentifiedImageError

    out = []
    for p in paths:
        if not Path(p).is_file():
            raise HerdError(f"image not found: {p}")
        try:
            with Image.open(p) as im:
                out.append(im.convert("RGB"))
        except (UnidentifiedImageError, OSError) as e:
            raise HerdError(f"{p}: not an image PIL can read ({e})") from None
    return out


def generate(model, tok, prompt_ids: list[int], images: list, *, max_new_tokens: int = 64,
             temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0, seed: int | None = None,
             on_token=None) -> tuple[list[int], str]:
    """-> (new token ids, stop reason: 'stop' at an end token, 'length' otherwise)."""
    import torch

    from herd.inference.sampling import sample
    from herd.model.transformer import KVCache
    from herd.vision.preprocess import cross_attention_mask, process_images

    a = model.args
    dev = model.text_model.tok_embeddings.weight.device
    dtype = model.text_model.tok_embeddings.weight.dtype
    T = len(prompt_ids)
    if T + max_new_tokens > a.text.max_seq_len:
        raise HerdError(f"prompt ({T} tokens) + {max_new_tokens} new tokens exceed the model's max_seq_len "
                        f"({a.text.max_seq_len})")
    batch = process_images([images], tile=a.image_size, max_tiles=a.max_num_tiles)
    cam = cross_attention_mask([prompt_ids], batch["num_tiles"], a.image_token_id, a.max_num_tiles).to(dev)
    gen = torch.Generator(device=dev).manual_seed(seed) if seed is not None else None
    stops = set(getattr(tok, "stop_tokens", [tok.eos_id]))
    out: list[int] = []
    with torch.no_grad():
        kv = model.encode_kv(batch["pixel_values"].to(dev, dtype), batch["aspect_ratio_ids"].to(dev))
        cache = KVCache(a.text, 1, T + max_new_tokens, dtype=dtype, device=dev)
        tokens = torch.tensor([prompt_ids], device=dev)
        logits = model(tokens, vision_kv=kv, cross_attention_mask=cam, cache=cache, cache_pos=0,
                       last_only=True)
        last_row = cam[:, -1:]
        pos = T
        for _ in range(max_new_tokens):
            nxt = int(sample(logits[:, -1].float(), temperature, top_p, top_k, gen)[0])
            if nxt in stops:
                return out, "stop"
            out.append(nxt)
            if on_token is not None:
                on_token(nxt)
            logits = model(torch.tensor([[nxt]], device=dev), vision_kv=kv, cross_attention_mask=last_row,
                           cache=cache, cache_pos=pos)
            pos += 1
    return out, "length"


def run_generate_images(args, prompts) -> int:
    """`herd generate --image`: one prompt (or none: the images alone) with its images, streamed."""
    import sys

    import torch

    from herd.checkpoint import load_model
    from herd.inference.sampling import check_sampling
    from herd.vision.checkpoint import vision_format

    check_sampling(args.temperature, args.top_p, args.top_k)
    if len(prompts) > 1 or any(not isinstance(p, str) for p in prompts):
        raise HerdError("--image goes with one text prompt (--prompt TEXT)")
    if args.chat or args.draft or args.quant or args.num_samples != 1:
        raise HerdError("--image works with plain prompts: drop --chat, --draft, --quant and --num-samples")
    if not vision_format(args.ckpt):
        raise HerdError(f"{args.ckpt} is not a vision checkpoint; --image needs a Llama 3.2 Vision model "
                        f"(herd vision train makes one)")
    images = open_images(args.image)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}.get(args.dtype)
    model, tok = load_model(args.ckpt, device=device, dtype=dtype or torch.float32, tokenizer=args.tokenizer)
    if tok is None:
        raise HerdError(f"{args.ckpt} has no tokenizer; pass --tokenizer FILE (or --tokenizer llama3)")
    model.eval()
    ids = encode_prompt(tok, prompts[0] if prompts else "", len(images), model.args.image_token_id)
    pieces: list[int] = []

    def show(t):
        pieces.append(t)
        if args.out is None:
            sys.stdout.write(tok.decode([t]))
            sys.stdout.flush()

    new, reason = generate(model, tok, ids, images, max_new_tokens=args.max_new_tokens,
                           temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, seed=args.seed,
                           on_token=show)
    if args.out is None:
        print()
    else:
        import json

        with open(args.out, "a", encoding="utf-8") as f:
            f.write(json.dumps({"prompt_index": 0, "sample_index": 0, "prompt": prompts[0] if prompts else "",
                                "images": list(args.image), "completion": tok.decode(new),
                                "stop_reason": reason,
                                "tokens": new}) + "\n")
    return 0


__all__ = ["encode_prompt", "generate", "open_images", "run_generate_images"]
