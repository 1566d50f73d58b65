"""vtbench: benchmarks and ablations of cheaper video-transformer training."""

__version__ = "0.1.0"
