"""The floor: what every layer may use. Validation with errors that name the parameter,
devices, progress bars, the information measures of Eq. (1), seeds derived from names, the
paper's reference values and the verdict arithmetic. Imports nothing else of capq_lib.
"""
