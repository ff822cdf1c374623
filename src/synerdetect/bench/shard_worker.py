"""``python -m synerdetect.bench.shard_worker SPEC_JSON``: one rank of the sharded cache-build measurement, started
as a subprocess by :func:`synerdetect.bench.components.run_bench` (a module of its own so that running it does not
re-import the module it is launched from)."""

import sys

from .components import shard_worker

if __name__ == "__main__":
    sys.exit(shard_worker(sys.argv[1:]))
