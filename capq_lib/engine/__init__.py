"""How nets are trained and probed: schedules and optimizers, one net, a population of
nets as one batched computation, the quantizer, loss surfaces. Imports nets and core.
"""
