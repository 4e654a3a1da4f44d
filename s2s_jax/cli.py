"""`s2s train | translate | score | eval | bench | tasks`: parse, call the library, print.

Errors a user can cause are printed as one line (`s2s: error: ...`) with exit status 2; a file
that cannot be written (a full disk) likewise, with exit status 1; a signal with 128 + its number.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from s2s_jax import compile_cache
from s2s_jax.errors import DataError, S2SError
from s2s_jax.training.stopping import Interrupted, StopSignals


def _train(args, stop) -> int:
    from s2s_jax.training import config, loop, parallel

    parallel.initialize_distributed()
    requested = config.load_file(args.config, smoke=args.smoke) if args.config else {}
    overrides = config.parse_overrides(args.set)
    if args.task and args.train:
        raise S2SError("give either --task or --train/--valid, not both")
    cli = {"train": {}}
    if args.task:  # the data of a run is its task or its files, never a mix
        cli["train"].update(task=args.task, train_file="", valid_file="", test_file="")
    if args.train:
        cli["train"]["task"] = config.TSV_TASK
    for name, value in (
        ("train_file", args.train),
        ("valid_file", args.valid),
        ("test_file", args.test),
        ("steps", args.steps),
        ("parallel", args.parallel),
    ):
        if value is not None:
            cli["train"][name] = value
    requested = config.merge(requested, cli, overrides)  # loop.fit makes paths absolute
    result = loop.fit(args.workdir, requested, progress=not args.no_progress, stop=stop)
    print(json.dumps(result))
    return 0


def _stdin_lines() -> list[str]:
    """Standard input's lines, decoded as UTF-8 (a line that is not names itself)."""
    lines = []
    for number, raw in enumerate(sys.stdin.buffer, 1):
        try:
            lines.append(raw.decode("utf-8").rstrip("\r\n"))
        except UnicodeDecodeError as e:
            raise DataError(
                f"stdin:{number}: not UTF-8 ({e.reason} at byte {e.start}); "
                "convert the input to UTF-8"
            ) from None
    return lines


def _load(args):
    """The `Translator` of `--workdir` (several: their ensemble), `--checkpoint`, `--average`."""
    from s2s_jax.inference.translate import Translator

    return Translator.from_workdirs(args.workdir, **_which(args))


def _which(args) -> dict:
    """`--checkpoint` and `--average` as `which` and `average`; both at once are refused."""
    if args.average and args.checkpoint is not None:
        raise S2SError(
            "--average N takes the N latest checkpoints: drop --checkpoint, or --average"
        )
    return {"which": args.checkpoint or "best", "average": args.average or 0}


def _translate(args, stop) -> int:
    translator = _load(args)
    lines = list(args.text) if args.text else _stdin_lines()
    unknown = translator.unknown_tokens(lines)
    if unknown:
        shown = ", ".join(repr(t) for t, _ in unknown.most_common(5))
        print(
            f"{sum(unknown.values())} input token(s) not in the source vocabulary, read as "
            f"<unk>: {shown}{', ...' if len(unknown) > 5 else ''}",
            file=sys.stderr,
        )
    sample = None
    if args.sample:
        if args.beam is not None or args.n_best is not None:
            raise S2SError("--sample draws one translation per input: drop --beam and --n-best")
        from s2s_jax.inference.translate import Sampling

        sample = Sampling(args.seed, args.temperature, args.top_k, args.top_p)
    limits = dict(alpha=args.alpha, min_len=args.min_len, no_repeat_ngram=args.no_repeat_ngram)
    if args.align or args.heatmap:
        if args.sample or args.n_best is not None:
            raise S2SError(
                "--align and --heatmap show the best translation: drop --sample, --n-best"
            )
        alignments = translator.align(lines, beam=args.beam, **limits)
        if args.heatmap:
            from s2s_jax.inference.heatmap import save_heatmap

            for number, a in enumerate(alignments, 1):
                save_heatmap(a, os.path.join(args.heatmap, f"{number:04d}.png"))
        for a in alignments:  # source-target token index pairs, as fairseq's A- lines
            pairs = " ".join(f"{i}-{j}" for i, j in a.pairs())
            print(f"{a.text}\t{pairs}" if args.align else a.text)
        return 0
    if args.n_best is None:
        for text in translator.translate(lines, beam=args.beam, sample=sample, **limits):
            print(text)
        return 0
    beam = args.beam if args.beam is not None else max(args.n_best, translator.decode_cfg.beam)
    out = translator.translate(lines, beam=beam, n_best=args.n_best, **limits)
    for number, hyps in enumerate(out, 1):  # input line, rank, score, log P, text
        for rank, h in enumerate(hyps, 1):
            print(f"{number}\t{rank}\t{h.score:.4f}\t{h.log_prob:.4f}\t{h.text}")
    return 0


def _score(args, stop) -> int:
    pairs = []
    for number, line in enumerate(_stdin_lines(), 1):
        if line.count("\t") != 1:
            raise DataError(f"stdin:{number}: write one source<TAB>target pair per line")
        pairs.append(tuple(line.split("\t")))
    translator = _load(args)
    for score in translator.score(pairs):
        print(f"{score:.6f}")
    return 0


def _eval(args, stop) -> int:
    from s2s_jax.inference import evaluate

    if args.file is not None and args.split is not None:
        raise S2SError("give either --split or --file, not both")
    result = evaluate.evaluate_workdir(
        args.workdir,
        split=args.split or "test",
        file=args.file,
        beam=args.beam,
        alpha=args.alpha,
        limit=args.limit,
        **_which(args),
        output=args.output,
    )
    print(json.dumps(result, indent=None))
    return 0


