"""What every KFP component runs inside the container. KFP ships this function's source with each component
(`additional_funcs`), so it imports inside its body and uses only the image's packages (metaheac, torch).
"""

from __future__ import annotations


def run_metaheac_step(step: str, values: dict) -> None:
    """Run `metaheac <step> ...` from a KFP component's arguments (its `locals()`), then fill its published
    artifacts. In a local run an unchanged cached step is reused instead (metaheac/steps/reuse.py).

    An artifact argument becomes its URI (gs:// on a cluster, a local path under kfp.local; the library
    reads both), numbered artifacts (`scores_0`, `scores_1`, ...) one comma-separated argument. An optional
    argument arrives as a string, "" or None when not given (see components/generate.py). The argv is the
    Step's own `to_argv()`, so the step sees exactly what the console script would. A distributed step runs
    under torchrun with one process per visible GPU. A published artifact is filled from a file of the
    step's output folder: Metrics get its flat {name: number}, ClassificationMetrics its ROC curve and
    confusion matrix, HTML a copy of the file.
    """
    import json
    import subprocess
    import sys

    import torch

    from metaheac.cli import main
    from metaheac.runtime import storage
    from metaheac.steps import reuse
    from metaheac.steps.catalog import STEPS

    cls = STEPS[step]
    arguments = {}
    for argument in cls.arguments():
        artifact = cls.artifacts.get(argument.name)
        if artifact and artifact.many:
            prefix = f"{argument.name}_"
            numbered = {int(k[len(prefix):]): v for k, v in values.items()
                        if k.startswith(prefix) and k[len(prefix):].isdigit() and v is not None}
            arguments[argument.name] = ",".join(numbered[i].uri for i in sorted(numbered))
            continue
        value = values[argument.name]
        value = getattr(value, "uri", value)
        if argument.optional and value in ("", None):
            value = None
        elif argument.optional:
            value = argument.kind(value)
        arguments[argument.name] = value
    reused = reuse.reuse(cls, arguments)  # only in a local run (pipelines/local.py): KFP caches on a cluster
    if reused:
        print(f"metaheac {step}: reused the result of an earlier local run with the same inputs and arguments")
    else:
        argv = cls(**arguments).to_argv()
        gpus = torch.cuda.device_count() if cls.distributed else 0
        if gpus > 1:
            torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={gpus}"]
            code = subprocess.call([*torchrun, "-m", "metaheac.cli", *argv])
        else:
            code = main(argv)
        if code:
            raise SystemExit(code)  # the step already printed its one-line error
        reuse.record(cls, arguments)
    reuse.note(cls, arguments, reused)
    for name, extra in cls.published.items():
        artifact, source = values[name], storage.join(arguments["output"], extra.file)
        if extra.kind == "HTML":
            storage.write_bytes(artifact.path, storage.read_bytes(source))
            continue
        data = json.loads(storage.read_text(source))
        if extra.kind == "Metrics":
            for key, number in data.items():
                artifact.log_metric(key, number)
        elif extra.kind == "ClassificationMetrics":
            artifact.log_roc_curve(data["fpr"], data["tpr"], data["threshold"])
            artifact.log_confusion_matrix(data["categories"], data["matrix"])
