"""`s2s train | translate | score | eval | export | serve | bench | tasks | config`: parse, call
the library, print.

Errors a user can cause are printed as one line (`s2s: error: ...`) with exit status 2; a file
that cannot be written (a full disk) likewise, with exit status 1; a signal with 128 + its number.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from s2s_jax import compile_cache
from s2s_jax.cli.parser import build_parser
from s2s_jax.errors import S2SError
from s2s_jax.run.stopping import Interrupted, StopSignals

# The commands that compile, and so load what an earlier launch compiled. Not `bench`: it
# reports compile times.
_COMPILING = ("train", "translate", "score", "eval", "serve")


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
