"""What is trained: random memorization sets, the real datasets (read and verified), the
paper's memorization models and the real-task models. Imports only core.
"""