def _export(args, stop) -> int:
    from s2s_jax.inference import export

    if len(args.workdir) > 1:
        raise S2SError("s2s export takes one --workdir: an ensemble cannot be exported")
    platforms = export.PLATFORMS
    if args.platforms is not None:
        platforms = tuple(p.strip() for p in args.platforms.split(",") if p.strip())
    result = export.export_workdir(
        args.workdir[0],
        args.out,
        **_which(args),
        beam=args.beam,
        alpha=args.alpha,
        platforms=platforms,
    )
    print(json.dumps(result))
    return 0


def _tasks(args, stop) -> int:
    from s2s_jax.data import describe_tasks
    from s2s_jax.data.tasks import recommended_steps

    for name, description in describe_tasks():
        print(f"{name}\t{recommended_steps(name)} steps\t{description}")
    return 0


def _config(args, stop) -> int:
    import dataclasses

    from s2s_jax.training import config

    requested = config.load_file(args.config, smoke=args.smoke) if args.config else {}
    values = config.merge(config.DEFAULTS, requested, config.parse_overrides(args.set))
    configs = config.build(values)  # validates, and fills in every default
    for (section, cls), cfg in zip(config.SECTIONS.items(), configs):
        comments = config.field_comments(cls)
        for field in dataclasses.fields(cls):
            comment = f"  # {comments[field.name]}" if field.name in comments else ""
            print(f"{section}.{field.name}={getattr(cfg, field.name)}{comment}")
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("s2s-jax")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"


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
    p.add_argument("--train", help="training pairs, TSV source<TAB>target")
    p.add_argument("--valid", help="validation pairs, TSV")
    p.add_argument("--test", help="test pairs, TSV (for `s2s eval --split test`)")
    p.add_argument("--config", help="an experiment file (TOML), e.g. experiments/cho2014.toml")
    p.add_argument("--smoke", action="store_true", help="apply the config file's [smoke] variant")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set cell=lstm --set train.steps=100",
    )
    p.add_argument("--steps", type=int, help="train until this step (train.steps)")
    p.add_argument(
        "--parallel",
        help="data parallelism over the devices (train.parallel): "
        "auto, or a mode that `s2s config` lists",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=_train)

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
            choices=("best", "latest"),
            help="which step to load: the best by train.best_metric (default) or the latest",
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

    q = inference(
        "translate",
        "translate arguments, or each line of standard input",
        _translate,
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
    q.add_argument("--temperature", type=float, default=1.0, help="with --sample (default 1)")
    q.add_argument(
        "--top-k", type=int, default=0, help="with --sample: only the K most likely tokens (0: all)"
    )
    q.add_argument(
        "--top-p",
        type=float,
        default=1.0,
        help="with --sample: only the most likely tokens whose probability reaches P (1: all)",
    )
    q.add_argument("--seed", type=int, default=0, help="with --sample: the same seed, same draws")
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
    q.add_argument("text", nargs="*", help="sentences to translate (none: read standard input)")

    inference(
        "score",
        "print log P(target | source) (natural log, </s> included) of each line of standard "
        "input, written source<TAB>target",
        _score,
        "printf 'forty-two\\tquarante-deux\\n' | s2s score --workdir runs/numbers",
    )

    q = inference(
        "eval",
        "print the task metrics of a trained model as JSON",
        _eval,
        "s2s eval --workdir runs/numbers --split test --beam 5",
    )
    q.add_argument(
        "--split", choices=("valid", "test"), help="which split of the run's data (default: test)"
    )
    q.add_argument(
        "--file",
        help="evaluate on this TSV file of source<TAB>target pairs instead of a split (a source "
        "on several lines counts as right when the output matches any of its targets)",
    )
    search_flags(q)
    q.add_argument("--limit", type=_positive_int, help="evaluate on the first N pairs only")
    q.add_argument("--output", help="write the hypotheses to this file, one per line")

    q = inference(
        "export",
        "write the model's translate function (jax.export), parameters and vocabularies to one "
        "file, which s2s_jax/inference/standalone.py runs with jax and numpy alone",
        _export,
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

    sub.add_parser("bench", help="benchmark scan-based RNNs (s2s bench --help)")  # see main

    q = command("tasks", "list the built-in tasks and their recommended steps", "s2s tasks")
    q.set_defaults(run=_tasks)
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
    q.set_defaults(run=_config)
    return parser


# The commands that compile, and so load what an earlier launch compiled. Not `bench`: it
# reports compile times.
_COMPILING = ("train", "translate", "score", "eval")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # its own flags, --help included
        from s2s_jax import bench

        return bench.main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command in _COMPILING:
        compile_cache.enable()
    try:
        with StopSignals() as stop:  # SIGTERM, like Ctrl-C, ends with one line
            return args.run(args, stop)
    except S2SError as e:
        print(f"s2s: error: {e}", file=sys.stderr)
        return e.exit_status
    except Interrupted as e:
        print(f"s2s: {e}", file=sys.stderr)
        return e.exit_status
    except KeyboardInterrupt:
        print("s2s: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `s2s ... | head`: the reader has gone, as for any Unix filter
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 141
    except OSError as e:  # the machine, not the user: a full disk, a read-only filesystem
        where = f"{e.filename}: " if e.filename else ""
        print(f"s2s: error: {where}{e.strerror or e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
