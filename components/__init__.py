"""The pipeline steps as TorchX and KFP components: generated files (generate.py) over the step classes."""
