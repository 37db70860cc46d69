"""Llama 3.2 Vision (paper §7, compositional multimodality): an image encoder and cross-attention
adapter on a frozen Llama 3 text model. `model` (Meta's architecture and names), `args` (presets),
`preprocess` (HF MllamaImageProcessor's tiling in torch/PIL), `checkpoint` (Meta / HF Mllama /
herd files), `train` (adapter training on MNIST digits), `cli` (`herd vision ...`)."""
