"""What the book measures: the results cache and the one module that reads it (records),
Optuna storage, the capacity search, the quantization and fill studies, the real tasks, the
MI checks, the advisor. Imports engine, nets and core.
"""
