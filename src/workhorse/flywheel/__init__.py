"""The flywheel: the call log turned back into training data for the small model, a candidate
trained on it, gated against the incumbent and promoted.

`dataset.build` reads a task's logged calls (and any labelled data), keeps the answers worth
learning from (feedback, then labelled data, then the large model's, then the small model's own
confident ones), merges duplicates by normalised text and splits the rows by a hash of that text,
so a row keeps its split however the dataset grows. `output` writes each build as a new version.
`train` fits a candidate on such a dataset and `gate` decides whether it replaces the active version.
"""
