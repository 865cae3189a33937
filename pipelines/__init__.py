"""The MetaHeac KFP pipeline: the DAG, its compile/submit/schedule CLI (`python -m pipelines`) and local runs."""
