"""The `s2s` subcommands: each reads its parsed arguments, calls the library and prints. The
library is imported inside each command, so that `s2s --help` and option errors do not wait
for JAX."""

from __future__ import annotations

import collections
import json
import os
import sys

from s2s_jax.cli import lines
from s2s_jax.errors import DataError, S2SError


def train(args, stop) -> int:
    from s2s_jax.run import config, mesh, workdir
    from s2s_jax.training import loop

    mesh.initialize_distributed()
    requested = config.load_file(args.config, smoke=args.smoke) if args.config else {}
    overrides = config.parse_overrides(args.set)
    if args.data and args.train:
        raise S2SError("--data DIR is --train DIR: give one of them")
    args.train = args.train or args.data
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
    data = requested.get("train", {})
    if args.config and not (data.get("task") or data.get("train_file")):
        if not workdir.exists(args.workdir):  # a new run: the default task would be a surprise
            raise S2SError(
                f"{args.config} names no data: give --train FILE --valid FILE, or --task NAME "
                '(or task = "NAME" under its [train])'
            )
    result = loop.fit(args.workdir, requested, progress=not args.no_progress, stop=stop)
    print(json.dumps(result))
    return 0


def prepare(args, stop) -> int:
    if args.verify:  # numpy alone: no JAX to start
        from s2s_jax.training.prepared_checks import verify_folder

        if args.train or args.out or args.config or args.set:
            raise S2SError("--verify DIR checks a prepared folder: drop the other options")
        print(json.dumps(verify_folder(args.verify)))
        return 0
    from s2s_jax.run import config
    from s2s_jax.training.plan import absolute_paths
    from s2s_jax.training.prepared_data import prepare_corpus

    if not (args.train and args.out):
        raise S2SError("give --train FILES and --out DIR (or --verify DIR)")
    requested = config.load_file(args.config, smoke=args.smoke) if args.config else {}
    # valid_file: a corpus run names both; prepare reads only the training pairs
    data = {"task": config.TSV_TASK, "train_file": args.train, "valid_file": args.train}
    requested = config.merge(requested, {"train": data}, config.parse_overrides(args.set))
    requested["train"].update(data)
    _, train_cfg, _ = config.build(config.merge(config.DEFAULTS, absolute_paths(requested)))
    log = lambda line: print(line, file=sys.stderr)
    manifest = prepare_corpus(train_cfg, args.out, log=log, workers=args.workers)
    print(json.dumps({"out": args.out, **manifest}))
    return 0


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


def _sampling(args):
    """`--sample` and its settings as a `Sampling` (None without it); settings given without
    `--sample`, or out of range, are refused before the model loads."""
    from s2s_jax.inference.outputs import Sampling

    given = {
        flag: value
        for flag, value in (
            ("--temperature", args.temperature),
            ("--top-k", args.top_k),
            ("--top-p", args.top_p),
            ("--seed", args.seed),
        )
        if value is not None
    }
    if not args.sample:
        if given:
            raise S2SError(f"{', '.join(given)} only apply with --sample: add it, or drop them")
        return None
    if args.beam is not None or args.n_best is not None:
        raise S2SError("--sample draws one translation per input: drop --beam and --n-best")
    defaults = Sampling()
    sample = Sampling(
        defaults.seed if args.seed is None else args.seed,
        defaults.temperature if args.temperature is None else args.temperature,
        defaults.top_k if args.top_k is None else args.top_k,
        defaults.top_p if args.top_p is None else args.top_p,
    )
    sample.check()  # top_k's bound, the vocabulary's size, once the model is loaded
    return sample


def _sources(args) -> tuple[str | None, object]:
    """The input (a file, arguments or standard input) as `lines.batches` would give it."""
    if args.text and args.input:
        raise S2SError("give sentences as arguments or with --input FILE, not both")
    if args.text:
        numbered = list(enumerate(args.text, 1))
        return None, lambda size: (numbered[i : i + size] for i in range(0, len(numbered), size))
    return args.input, lambda size: lines.batches(args.input, size)


