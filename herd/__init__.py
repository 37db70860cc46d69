"""herd: the Llama 3 Herd of Models (arXiv 2407.21783), built for real in PyTorch.

One folder per stage of the pipeline, data flowing one way through them:
curate -> tokenizer -> data -> model -> train -> posttrain -> inference -> eval, with
scaling (§3.2.1) and speedrun (the whole recipe in miniature) on top. Each stage imports
only what it needs, so e.g. `herd.model` works without the data-curation dependencies.
"""

__version__ = "0.1.0"

from herd.errors import HerdError  # noqa: E402,F401
