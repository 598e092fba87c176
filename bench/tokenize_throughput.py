"""Tokenisation throughput on the same text: Hugging Face `tokenizers`, Charter's tiktoken
encoder (as `charter data prepare` calls it), and `charter data prepare` end to end (read,
deduplicate, split, tokenise, write).

Every method uses the same number of threads (`--workers`; `tokenizers` through
RAYON_NUM_THREADS). Runs are interleaved (tokenizers, tiktoken, prepare, tokenizers, …) and the
median MB/s of UTF-8 text is reported. The ids of both encoders are compared and must be equal.

    python bench/tokenize_throughput.py [--input cache/corpora] [--tokenizer DIR]
        [--vocab-size 8192] [--workers 2] [--repeats 3] [--limit-mb N]

Without --input, the corpora fetched by `charter data fetch` (./cache/corpora) are used if
present, else the Python standard library's docstrings. Without --tokenizer, a BPE is trained on
the text first (not timed).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", nargs="*", help="documents (default: cache/corpora)")
    parser.add_argument("--tokenizer", type=Path, help="default: train one on the input")
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit-mb", type=float, help="use only the first N MB of documents")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    # Before `tokenizers` is imported: its thread pool is sized once, on first use.
    os.environ["RAYON_NUM_THREADS"] = str(args.workers)

    from charter.data.documents import python_docstrings, read_documents, write_documents
    from charter.data.prepare import batch_encoder, prepare
    from charter.metrics import read_metrics
    from charter.tokenizer import Tokenizer

    default_corpora = Path("cache/corpora")
    if args.input:
        documents = list(read_documents(args.input))
    elif default_corpora.is_dir():
        documents = list(read_documents([default_corpora]))
    else:
        documents = list(python_docstrings())
    if args.limit_mb:
        kept, size = [], 0
        for document in documents:
            if size >= args.limit_mb * 1e6:
                break
            kept.append(document)
            size += len(document.text.encode("utf-8"))
        documents = kept
    texts = [d.text for d in documents]
    megabytes = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    print(f"text: {len(texts)} documents, {megabytes:.2f} MB; workers: {args.workers}")

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer_dir = args.tokenizer
        if tokenizer_dir is None:
            tokenizer_dir = Path(tmp) / "tokenizer"
            Tokenizer.train(texts, vocab_size=args.vocab_size).save(tokenizer_dir)
        tokenizer = Tokenizer.load(tokenizer_dir)
        encode = batch_encoder(tokenizer, args.workers)
        # The prepare run reads the same documents from one JSONL file.
        corpus = Path(tmp) / "corpus.jsonl"
        write_documents(documents, corpus)

        def hf_tokenizers() -> None:
            tokenizer.encode_batch(texts)

        def tiktoken_encoder() -> None:
            for _ in encode(texts):
                pass

        stage_runs: list[list[dict]] = []  # each prepare run's stage timings

        def prepare_end_to_end() -> None:
            prepare([corpus], tokenizer_dir, Path(tmp) / "shards", workers=args.workers)
            stage_runs.append(read_metrics(Path(tmp) / "shards/metrics.jsonl"))

        # Equal ids, on the exact text measured (no special tokens occur in it, else excluded).
        plain = [t for t in texts if "<|" not in t]
        if tokenizer.encode_batch(plain) != [ids.tolist() for ids in encode(plain)]:
            raise SystemExit("the tiktoken encoder's ids differ from tokenizers' on this text")

        methods = {
            "tokenizers (HF, Rust)": hf_tokenizers,
            "tiktoken encoder": tiktoken_encoder,
            "charter data prepare": prepare_end_to_end,
        }
        seconds: dict[str, list[float]] = {name: [] for name in methods}
        for _ in range(args.repeats):
            for name, run in methods.items():
                start = time.perf_counter()
                run()
                seconds[name].append(time.perf_counter() - start)

    rates = {name: megabytes / statistics.median(s) for name, s in seconds.items()}
    baseline = rates["tokenizers (HF, Rust)"]
    print(f"{'method':24s} {'median s':>9s} {'MB/s':>8s} {'vs HF':>7s}")
    for name, rate in rates.items():
        print(f"{name:24s} {megabytes / rate:>9.3f} {rate:>8.2f} {rate / baseline:>6.2f}×")
    print("charter data prepare, by stage (median of its runs; MB/s of the text it keeps):")
    for stages in zip(*stage_runs, strict=True):
        name = stages[0]["stage"]
        median_seconds = statistics.median(stage["seconds"] for stage in stages)
        median_rate = statistics.median(stage["mb_per_s"] for stage in stages)
        print(f"  {name:12s} {median_seconds:>8.3f} s {median_rate:>8.2f} MB/s")
    return rates


if __name__ == "__main__":
    main()
