import sys

from rpo_bench.cli import main

sys.exit(main())
