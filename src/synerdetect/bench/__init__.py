"""Benchmarks: component costs, throughput and the ratios the design is judged by (:mod:`.components`), and the
cascade measured on a trained checkpoint (:mod:`.cascade`). The service's load test is
:mod:`synerdetect.serve.loadtest`."""

from .cascade import measure_cascade, run_cascade_bench
from .components import BenchConfig, run_bench

__all__ = ["BenchConfig", "measure_cascade", "run_bench", "run_cascade_bench"]
