"""What the reader sees: claims and their verdicts, chapter tables, plots, widgets, each
chapter's configuration, profiles, the papermill/Jupyter Book runner and the CLI. The top.
"""
