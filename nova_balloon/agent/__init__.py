"""The compute-node agent: the oslo.service that runs the control cycle."""
