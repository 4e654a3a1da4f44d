"""The `s2s` command's arguments (argparse): every subcommand, its options and an example."""

from __future__ import annotations

import argparse

from s2s_jax.cli import commands


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("s2s-jax")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"


def _checkpoint(text: str) -> str:
    """`--checkpoint`'s value: best, latest, or a step number."""
    if text in ("best", "latest") or text.isdigit():
        return text
    raise argparse.ArgumentTypeError(f"{text!r}: give best, latest or a step number")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="s2s", description="RNN encoder-decoder models in JAX.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name, help_, example):
        return sub.add_parser(
            name,
            help=help_,
            description=help_,
            epilog=f"example: {example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    def config_flags(q, config_help: str, set_help: str):  # train and prepare read settings alike
        q.add_argument("--config", help=config_help)
        q.add_argument(
            "--smoke", action="store_true", help="apply the config file's [smoke] variant"
        )
        q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=set_help)

    p = command(
        "train",
        "train, evaluate and checkpoint into a workdir; run again to resume",
        "s2s train --workdir runs/numbers --task numbers-en-fr --set dropout=0.2",
    )
    p.add_argument(
        "--workdir",
        required=True,
        help="the run's directory (created; a relative path is taken from here)",
    )
    p.add_argument("--task", help="a built-in task (see `s2s tasks`); default numbers-en-fr")
    p.add_argument(
        "--train",
        help="training pairs: a TSV file (source<TAB>target), or two line-aligned files "
        "SRC,TGT (train.en,train.de); plain or gzipped; or a folder `s2s prepare` wrote",
    )
    p.add_argument("--data", help="a folder `s2s prepare` wrote (the same as --train DIR)")
    p.add_argument("--valid", help="validation pairs, as --train")
    p.add_argument("--test", help="test pairs, as --train (for `s2s eval --split test`)")
    config_flags(
        p,
        "an experiment file (TOML), e.g. experiments/cho2014.toml",
        "override a config field, e.g. --set cell=lstm --set train.steps=100",
    )
    p.add_argument("--steps", type=int, help="train until this step (train.steps)")
    p.add_argument(
        "--parallel",
        help="data parallelism over the devices (train.parallel): "
        "auto, or a mode that `s2s config` lists",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=commands.train)

    q = command(
        "prepare",
        "encode a training corpus once, into a folder that `s2s train --train DIR` opens "
        "memory-mapped in milliseconds (corpora of millions of pairs)",
        "s2s prepare --train train.en.gz,train.de.gz --out data/en-de --set vocab_size=16000\n"
        "  s2s prepare --verify data/en-de",
    )
    q.add_argument("--train", help="training pairs, as `s2s train --train`")
    q.add_argument("--out", help="the folder to write (must not exist)")
    q.add_argument(
        "--verify",
        metavar="DIR",
        help="check a prepared folder in full instead (every file against its manifest, every "
        "id against its vocabulary) and print what was checked",
    )
    config_flags(
        q,
        "an experiment file (TOML): its vocabulary settings",
        "a vocabulary setting, e.g. --set vocab_size=16000 --set joint_vocab=true",
    )
    q.add_argument(
        "--workers",
        type=_positive_int,
        help="encoding processes (default: one per core from 100,000 pairs, else this one)",
    )
    q.set_defaults(run=commands.prepare)

    def search_flags(q):  # translate, eval and export search alike
        q.add_argument(
            "--beam", type=int, help="beam width, 1 for greedy (default: the run's decode.beam)"
        )
        q.add_argument(
            "--alpha",
            type=float,
            help="beam length normalisation (default: the run's decode.alpha)",
        )

    def inference(name, help_, run, example, *, ensemble=True):
        q = command(name, help_, example)
        q.add_argument(  # appended even where one is taken: a second is refused, not ignored
            "--workdir",
            required=True,
            action="append",
            help="a trained run's directory"
            + (
                "; repeat it for an ensemble of runs trained on the same vocabularies (their "
                "probabilities averaged at every step)"
                if ensemble
                else ""
            ),
        )
        q.add_argument(
            "--checkpoint",
            type=_checkpoint,
            metavar="best|latest|STEP",
            help="which step to load: the best by train.best_metric (default), the latest, or "
            "any step the run keeps (train.keep_checkpoints)",
        )
        q.add_argument(
            "--average",
            type=_positive_int,
            metavar="N",
            help="the mean of the parameters of the run's N latest checkpoints (it must keep "
            "them: train.keep_checkpoints)",
        )
        q.set_defaults(run=run)
        return q

    def line_flags(q, *, crop: bool):
        q.add_argument(
            "--input", metavar="FILE", help="read the lines from FILE instead of standard input"
        )
        q.add_argument(
            "--output",
            metavar="FILE",
            help="write the answers to FILE (batch by batch) instead of standard output",
        )
        choices = ("crop", "skip", "refuse") if crop else ("skip", "refuse")
        q.add_argument(
            "--too-long",
            choices=choices,
            default=choices[0],
            help="a line longer than the model reads: "
            + ("crop it to max_src_len tokens (default), " if crop else "")
            + "skip it (an empty answer"
            + ("" if crop else ", nan")
            + "), or refuse (an error); the lines concerned are listed on stderr",
        )

    q = inference(
        "translate",
        "translate arguments, or each line of standard input",
        commands.translate,
        's2s translate --workdir runs/numbers --beam 5 "forty-two"',
    )
    search_flags(q)
    q.add_argument(
        "--n-best",
        type=_positive_int,
        help="print the N best hypotheses of each input, one per line: input number (from 1), "
        "rank, score (log P over GNMT's length penalty, the ranking key), log P, text; "
        "implies a beam of at least N",
    )
    q.add_argument(
        "--min-len", type=int, default=0, help="no translation ends before this many tokens"
    )
    q.add_argument(
        "--no-repeat-ngram",
        type=int,
        default=0,
        metavar="N",
        help="no translation holds the same N tokens twice (0: off)",
    )
    q.add_argument(
        "--sample",
        action="store_true",
        help="draw each translation from the model instead of searching for the most likely",
    )
    q.add_argument("--temperature", type=float, help="with --sample (default 1)")
    q.add_argument(
        "--top-k", type=int, help="with --sample: only the K most likely tokens (default 0: all)"
    )
    q.add_argument(
        "--top-p",
        type=float,
        help="with --sample: only the most likely tokens whose probability reaches P (1: all)",
    )
    q.add_argument("--seed", type=int, help="with --sample: the same seed, same draws (default 0)")
    q.add_argument(
        "--align",
        action="store_true",
        help="print each translation, a tab, and its hard alignment: source-target token "
        "index pairs from 0 (`0-0 2-1`), each output token with the source token it attended "
        "to most (models with attention)",
    )
    q.add_argument(
        "--heatmap",
        metavar="DIR",
        help="write each translation's attention weights as DIR/0001.png, ... (matplotlib)",
    )
    line_flags(q, crop=True)
    q.add_argument(
        "text", nargs="*", help="sentences to translate (none: --input, or standard input)"
    )

    q = inference(
        "score",
        "print log P(target | source) (natural log, </s> included) of each line of standard "
        "input (or --input), written source<TAB>target",
        commands.score,
        "printf 'forty-two\\tquarante-deux\\n' | s2s score --workdir runs/numbers",
    )
    line_flags(q, crop=False)

    q = inference(
        "eval",
        "print the task metrics of a trained model as JSON",
        commands.evaluate,
        "s2s eval --workdir runs/numbers --split test --beam 5",
    )
    q.add_argument(
        "--split", choices=("valid", "test"), help="which split of the run's data (default: test)"
    )
    q.add_argument(
        "--file",
        help="evaluate on these pairs instead of a split: a TSV file, or SRC,TGT line-aligned "
        "files, plain or gzipped (a source on several lines counts as right when the output "
        "matches any of its targets)",
    )
    search_flags(q)
    q.add_argument("--limit", type=_positive_int, help="evaluate on the first N pairs only")
    q.add_argument("--output", help="write the hypotheses to this file, one per line")
    q.add_argument(
        "--tok-bleu",
        metavar="LANG",
        help="also report bleu_tok, the BLEU the WMT shared tasks published: hypotheses and "
        "references punctuation-normalised, lowercased and Moses-tokenised for the target "
        "language LANG (de, fr, en, ...), scored without further tokenisation",
    )
    q.add_argument(
        "--tok-refs",
        metavar="FILE",
        help="with --tok-bleu: the references already prepared that way, one line per pair "
        "(e.g. Multi30k's test_2016_flickr.lc.norm.tok.de)",
    )

    q = inference(
        "export",
        "write the model's translate function (jax.export), parameters and vocabularies to one "
        "file, which s2s_jax/inference/standalone.py runs with jax and numpy alone",
        commands.export,
        "s2s export --workdir runs/numbers --out numbers.s2s && python standalone.py "
        'numbers.s2s "forty-two"',
        ensemble=False,
    )
    q.add_argument("--out", required=True, help="the file to write, e.g. model.s2s")
    search_flags(q)
    q.add_argument(
        "--platforms",
        help="where the file may run, comma-separated (default: cpu,cuda,tpu, "
        "inference.export.PLATFORMS)",
    )

    q = inference(
        "serve",
        "answer translation requests over HTTP (POST /translate, GET /health, GET /info), "
        'decoding concurrent requests together; needs pip install -e ".[serve]"',
        commands.serve,
        "s2s serve --workdir runs/numbers --port 8080",
    )
    q.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    q.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    q.add_argument(
        "--max-batch",
        type=_positive_int,
        help="sentences decoded together at most (default: the run's decode.sentences_per_batch)",
    )
    q.add_argument(
        "--max-wait-ms",
        type=float,
        default=5.0,
        help="how long a queued sentence waits for its batch to fill (default 5 ms)",
    )
    q.add_argument(
        "--max-queue",
        type=_positive_int,
        default=1024,
        help="sentences queued at most; beyond, requests get 503 with Retry-After (default 1024)",
    )
    q.add_argument(
        "--max-inputs",
        type=_positive_int,
        default=64,
        help="sentences in one request at most (default 64)",
    )
    q.add_argument(
        "--warm-beams",
        default="",
        metavar="K,K",
        help="beam widths to compile at start-up besides greedy and the run's decode.beam, "
        "e.g. 5,10 (other widths compile on first use)",
    )
    q.add_argument(
        "--max-body-bytes",
        type=_positive_int,
        default=1 << 20,
        metavar="BYTES",
        help="the largest request body read; larger ones get 413 (default 1048576: 1 MiB)",
    )
    q.add_argument(
        "--stop-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="on SIGTERM or Ctrl-C, how long the requests in flight may take to be answered "
        "before the server exits anyway (default 30)",
    )

    sub.add_parser("bench", help="benchmark scan-based RNNs (s2s bench --help)")  # see main

    q = command("tasks", "list the built-in tasks and their recommended steps", "s2s tasks")
    q.set_defaults(run=commands.tasks)
    q = command(
        "config",
        "list every config key (for --set) with its value: the defaults, or what a run of "
        "--config FILE and --set would get",
        "s2s config --config experiments/bahdanau2015.toml --set dropout=0.2",
    )
    q.add_argument("--config", help="an experiment file (TOML), as for `s2s train`")
    q.add_argument("--smoke", action="store_true", help="apply the config file's [smoke] variant")
    q.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="as for `s2s train`"
    )
    q.set_defaults(run=commands.config)
    return parser
