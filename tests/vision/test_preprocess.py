"""Image preprocessing equals Hugging Face's MllamaImageProcessor bit for bit on real JPEGs
(scikit-learn's china.jpg 427x640 and flower.jpg, crops and small images: every tile layout from
1 to 4 tiles), and the cross-attention mask equals HF's processor's (paper §7)."""

import pytest
import torch
from PIL import Image

from herd.errors import HerdError
from herd.vision.preprocess import CLIP_MEAN, CLIP_STD, cross_attention_mask, process_images

sklearn = pytest.importorskip("sklearn.datasets")
mllama_pil = pytest.importorskip("transformers.models.mllama.image_processing_pil_mllama")


@pytest.fixture(scope="module")
def images():
    china, flower = (Image.fromarray(sklearn.load_sample_image(n)) for n in ("china.jpg", "flower.jpg"))
    return [china, flower, china.crop((0, 0, 100, 400)), flower.resize((50, 30)),
            china.crop((10, 10, 427, 200)), flower.convert("L"), china.crop((0, 0, 640, 90))]


@pytest.mark.parametrize("tile,max_tiles", [(560, 4), (224, 4), (98, 4), (112, 2)])
def test_pixels_equal_hf_image_processor(images, tile, max_tiles):
    proc = mllama_pil.MllamaImageProcessorPil(size={"height": tile, "width": tile},
                                              image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD),
                                              max_image_tiles=max_tiles)
    batch = [[images[0], images[2]], [images[1]], [images[3], images[4], images[5]], [images[6]]]
    hf = proc(images=batch, return_tensors="pt")
    ours = process_images(batch, tile=tile, max_tiles=max_tiles)
    for k in ("pixel_values", "aspect_ratio_ids", "aspect_ratio_mask"):
        assert hf[k].shape == ours[k].shape and torch.equal(hf[k], ours[k]), k
    assert hf["num_tiles"] == ours["num_tiles"]
    assert len({n for row in ours["num_tiles"] for n in row}) >= 2


def test_cross_attention_mask_equals_hf_processor():
    from transformers.models.mllama.processing_mllama import (
        convert_sparse_cross_attention_mask_to_dense,
        get_cross_attention_token_mask,
    )

    IMG = 999
    prompts = [[IMG, 5, 6, 7], [1, 2, IMG, 3, 4, IMG, 9, 9], [IMG, IMG, 4, 5, 6], [1, IMG, 2]]
    tiles = [[4], [2, 3], [1, 4], [2]]
    ours = cross_attention_mask(prompts, tiles, IMG, max_tiles=4, length=9)
    sparse = [get_cross_attention_token_mask(p, IMG) for p in prompts]
    theirs = convert_sparse_cross_attention_mask_to_dense(sparse, tiles, 4, 9)
    assert torch.equal(ours, torch.from_numpy(theirs))
    with pytest.raises(HerdError, match="one image per"):
        cross_attention_mask([[1, IMG]], [[1, 1]], IMG)
