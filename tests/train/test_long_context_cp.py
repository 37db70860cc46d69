"""The long-context stages under context parallelism, as docs/parallelism.md runs a recipe (paper §3.4.2,
Table 4): the main phase on one layout (long-context stages and annealing left out), then the whole config
on a context-parallel layout, resumed from the main phase's last checkpoint, gives the losses of one run."""

from parallel_helpers import losses, run_ranks
from train_helpers import tiny_config

from herd.train import pretrain

# two long-context stages (128 and 256 tokens) and annealing after 6 main steps, the document mask on;
# decay_steps explicit as in the Llama recipes (left at 0 it ends at annealing, which the first launch lacks)
RECIPE = ["--run.steps", "6", "--model.n_layers", "3", "--schedule.decay_steps", "16",
          "--long_context", "[{seq_len = 128, tokens = 1024}, {seq_len = 256, tokens = 1024}]",
          "--anneal.tokens", "512"]
MAIN_ONLY = ["--long_context", "[]", "--anneal.tokens", "0"]


def test_long_context_stages_resumed_under_cp2_equal_one_run(para_tok_dir, tmp_path):
    one = tmp_path / "one"
    pretrain(tiny_config(para_tok_dir, one, *RECIPE), log=lambda s: None)
    two = tmp_path / "two"
    pretrain(tiny_config(para_tok_dir, two, *RECIPE, *MAIN_ONLY), log=lambda s: None)
    assert len(losses(two)) == 6
    run_ranks(2, tmp_path, [(para_tok_dir, two, [*RECIPE, "--parallel.cp", "2", "--run.resume", "true"])])
    a, b = losses(one), losses(two)
    assert len(a) == len(b) == 16  # 6 main, 4 + 4 long-context, 2 annealing steps
    assert max(abs(x - y) for x, y in zip(a, b)) < 1e-5
