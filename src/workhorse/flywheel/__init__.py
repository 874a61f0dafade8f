"""The flywheel: training data from the call log, training, the gate against the incumbent, promotion."""
