"""Harness figures: prepare time (embedded corpus), tokenizer encode MB/s, dataloader batches/s,
and evaluate_bpb time for a small model on the cpu profile. Prints one line per figure.

Run: .venv/bin/python bench/bench_harness.py [--device cuda]   (a temporary data folder; about half a minute)
"""
from __future__ import annotations

import argparse
import contextlib
import tempfile
import time

import torch

from autoresearch_kernel.harness.data import load_prepared
from autoresearch_kernel.harness.dataloader import train_batches
from autoresearch_kernel.harness.evaluate import evaluate_bpb
from autoresearch_kernel.harness.prepare import prepare
from autoresearch_kernel.harness.sources import embedded_documents


class SmallGPT(torch.nn.Module):
    """A stand-in for a cpu baseline: 2 pre-norm layers, width 128, causal attention."""

    def __init__(self, vocab: int, seq_len: int, width: int = 128, depth: int = 2):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, width)
        self.position = torch.nn.Embedding(seq_len, width)
        layer = torch.nn.TransformerEncoderLayer(width, 4, 4 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = torch.nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.head = torch.nn.Linear(width, vocab)

    def forward(self, idx):
        steps = idx.shape[1]
        mask = torch.nn.Transformer.generate_square_subsequent_mask(steps, device=idx.device)
        hidden = self.embed(idx) + self.position(torch.arange(steps, device=idx.device))
        return self.head(self.blocks(hidden, mask=mask, is_causal=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu | cuda | mps: where batches and evaluation go")
    device = torch.device(parser.parse_args().device)
    print(f"device: {device}, torch threads: {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as data_dir:
        started = time.perf_counter()
        manifest = prepare("embedded", "cpu", data_dir=data_dir, progress=False)
        print(f"prepare embedded/cpu: {time.perf_counter() - started:.2f} s ({manifest.train_tokens:,} train tokens)")
        prepared = load_prepared(data_dir, "cpu")

        docs = list(embedded_documents())
        megabytes = sum(len(d.encode("utf-8")) for d in docs) / 1e6
        tokenizer = prepared.tokenizer
        started = time.perf_counter()
        for doc in docs:
            tokenizer.encode(doc)
        single = megabytes / (time.perf_counter() - started)
        started = time.perf_counter()
        tokenizer.encode_batch(docs)
        batched = megabytes / (time.perf_counter() - started)
        print(f"tokenizer encode: {single:.1f} MB/s one thread, {batched:.1f} MB/s batched ({megabytes:.1f} MB)")

        shapes = [(32, 256), (8, 2048)] + ([(128, 2048)] if device.type == "cuda" else [])
        for batch_size, seq_len in shapes:
            batches = train_batches(prepared, batch_size, seq_len=seq_len, device=device, seed=0)
            next(batches)
            count, started = 0, time.perf_counter()
            while time.perf_counter() - started < 2.0:
                x, _, _ = next(batches)
                count += 1
            if device.type == "cuda":
                torch.cuda.synchronize()
            rate = count / (time.perf_counter() - started)
            print(f"dataloader B={batch_size} T={seq_len}: {rate:,.0f} batches/s, {rate * batch_size * seq_len / 1e6:.1f} M tokens/s")

        torch.manual_seed(0)
        model = SmallGPT(prepared.profile.vocab_size, prepared.profile.seq_len).to(device)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
        with autocast:
            result = evaluate_bpb(model, prepared, device)
        print(f"evaluate_bpb cpu profile ({result.tokens:,} tokens, {params:.1f}M-param model): {result.seconds:.1f} s")


if __name__ == "__main__":
    main()
