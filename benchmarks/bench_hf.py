"""The hf family's training and generation speed against what a user would otherwise write.

Model: hf-tiny's GPT-2 (2 layers, 4 heads, width 128) built from its config over a byte-level BPE of
the King James Bible (2,048 tokens), 64-token blocks. Every trainer starts from the same weights and
sees the same blocks for the same number of epochs at batch 16, AdamW at lr 1e-3, constant rate:

1. the plain loop: a torch DataLoader over the blocks (shuffled), `model(input_ids, labels=...)`,
   torch.optim.AdamW, fp32 eager, loss.backward(), step();
2. transformers.Trainer with the same settings (no logging, no saving, constant schedule);
3. the hf family's fit (the project's trainer: fused AdamW, index-gathered batches), at fp32 and,
   where the CPU has native bfloat16 arithmetic, bf16 autocast; the compiled step beside it.

Training tokens/s = predicted tokens / wall seconds of the training loop; held-out loss (nats per
token) on the same 50 held-out blocks after training, so speed is compared at equal quality. Then
generation: 64 prompted blocks (32 tokens kept, 32 written) with 5 beams and with sampling, through
the family's sample (the model's own generate, KV cache). Writes benchmarks/results/hf.json.

    .venv/bin/python benchmarks/bench_hf.py [--epochs 2] [--blocks 1000] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from model_collapse.config import validate
from model_collapse.loop import build

HERE = Path(__file__).resolve().parent
SHAPE = {"model_type": "gpt2", "n_layer": 2, "n_head": 4, "n_embd": 128}


def experiment(blocks: int, epochs: int, **model):
    return validate({"seed": 0, "chains": 1, "source": {"kind": "kjv", "block": 64, "tokenizer": "bpe",
                                                         "vocab_size": 2048},
                     "model": {"kind": "hf", "config": SHAPE, "epochs": epochs, "batch": 16, "lr": 1e-3,
                               "val_fraction": 0.0, "mode": "prompted", "prompt": 32, **model},
                     "regime": {"kind": "replace", "n": blocks}})


def heldout_loss(model, inp, tgt) -> float:
    model.eval()
    with torch.inference_mode():
        logits = model(input_ids=inp).logits
        return float(torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), tgt.flatten()))


def plain_loop(model, inp, tgt, epochs: int) -> float:
    """The loop of the PyTorch and transformers tutorials; returns its training seconds."""
    data = torch.utils.data.TensorDataset(inp, tgt)
    loader = torch.utils.data.DataLoader(data, batch_size=16, shuffle=True, drop_last=True,
                                         generator=torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    model.train()
    t = time.perf_counter()
    for _ in range(epochs):
        for x, y in loader:
            # labels are the targets already aligned: pass logits' loss ourselves as the tutorials' LM loop does
            loss = torch.nn.functional.cross_entropy(model(input_ids=x).logits.flatten(0, 1), y.flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return time.perf_counter() - t


def hf_trainer(model, inp, tgt, epochs: int) -> float:
    """transformers.Trainer on the same blocks; returns its train() seconds."""
    import transformers as tf
    tf.utils.logging.set_verbosity_error()
    tf.utils.logging.disable_progress_bar()

    class Blocks(torch.utils.data.Dataset):
        def __len__(self):
            return len(inp)

        def __getitem__(self, i):
            return {"input_ids": inp[i], "labels": tgt[i]}

    class Aligned(tf.Trainer):   # targets are aligned with the inputs already (start token + block[:-1] -> block)
        def compute_loss(self, model, inputs, return_outputs=False, **kw):
            out = model(input_ids=inputs["input_ids"])
            loss = torch.nn.functional.cross_entropy(out.logits.flatten(0, 1), inputs["labels"].flatten())
            return (loss, out) if return_outputs else loss

    with tempfile.TemporaryDirectory() as d:
        args = tf.TrainingArguments(output_dir=d, per_device_train_batch_size=16, num_train_epochs=epochs,
                                    learning_rate=1e-3, weight_decay=0.0, lr_scheduler_type="constant",
                                    warmup_steps=0, report_to=[], save_strategy="no", logging_strategy="no",
                                    use_cpu=True, dataloader_num_workers=0, optim="adamw_torch",
                                    dataloader_drop_last=True, disable_tqdm=True, seed=0)
        trainer = Aligned(model=model, args=args, train_dataset=Blocks())
        t = time.perf_counter()
        trainer.train()
        return time.perf_counter() - t


def bf16_native() -> bool:
    """Whether this CPU has bfloat16 arithmetic (AVX-512 BF16 or AMX); without it autocast is ~10x slower."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return any(f in flags for f in ("avx512_bf16", "amx_bf16"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--blocks", type=int, default=1000)
    ap.add_argument("--json", default=str(HERE / "results" / "hf.json"))
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    exp = experiment(args.blocks, args.epochs)
    src, fam, reg, _ = build(exp)
    rng = np.random.default_rng(0)
    real = src.real(reg.size(0), rng)
    val_blocks = src.splits["validation"][:50]
    inp, tgt = (torch.from_numpy(a) for a in _io(fam, real[0]))
    vi, vt = (torch.from_numpy(a) for a in _io(fam, val_blocks))
    tokens = args.epochs * (len(inp) // 16) * 16 * inp.shape[1]
    rows = {}

    def fresh():   # the family's architecture with random weights of the same law (its own fit draws its own)
        import transformers as tf
        torch.manual_seed(0)
        return tf.AutoModelForCausalLM.from_config(fam.mconfig)

    # warm-up: one short pass of each path so first-call costs (allocator, oneDNN primitives) are not timed
    plain_loop(fresh(), inp[:64], tgt[:64], 1)
    for name, fn in (("plain loop (DataLoader, AdamW, fp32 eager)", plain_loop),
                     ("transformers.Trainer", hf_trainer)):
        m = fresh()
        sec = fn(m, inp, tgt, args.epochs)
        rows[name] = {"seconds": sec, "tokens_per_s": tokens / sec, "heldout_loss": heldout_loss(m, vi, vt)}
        print(name, rows[name], flush=True)
    variants = [("hf family, fp32", {}), ("hf family, fp32, compiled step", {"compile": True})]
    if bf16_native():
        variants.append(("hf family, bf16 autocast", {"precision": "bf16"}))
    for name, change in variants:
        e = experiment(args.blocks, args.epochs, **change)
        f = build(e)[1]
        t = time.perf_counter()
        f.fit(real, np.random.default_rng(1))
        sec = time.perf_counter() - t
        rows[name] = {"seconds": sec, "tokens_per_s": tokens / sec,
                      "heldout_loss": heldout_loss(f.models[0], vi, vt)}
        print(name, rows[name], flush=True)
    gen = {}
    for name, change in (("5 beams", {"decode": "beam", "beams": 5}), ("sampling", {"decode": "sample"})):
        f = build(experiment(args.blocks, 1, **change))[1]
        f.fit(real[:, :64], np.random.default_rng(1))
        t = time.perf_counter()
        out = f.sample(64, np.random.default_rng(2))
        sec = time.perf_counter() - t
        gen[name] = {"seconds": sec, "new_tokens_per_s": 64 * 32 / sec, "blocks": int(out.shape[1])}
        print(name, gen[name], flush=True)
    base = rows["plain loop (DataLoader, AdamW, fp32 eager)"]["tokens_per_s"]
    trainer = rows["transformers.Trainer"]["tokens_per_s"]
    print("\n| trainer | tokens/s | x plain loop | x Trainer | held-out loss |\n|---|---|---|---|---|")
    for k, r in rows.items():
        print(f"| {k} | {r['tokens_per_s']:.0f} | {r['tokens_per_s'] / base:.2f} | {r['tokens_per_s'] / trainer:.2f} "
              f"| {r['heldout_loss']:.3f} |")
    for k, g in gen.items():
        print(f"| generation, {k} (64 blocks, 32 new tokens each) | {g['new_tokens_per_s']:.0f} new tokens/s | | | |")
    out = {"workload": "hf-tiny GPT-2 (2 x 128) on KJV BPE-2048, 64-token blocks, batch 16",
           "epochs": args.epochs, "blocks": args.blocks, "train_tokens": tokens, "training": rows,
           "generation": gen, "bf16_native": bf16_native(), "cpus": os.cpu_count(),
           "loadavg_at_end": os.getloadavg(),
           "versions": {"python": sys.version.split()[0], "platform": platform.platform(),
                        "torch": torch.__version__, "transformers": __import__("transformers").__version__}}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1))
    print(f"\nwrote {args.json}")


def _io(fam, blocks):
    """Inputs and targets of blocks, as the family reads them (start token + block[:-1] -> block)."""
    x = np.asarray(blocks, np.int64)
    return np.concatenate([np.full((len(x), 1), fam.bos), x[:, :-1]], 1), x


if __name__ == "__main__":
    main()
