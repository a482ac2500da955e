"""`python -m autoresearch_kernel`: the same entry point as the `autoresearch` console script."""
from autoresearch_kernel.cli import main

raise SystemExit(main())