def _too_long(numbers: list[int], lengths: list[int], most: int, how: str, unit: str) -> None:
    """Refuses the first too-long line when `how` is "refuse"."""
    if how == "refuse":
        for number, n in zip(numbers, lengths):
            if n > most:
                raise DataError(
                    f"line {number} has {n} {unit}; this model reads at most {most}: split it, "
                    "or let --too-long crop or skip it"
                )


def _skipped(args, number: int) -> str:
    """The answer of a line skipped for its length: still one line (n-best: n rows)."""
    if args.n_best is None:
        return "\t" if args.align else ""
    return "\n".join(f"{number}\t{r}\tnan\tnan\t" for r in range(1, args.n_best + 1))


def translate(args, stop) -> int:
    from s2s_jax.inference.outputs import check_given

    sample = _sampling(args)
    limits = dict(alpha=args.alpha, min_len=args.min_len, no_repeat_ngram=args.no_repeat_ngram)
    check_given(beam=args.beam, n_best=args.n_best, **limits)  # before the model loads
    if (args.align or args.heatmap) and (args.sample or args.n_best is not None):
        raise S2SError("--align and --heatmap show the best translation: drop --sample, --n-best")
    path, source = _sources(args)
    translator = _load(args)
    longest, most = translator.train_cfg.max_tgt_len - 1, translator.train_cfg.max_src_len
    if args.min_len > longest:
        print(
            f"warning: --min-len {args.min_len} is beyond this model's longest output "
            f"({longest} tokens, max_tgt_len - 1): every translation ends at its length cap",
            file=sys.stderr,
        )
    beam, n_best = args.beam, args.n_best
    if n_best is not None and beam is None:
        beam = max(n_best, translator.decode_cfg.beam)
    unknown, long = collections.Counter(), []
    with lines.output(args.output) as out, lines.progress(path) as bar:
        for batch in source(translator.decode_cfg.sentences_per_batch):
            numbers, texts = [n for n, _ in batch], [t for _, t in batch]
            lengths = [len(translator.src_vocab.encode(t)) for t in texts]
            _too_long(numbers, lengths, most, args.too_long, "tokens")
            long += [n for n, k in zip(numbers, lengths) if k > most]
            keep = [i for i, k in enumerate(lengths) if k <= most or args.too_long == "crop"]
            unknown.update(translator.unknown_tokens(texts))
            kept = [texts[i] for i in keep]
            if args.align or args.heatmap:
                done = translator.align(kept, beam=beam, crop=True, **limits)
                if args.heatmap:
                    from s2s_jax.inference.heatmap import save_heatmap

                    for i, a in zip(keep, done):
                        save_heatmap(a, os.path.join(args.heatmap, f"{numbers[i]:04d}.png"))
                # The text, then source-target token index pairs, as fairseq's A- lines.
                pairs = lambda a: " ".join(f"{i}-{j}" for i, j in a.pairs())
                answers = [f"{a.text}\t{pairs(a)}" if args.align else a.text for a in done]
            elif n_best is None:
                answers = translator.translate(kept, beam=beam, sample=sample, crop=True, **limits)
            else:  # input line, rank, score, log P, text: n_best lines an input
                hyps = translator.translate(kept, beam=beam, n_best=n_best, crop=True, **limits)
                answers = [
                    "\n".join(
                        f"{numbers[i]}\t{r}\t{h.score:.4f}\t{h.log_prob:.4f}\t{h.text}"
                        for r, h in enumerate(hs, 1)
                    )
                    for i, hs in zip(keep, hyps)
                ]
            answered = dict(zip(keep, answers))
            lines.write(
                out,
                [
                    answered[i] if i in answered else _skipped(args, numbers[i])
                    for i in range(len(batch))
                ],
            )
            bar.update(len(batch))
    if unknown:
        shown = ", ".join(repr(t) for t, _ in unknown.most_common(5))
        print(
            f"{sum(unknown.values())} input token(s) not in the source vocabulary, read as "
            f"<unk>: {shown}{', ...' if len(unknown) > 5 else ''}",
            file=sys.stderr,
        )
    what = "cropped" if args.too_long == "crop" else "skipped (empty answers)"
    lines.report(long, f"longer than {most} tokens (max_src_len) were {what}")
    return 0


