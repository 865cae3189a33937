"""What every KFP component runs inside the container. KFP ships this function's source with each component
(`additional_funcs`), so it imports inside its body and uses only the image's packages (metaheac, torch).
"""

from __future__ import annotations


def run_metaheac_step(step: str, values: dict, published: dict, distributed: bool) -> None:
    """Run `metaheac <step> ...` from a KFP component's arguments, then fill its published artifacts.

    An artifact argument becomes its URI (gs:// on a cluster, a local path under kfp.local; the library
    reads both), a list of artifacts one comma-separated argument. The argv is the Step's own `to_argv()`,
    so the step sees exactly what the console script would. A distributed step runs under torchrun with
    one process per visible GPU. `published` maps an output artifact to (artifact, file of the step's
    output folder): Metrics get the file's flat {name: number}, ClassificationMetrics its ROC curve and
    confusion matrix, HTML a copy of the file.
    """
    import json
    import subprocess
    import sys

    import torch

    from metaheac import storage
    from metaheac.cli import main
    from metaheac.steps.registry import STEPS

    def uri(value: object) -> object:
        if isinstance(value, list):
            return ",".join(str(uri(v)) for v in value)
        return getattr(value, "uri", value)

    arguments = {name: uri(value) for name, value in values.items()}
    argv = STEPS[step](**arguments).to_argv()
    gpus = torch.cuda.device_count() if distributed else 0
    if gpus > 1:
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={gpus}"]
        code = subprocess.call([*torchrun, "-m", "metaheac.cli", *argv])
    else:
        code = main(argv)
    if code:
        raise SystemExit(code)  # the step already printed its one-line error
    for artifact, file in published.values():
        source = storage.join(arguments["output"], file)
        if artifact.schema_title == "system.HTML":
            storage.write_bytes(artifact.path, storage.read_bytes(source))
            continue
        data = json.loads(storage.read_text(source))
        if artifact.schema_title == "system.Metrics":
            for name, value in data.items():
                artifact.log_metric(name, value)
        elif artifact.schema_title == "system.ClassificationMetrics":
            artifact.log_roc_curve(data["fpr"], data["tpr"], data["threshold"])
            artifact.log_confusion_matrix(data["categories"], data["matrix"])
