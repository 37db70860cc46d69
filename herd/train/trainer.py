"""`pretrain(cfg)`: the Llama 3 pretraining loop (paper §3.4), from 2 CPU cores to many GPUs.

One step: the global batch of the current phase (herd/train/schedule.py) is read by the packed
loader (each data-parallel rank its slice), split into micro-batches (gradient accumulation), and
the loss is the mean over all the batch's target tokens on all ranks, so the result does not
depend on how the batch is split. Then: gradient clipping, a guard against non-finite loss or
gradients (the step is skipped; after guard.max_bad_steps in a row the run rolls back to the last
checkpoint and goes on with the data after the bad batches), AdamW with the step's LR,
metrics, periodic validation, checkpoints and, in the annealing phase, the snapshots whose
average (Polyak) becomes the final model.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import sys
import time
from pathlib import Path

import torch

from herd.errors import HerdError
from herd.train import checkpoint as ckpt
from herd.train.config import TrainConfig
from herd.train.metrics import MetricsWriter, memory_gib, peak_flops
from herd.train import parallel
from herd.train.parallel import Dist, init_distributed, parallelize
from herd.train.average import average_state_dicts
from herd.train.schedule import (LRSchedule, anneal_snapshot_steps, build_plan, param_groups, phase_at,
                                 total_steps)

def resolve_device(cfg: TrainConfig, info: dict | None = None) -> tuple[torch.device, torch.dtype]:
    """run.device / run.precision ("auto": cuda if available else cpu; bf16 on GPU; on CPU what
    herd.precision's probe of the model's shapes picks). `info` gets the reason and the peak."""
    from herd.precision import shapes_of

    s = cfg.stages[0]
    tokens = min(s.batch_size * s.seq_len, cfg.run.micro_batch_tokens or s.batch_size * s.seq_len)
    return parallel.resolve_device(cfg.run.device, cfg.run.precision,
                                   shapes=shapes_of(cfg.model.args(), tokens),
                                   info=info)


def build_optimizer(model, cfg: TrainConfig):
    o = cfg.optim
    kw = dict(lr=o.lr, betas=tuple(o.betas), eps=o.eps)
    impl = o.impl
    if impl == "auto":
        # The fused kernel exists for CUDA and CPU and takes FSDP2's DTensor parameters (its local
        # shards): 5x faster than foreach on the CPU (herd-20m, one process).
        impl = "fused"
    if impl == "fused":
        kw["fused"] = True
    elif impl == "foreach":
        kw["foreach"] = True
    else:
        kw["foreach"] = False
    return torch.optim.AdamW(param_groups(model, o.weight_decay), **kw)


def loss_sum(model, batch, doc_mask: bool) -> torch.Tensor:
    """Summed next-token cross-entropy over the batch's target tokens (IGNORE targets excluded),
    computed by the model (herd.model.loss: fused with the output layer when the logits are large)."""
    return model(batch.inputs, doc_ids=batch.doc_ids if doc_mask else None, targets=batch.targets)


def _micro_batches(batch, rows: int):
    from herd.data.loader import Batch

    n = batch.inputs.shape[0]
    for i in range(0, n, rows):
        yield Batch(batch.inputs[i:i + rows], batch.targets[i:i + rows], batch.doc_ids[i:i + rows])


class Trainer:
    def __init__(self, cfg: TrainConfig, log=None):
        from herd.data.loader import MixtureLoader
        from herd.data.shards import TokenData, has_split
        from herd.model.transformer import Transformer
        from herd.tokenizer import Tokenizer

        self.cfg = cfg.validate()
        self.precision_info: dict = {}
        self.device, self.dtype = resolve_device(cfg, self.precision_info)
        # The 4D layout is checked against the model and every phase's batches before any process group
        from herd.train import layout as lay

        self.layout = lay.resolve(cfg.parallel, parallel.world_size())
        shapes = [(p.batch_size, p.seq_len) for p in build_plan(cfg)]
        shapes.append((self.layout.dp * self.layout.microbatches, cfg.eval.seq_len or cfg.stages[0].seq_len))
        lay.check(cfg.model.args(), self.layout, shapes)
        self.dist: Dist = init_distributed(self.device.type, cfg.parallel)
        if self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        elif self.dist.world > 1:  # every rank timed its own CPU probe: all train in rank 0's precision
            self.dtype, self.precision_info = self.dist.broadcast_object((self.dtype, self.precision_info))
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        self._custom_log = log is not None
        self._log = log or (lambda s: print(s, file=sys.stderr))
        self._bar = None
        self.metrics = None
        self.out = Path(cfg.run.out)
        self.ck_root = self.out / "checkpoints"
        if not cfg.data.sources:
            raise HerdError("config: no data sources; add [[data.sources]] path = \"<dir from herd "
                            "tokenize>\"")

        # ---- data ----
        seed = cfg.data.seed
        d = self.dist
        self.main_loader = MixtureLoader([(s.path, s.weight) for s in cfg.data.sources], "train", seed,
                                         d.dp_rank,
                                         d.dp)
        self.anneal_loader = None
        if cfg.anneal.tokens and cfg.anneal.sources:
            self.anneal_loader = MixtureLoader([(s.path, s.weight) for s in cfg.anneal.sources], "train",
                                               seed + 1, d.dp_rank, d.dp)
        if cfg.data.val:
            self.val_sources = [(cfg.data.val, 1.0)]
            self.val_split = "val" if has_split(cfg.data.val, "val") else "train"
        else:
            self.val_sources = [(s.path, s.weight) for s in cfg.data.sources if has_split(s.path, "val")]
            self.val_split = "val"
        tok_path = (Path(cfg.data.tokenizer) if cfg.data.tokenizer
                    else TokenData(cfg.data.sources[0].path).tokenizer_path())
        if tok_path is None or not tok_path.is_file():
            raise HerdError(f"tokenizer not found: {tok_path} (set data.tokenizer)")
        self.tokenizer = Tokenizer.load(tok_path)

        # ---- model ----
        self.args = cfg.model.args()
        if self.args.vocab_size < self.main_loader.vocab_size:
            raise HerdError(f"the data's tokenizer has {self.main_loader.vocab_size} tokens but the model's "
                            f"vocab_size is {self.args.vocab_size}; set --model.vocab_size "
                            f"{self.main_loader.vocab_size}")
        self.plan = build_plan(cfg)
        if not self.plan:
            raise HerdError("config: the run has no steps (run.tokens/run.steps too small?)")
        longest = max(p.seq_len for p in self.plan)
        if longest > self.args.max_seq_len:
            raise HerdError(f"sequence length {longest} exceeds the model's max_seq_len "
                            f"{self.args.max_seq_len}; set --model.max_seq_len {longest}")
        # The model is built on the meta device, parallelized (FSDP2 over the data-parallel ranks,
        # one included), and only then given memory: each rank allocates and initialises its shards
        # alone (the same weights as one process), so a model larger than one device's memory can
        # be trained (§3.3.2). Parameters (master weights) and the optimizer stay fp32; the forward runs
        # under autocast in the run's precision (herd.precision); on a GPU FSDP2 also gathers the
        # parameters in that dtype (half the bytes on the wire). The loss, RMSNorm, RoPE and the
        # softmax compute in fp32 inside the model, as the reference does.
        self.model = Transformer.build(self.args, device="meta")
        self.n_params = self.model.num_params()
        fsdp_dtype = self.dtype if self.device.type == "cuda" else torch.float32
        # With pipeline parallelism the result is this rank's stages (herd.train.pipeline.PipelineParts).
        self.model = parallelize(self.model, d, self.device, param_dtype=fsdp_dtype,
                                 activation_checkpointing=cfg.run.activation_checkpointing,
                                 compile=cfg.run.compile,
                                 doc_mask=cfg.data.doc_mask, seed=cfg.run.seed,
                                 fp32_reduce=cfg.parallel.fp32_reduce)
        self.pipelined = getattr(self.model, "schedule", None) is not None
        if cfg.model.init_from:
            from herd.checkpoint import load_model

            src, _ = load_model(cfg.model.init_from)
            if src.args.to_dict() != self.args.to_dict():
                raise HerdError(f"model.init_from {cfg.model.init_from}: its shape differs from the "
                                "config's model")
            ckpt.load_full_state_dict(self.model, src.state_dict(), dist_=d)
            del src
        self.sharded_ckpt = ckpt.use_sharded(cfg.checkpoint.format, d.world)
        if self.pipelined and cfg.checkpoint.format == "full":
            raise HerdError("checkpoint.format full gathers the optimizer on one rank, which pipeline "
                            "parallelism does not do; use sharded (or auto)")
        self.optim = build_optimizer(self.model, cfg)
        self.lr = LRSchedule(cfg, self.plan)
        self.total = total_steps(self.plan)
        self.snap_steps = (set(anneal_snapshot_steps(self.plan, cfg.anneal.checkpoints))
                           if cfg.anneal.tokens else set())
        self.peak = (cfg.run.peak_flops or self.precision_info.get("peak")
                     or peak_flops(self.device, self.dtype))
        if self.dist.is_main and self.precision_info.get("reason"):
            self._log(f"herd: precision {self.precision_info['precision']} — {self.precision_info['reason']}")

        # ---- counters (all saved in checkpoints) ----
        self.step = 0
        self.tokens = 0
        self.skipped = 0
        self.bad_streak = 0
        self.rollbacks = 0
        self.spikes = 0
        self.loss_ema = None
        self.train_time = 0.0
        self.last_loss = float("nan")

    # ---- logging ----
    def log(self, s: str):
        if self.dist.is_main:
            if self._bar is not None and not self._custom_log:
                self._bar.write(s, file=sys.stderr)
            else:
                self._log(s)

    # ---- checkpoints ----
    def train_state(self) -> dict:
        st = {"step": self.step, "tokens": self.tokens, "skipped": self.skipped, "rollbacks": self.rollbacks,
              "last_loss": self.last_loss,
              "spikes": self.spikes, "loss_ema": self.loss_ema, "train_time": self.train_time,
              "lr": self.lr(max(0, self.step - 1)), "world": self.dist.world,
              "data": {"main": self.main_loader.state_dict()},
              "model_args": self.args.to_dict(), "config": self.cfg.to_dict()}
        if self.anneal_loader is not None:
            st["data"]["anneal"] = self.anneal_loader.state_dict()
        return st

    def save_checkpoint(self):
        d = self.dist
        tmp = ckpt.step_dir(self.ck_root, self.step).with_suffix(".tmp")
        if d.is_main:
            self.ck_root.mkdir(parents=True, exist_ok=True)
            if tmp.exists():
                shutil.rmtree(tmp)
        d.barrier()
        ckpt.write_rng(self.ck_root, self.step, d.rank)
        state, sums = None, None
        if self.sharded_ckpt:
            sums = ckpt.save_sharded(self.model, self.optim, tmp / ckpt.SHARDS, d)
        else:
            msd, osd = ckpt.full_state_dict(self.model, self.optim)
            state = {"model": msd, "optim": osd}
        d.barrier()
        if d.is_main:
            ckpt.seal(self.ck_root, self.step, state, self.train_state(), self.cfg.checkpoint.keep,
                      shard_sums=sums)
        d.barrier()
        self.metrics_event("checkpoint", step=self.step)

    def load_checkpoint(self, d_path: Path, data: bool = True):
        state, ts, rng = ckpt.load(d_path, self.dist.rank)
        if ts.get("model_args") != self.args.to_dict():
            a, b = ts.get("model_args", {}), self.args.to_dict()
            diff = ", ".join(f"{k} {a.get(k)} vs {b.get(k)}" for k in b if a.get(k) != b.get(k))
            raise HerdError(f"checkpoint {d_path} is for another model shape ({diff}); resume with the model "
                            "config it was trained with, or use another --run.out")
        if state is None:
            ckpt.load_sharded(self.model, self.optim, d_path / ckpt.SHARDS)
        else:
            ckpt.load_full_state_dict(self.model, state["model"], self.optim, state["optim"])
        for k in ("step", "tokens", "loss_ema", "train_time"):
            setattr(self, k, ts[k])
        self.last_loss = ts.get("last_loss", float("nan"))
        if data:  # a resume; a rollback keeps counting its events
            self.skipped, self.spikes, self.rollbacks = ts["skipped"], ts["spikes"], ts["rollbacks"]
            self.main_loader.load_state_dict(ts["data"]["main"])
            if self.anneal_loader is not None and "anneal" in ts["data"]:
                self.anneal_loader.load_state_dict(ts["data"]["anneal"])
            if rng is not None:
                ckpt.set_rng_state(rng)

    def save_snapshot(self):
        """An annealing snapshot in herd format (rank 0), for the final Polyak average."""
        from herd.checkpoint import save_herd

        msd = ckpt.full_state_dict(self.model)[0]
        if self.dist.is_main:
            save_herd(self.model, self.out / "anneal" / f"step-{self.step:08d}", self.tokenizer,
                      extra={"train": {"step": self.step, "tokens": self.tokens}}, state_dict=msd)
        self.dist.barrier()

    # ---- metrics ----
    def metrics_event(self, kind: str, **kw):
        if self.dist.is_main and self.metrics is not None:
            self.metrics.write({"kind": kind, **kw})

    @torch.no_grad()
    def evaluate(self) -> float | None:
        """Mean loss per token on the first eval.batches batches of the held-out split (the same
        batches every time)."""
        from herd.data.loader import MixtureLoader

        if not self.val_sources:
            return None
        e = self.cfg.eval
        seq = e.seq_len or self.cfg.stages[0].seq_len
        d = self.dist
        unit = d.dp * self.layout.microbatches  # rows divide over dp ranks, then into pipeline micro-batches
        bs = max(e.batch_size, unit) // unit * unit
        loader = MixtureLoader(self.val_sources, self.val_split, seed=12345, rank=d.dp_rank, world=d.dp,
                               shuffle=False)
        self.model.eval()
        tot = torch.zeros(2, dtype=torch.float64, device=self.device)
        for _ in range(e.batches):
            b = loader.next_batch(bs, seq).to(self.device)
            s = self._loss(b, train=False)
            tot += torch.stack([s.double() * d.owns_loss,
                                torch.tensor(b.n_targets * d.counts_tokens, dtype=torch.float64,
                                             device=self.device)])
        self.model.train()
        self.dist.all_reduce_sum(tot)
        return float(tot[0] / tot[1]) if tot[1] > 0 else None

    # ---- the step ----
    def autocast(self):
        """The forward's precision: torch.autocast in the run's dtype (bf16/fp16), nothing in fp32."""
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def train_step(self, phase, loader) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Forward and backward of one global batch, gradients clipped -> (loss, grad_norm, global
        tokens); loss and grad norm stay on the device (the caller reads both in one transfer)."""
        batch = loader.next_batch(phase.batch_size, phase.seq_len)
        d = self.dist
        n_local = batch.n_targets * d.counts_tokens  # each data-parallel slice counted once
        counts = torch.tensor([n_local], dtype=torch.float64, device=self.device)
        n_global = max(1.0, float(d.all_reduce_sum(counts)[0]))
        # FSDP averages gradients over the dp x cp ranks; we want the global token mean
        scale = d.grad_world / n_global
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        if self.pipelined:  # the schedule splits the batch into the layout's micro-batches
            total += self._loss(batch.to(self.device), scale=scale).detach().double()
        else:
            mbt = self.cfg.run.micro_batch_tokens
            rows = max(1, mbt // phase.seq_len) if mbt else batch.inputs.shape[0]
            micro = list(_micro_batches(batch, rows))
            for i, mb in enumerate(micro):
                mb = mb.to(self.device)
                self.model.set_requires_gradient_sync(i == len(micro) - 1)  # reduce-scatter once per step
                s = self._loss(mb)
                (s * scale).backward()
                total += s.detach().double()
        loss = d.all_reduce_sum(total * d.owns_loss) / n_global
        clip = self.cfg.optim.grad_clip
        gn = parallel.clip_grad_norm_(self.model, clip if clip > 0 else float("inf"), d)
        return loss, gn, phase.batch_tokens

    def _loss(self, batch, train: bool = True, scale: float = 1.0) -> torch.Tensor:
        """Summed loss of this rank's part of `batch`; through the pipeline schedule (forward, and with
        `train` backward) under pipeline parallelism (0 on ranks without the last stage)."""
        doc_mask = self.cfg.data.doc_mask
        # the forward in the run's precision (the schedule's backward runs inside it too)
        with self.autocast():
            if self.pipelined:
                tokens, doc_ids, targets = parallel.pipeline_inputs(batch, self.dist, doc_mask)
                return self.model.run(tokens, doc_ids, targets, scale=scale, train=train)
            if self.layout.cp > 1:  # this rank's two chunks of each row
                return self.model(**parallel.batch_inputs(batch, self.dist, doc_mask))
            return loss_sum(self.model, batch, doc_mask)

    def find_latest(self, log) -> Path | None:
        """The newest verified checkpoint, chosen by rank 0 (the only one that reads and hashes the
        files) and sent to the others, so every rank loads the same one; an error on rank 0 (all
        corrupt) is raised on every rank."""
        found = error = None
        if self.dist.is_main:
            try:
                found = ckpt.find_latest(self.ck_root, log=log)
            except HerdError as e:
                error = str(e)
        found, error = self.dist.broadcast_object((found, error))
        if error is not None:
            raise HerdError(error)
        return found

    def rollback(self):
        last = self.find_latest(self.log)
        if last is None:
            raise HerdError(f"{self.bad_streak} non-finite steps in a row and no checkpoint to roll back to; "
                            "lower optim.lr or check the data")
        keep_main = self.main_loader.state_dict()
        keep_anneal = self.anneal_loader.state_dict() if self.anneal_loader is not None else None
        self.load_checkpoint(last, data=False)
        # Go on with the data after the bad batches (as PaLM does): the same batches would fail again.
        self.main_loader.load_state_dict(keep_main)
        if keep_anneal is not None:
            self.anneal_loader.load_state_dict(keep_anneal)
        self.rollbacks += 1
        self.bad_streak = 0
        self.log(f"herd: rolled back to {last.name} after {self.cfg.guard.max_bad_steps} bad steps in a row")
        self.metrics_event("rollback", step=self.step, checkpoint=last.name)

    # ---- the run ----
    def run(self) -> dict:
        """resume -> steps (each: step, record, periodic work) -> finish."""
        self.resume()
        t_start = time.perf_counter()
        self._bar = self._progress_bar()
        try:
            self.model.train()
            while self.step < self.total:
                rec = self.step_once()
                if rec is not None:
                    self.log_step(rec)
                    self.periodic()
        finally:
            self._bar.close()
            self._bar = None
        return self.finish(time.perf_counter() - t_start)

    def resume(self):
        """Load the newest valid checkpoint (run.resume) or refuse to overwrite one; open metrics."""
        cfg = self.cfg
        self._bar = None
        self.metrics = None
        resume_step = None
        existing = ckpt.list_checkpoints(self.ck_root)
        if cfg.run.resume:
            last = self.find_latest(self._log)
            if last is not None:
                self.load_checkpoint(last)
                if self.dist.is_main:
                    self._log(f"herd: resuming from {last} (step {self.step}, {self.tokens:,} tokens)")
            elif self.dist.is_main:
                self._log(f"herd: no checkpoint in {self.ck_root} yet; starting from step 0")
            # Metrics logged after the resumed step by the interrupted run are dropped: those steps run again.
            resume_step = self.step if (self.out / "metrics.jsonl").exists() else None
        elif existing:
            raise HerdError(f"{self.out} already holds checkpoints; pass --resume to continue that run, "
                            "or choose another --run.out")
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1) + "\n")
            self.metrics = MetricsWriter(self.out, cfg.run.tensorboard, resume_step=resume_step)
            if resume_step is None:
                self.metrics.write({"kind": "start", "step": 0, "params": self.n_params,
                                    "world": self.dist.world,
                                    "device": str(self.device), "dtype": str(self.dtype),
                                    "total_steps": self.total,
                                    "peak_flops": self.peak,
                                    "precision": self.precision_info.get("precision"),
                                    "precision_reason": self.precision_info.get("reason")})
        self.dist.barrier()

    def _progress_bar(self):
        from tqdm import tqdm

        return tqdm(total=self.total, initial=self.step, desc="pretrain", unit="step", dynamic_ncols=True,
                    disable=not (self.cfg.run.progress and self.dist.is_main), file=sys.stderr)

    def step_once(self) -> dict | None:
        """One optimizer step (or a skipped one, or a rollback) -> its metrics record, or None when
        the step was not finite. One host transfer per step: the guard needs the loss and the
        gradient norm (and reading them waits for the device, so the step time is real)."""
        cfg = self.cfg
        phase = phase_at(self.plan, self.step)
        loader = self.anneal_loader if (phase.mix == "anneal" and self.anneal_loader is not None) \
            else self.main_loader
        lr = self.lr(self.step)
        for g in self.optim.param_groups:
            g["lr"] = lr
        t0 = time.perf_counter()
        with parallel.collective_guard(self.dist):
            loss_t, gn_t, ntok = self.train_step(phase, loader)
            loss, gnorm = torch.stack([loss_t.double(), gn_t.double()]).tolist()
            slow = parallel.stragglers(self.dist.all_gather_floats(time.perf_counter() - t0),
                                       cfg.parallel.straggler_factor)
        for r, t, med in slow:  # a rank far slower than the others holds every step back (§3.3.4)
            self.log(f"herd: straggler: rank {r} took {t:.2f} s for step {self.step + 1}, {t / med:.1f}x the "
                     f"median {med:.2f} s")
        finite = math.isfinite(loss) and math.isfinite(gnorm)
        if finite:
            self.optim.step()
            self.bad_streak = 0
        else:
            self.skipped += 1
            self.bad_streak += 1
            self.log(f"herd: warning: step {self.step + 1}: non-finite loss or gradient (loss {loss}, "
                     f"grad norm {gnorm}); step skipped ({self.bad_streak} in a row)")
        self.optim.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        self.train_time += dt
        self.step += 1
        self.tokens += ntok
        if not finite:
            self.metrics_event("skip", step=self.step, loss=None if math.isnan(loss) else loss)
            if self.bad_streak >= cfg.guard.max_bad_steps:
                self.rollback()
            self._bar.n = self.step
            self._bar.refresh()
            return None
        self.last_loss = loss
        spike = self.loss_ema is not None and loss > cfg.guard.spike_factor * self.loss_ema
        if spike:
            self.spikes += 1
            self.log(f"herd: loss spike at step {self.step}: {loss:.4f} vs running mean {self.loss_ema:.4f}")
        self.loss_ema = loss if self.loss_ema is None else 0.95 * self.loss_ema + 0.05 * loss
        tps = ntok / dt
        # MFU over the last steps (one step's time is noisy on a shared machine), never above the peak:
        # a rate above the probed peak means the probe ran on a busy machine, so the peak is raised.
        self._window = (getattr(self, "_window", []) + [(ntok, dt)])[-20:]
        tps_avg = sum(n for n, _ in self._window) / sum(t for _, t in self._window)
        flops = self.args.flops_per_token(phase.seq_len) * tps_avg / self.dist.world
        if flops > self.peak and not self.cfg.run.peak_flops:
            self.log(f"herd: the measured peak {self.peak / 1e9:.0f} GFLOP/s was low (a busy machine?); "
                     f"using the achieved {flops / 1e9:.0f} GFLOP/s as the peak")
            self.peak = flops
        mfu = min(1.0, flops / self.peak)
        rec = {"kind": "train", "step": self.step, "tokens": self.tokens, "loss": loss, "lr": lr,
               "grad_norm": gnorm, "tokens_per_s": tps, "tokens_per_s_avg": tps_avg, "mfu": mfu,
               "mem_gib": memory_gib(self.device),
               "phase": phase.name, "seq_len": phase.seq_len, "batch_size": phase.batch_size, "step_time": dt}
        if spike:
            rec["spike"] = True
        if slow:
            rec["stragglers"] = [r for r, _, _ in slow]
        return rec

    def log_step(self, rec: dict):
        """The step's metrics record, progress bar and (every run.log_interval steps) log line."""
        if not self.dist.is_main:
            return
        self.metrics.write(rec)
        self._bar.update(1)
        self._bar.set_postfix(loss=f"{rec['loss']:.3f}", tok_s=f"{rec['tokens_per_s_avg']:,.0f}",
                              mfu=f"{100 * rec['mfu']:.0f}%")
        li = self.cfg.run.log_interval
        if li and self.step % li == 0:
            self.log(f"step {self.step}/{self.total} | tokens {self.tokens:,} | loss {rec['loss']:.4f} | "
                     f"lr {rec['lr']:.2e} | {rec['tokens_per_s_avg']:,.0f} tok/s | MFU "
                     f"{100 * rec['mfu']:.1f}% | mem {rec['mem_gib']:.2f} GiB | {rec['phase']}")

    def periodic(self):
        """After a step: validation, annealing snapshot and checkpoint when they are due."""
        cfg = self.cfg
        last_step = self.step == self.total
        if cfg.eval.interval and self.step % cfg.eval.interval == 0 and not last_step:
            val_loss = self.evaluate()
            if val_loss is not None:
                self.metrics_event("val", step=self.step, tokens=self.tokens, val_loss=val_loss)
                self.log(f"step {self.step} | val loss {val_loss:.4f}")
        if self.step - 1 in self.snap_steps:
            self.save_snapshot()
        if last_step or (cfg.checkpoint.interval and self.step % cfg.checkpoint.interval == 0):
            self.save_checkpoint()

    def finish(self, wall: float) -> dict:
        """Final model: the Polyak average of the annealing snapshots (if any), else the last
        weights; exported in herd format with the tokenizer; final validation loss."""
        from herd.checkpoint import save_herd
        from herd.checkpoint.herd_format import load_herd_state_dict

        snaps = sorted((self.out / "anneal").glob("step-*")) if self.snap_steps else []
        snaps = [s for s in snaps if int(s.name.split("-")[1]) - 1 in self.snap_steps]
        averaged = False
        if snaps:
            full = average_state_dicts((load_herd_state_dict(s) for s in snaps),
                                       names=[str(s) for s in snaps],
                                       dtype=torch.float32)
            if self.args.tie_embeddings:
                full["output.weight"] = full["tok_embeddings.weight"]
            ckpt.load_full_state_dict(self.model, full)
            averaged = True
        msd = ckpt.full_state_dict(self.model)[0]
        model_dir = self.out / "model"
        if self.dist.is_main:
            save_herd(self.model, model_dir, self.tokenizer, state_dict=msd,
                      extra={"train": {"steps": self.step, "tokens": self.tokens,
                                       "polyak_snapshots": [s.name for s in snaps]}})
        self.dist.barrier()
        val_loss = self.evaluate()
        result = {"train_loss": self.last_loss, "val_loss": val_loss, "tokens": self.tokens,
                  "steps": self.step,
                  "wall_time": wall, "train_time": self.train_time, "skipped_steps": self.skipped,
                  "rollbacks": self.rollbacks, "loss_spikes": self.spikes, "params": self.n_params,
                  "polyak_averaged": averaged, "anneal_snapshots": [str(s) for s in snaps],
                  "out_dir": str(self.out), "model_dir": str(model_dir),
                  "metrics": str(self.out / "metrics.jsonl"), "checkpoint_dir": str(self.ck_root)}
        if self.dist.is_main:
            self.metrics.write({"kind": "final", "step": self.step, **{k: v for k, v in result.items()
                                                                       if not isinstance(v, list)}})
            self.metrics.close()
            if val_loss is not None:
                self.log(f"done: {self.step} steps, {self.tokens:,} tokens, train loss {self.last_loss:.4f}, "
                         f"val loss {val_loss:.4f}{' (Polyak average)' if averaged else ''} -> {model_dir}")
        return result


def pretrain(cfg: TrainConfig, log=None) -> dict:
    """Run (or with cfg.run.resume, continue) a pretraining run; see herd/train/__init__.py."""
    import torch.distributed as dist

    owned = not (dist.is_available() and dist.is_initialized())
    try:
        return Trainer(cfg, log=log).run()
    finally:
        # Leave the process group as we found it (torchrun workers exit cleanly; callers keep theirs).
        if owned and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


__all__ = ["pretrain", "Trainer", "loss_sum", "build_optimizer", "resolve_device"]
