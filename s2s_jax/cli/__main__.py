"""`python -m s2s_jax.cli ...` runs the `s2s` command (no script on PATH needed)."""

import sys

from s2s_jax.cli import main

sys.exit(main())