def score(args, stop) -> int:
    translator = _load(args)
    most_src, most_tgt = translator.train_cfg.max_src_len, translator.train_cfg.max_tgt_len - 1
    name, skipped = args.input or "stdin", []
    with lines.output(args.output) as out, lines.progress(args.input) as bar:
        for batch in lines.batches(args.input, translator.decode_cfg.sentences_per_batch):
            pairs = []
            for number, line in batch:
                if line.count("\t") != 1:
                    raise DataError(f"{name}:{number}: write one source<TAB>target pair per line")
                pairs.append(tuple(line.split("\t")))
            numbers = [n for n, _ in batch]
            src_len = [len(translator.src_vocab.encode(s)) for s, _ in pairs]
            tgt_len = [len(translator.tgt_vocab.encode(t)) for _, t in pairs]
            _too_long(numbers, src_len, most_src, args.too_long, "source tokens")
            _too_long(numbers, tgt_len, most_tgt, args.too_long, "target tokens")
            fits = [src_len[i] <= most_src and tgt_len[i] <= most_tgt for i in range(len(pairs))]
            keep = [i for i, ok in enumerate(fits) if ok]
            skipped += [n for n, ok in zip(numbers, fits) if not ok]
            scores = dict(zip(keep, translator.score([pairs[i] for i in keep])))
            lines.write(
                out, [f"{scores[i]:.6f}" if i in scores else "nan" for i in range(len(pairs))]
            )
            bar.update(len(batch))
    lines.report(skipped, "too long for this model were skipped (nan)")
    return 0


def evaluate(args, stop) -> int:
    from s2s_jax.inference import evaluate

    if args.file is not None and args.split is not None:
        raise S2SError("give either --split or --file, not both")
    if args.tok_refs is not None and args.tok_bleu is None:
        raise S2SError("--tok-refs goes with --tok-bleu LANG (the language to tokenise for)")
    result = evaluate.evaluate_workdir(
        args.workdir,
        split=args.split or "test",
        file=args.file,
        beam=args.beam,
        alpha=args.alpha,
        limit=args.limit,
        **_which(args),
        output=args.output,
        tok_bleu=args.tok_bleu,
        tok_refs=args.tok_refs,
    )
    print(json.dumps(result, indent=None))
    return 0


def export(args, stop) -> int:
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


def tasks(args, stop) -> int:
    from s2s_jax.data import describe_tasks
    from s2s_jax.data.tasks import recommended_steps

    for name, description in describe_tasks():
        print(f"{name}\t{recommended_steps(name)} steps\t{description}")
    return 0


def config(args, stop) -> int:
    from s2s_jax.run import config

    requested = config.load_file(args.config, smoke=args.smoke) if args.config else {}
    values = config.merge(config.DEFAULTS, requested, config.parse_overrides(args.set))
    print(config.to_toml(*config.build(values)), end="")  # validated, every default filled in
    return 0


def serve(args, stop) -> int:
    try:
        from s2s_jax.serve.server import ServeConfig, listen, serve
    except ImportError as e:  # the optional [serve] extra
        raise S2SError(
            f's2s serve needs {e.name or "starlette and uvicorn"}: pip install -e ".[serve]"'
        ) from None
    if not 0 <= args.port <= 65535:
        raise S2SError(f"--port must be in 0..65535, got {args.port}")
    if args.max_wait_ms < 0:
        raise S2SError(f"--max-wait-ms must be >= 0, got {args.max_wait_ms}")
    try:
        beams = tuple(int(b) for b in args.warm_beams.split(",") if b.strip())
    except ValueError:
        beams = (0,)
    if any(b < 1 for b in beams):
        raise S2SError(f"--warm-beams takes beam widths >= 1, e.g. 5,10; got {args.warm_beams!r}")
    cfg = ServeConfig(
        host=args.host,
        port=args.port,
        max_batch=args.max_batch or 0,
        max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue,
        max_inputs=args.max_inputs,
        warm_beams=beams,
        max_body_bytes=args.max_body_bytes,
        stop_timeout=args.stop_timeout,
    )
    sock = listen(cfg.host, cfg.port)  # before the model loads: a port in use is said at once
    return serve(_load(args), cfg, workdirs=args.workdir, sock=sock)
