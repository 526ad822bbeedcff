"""capq: memorization capacity of neural networks and what parameter quantization does to it."""

__version__ = "0.1.0"
