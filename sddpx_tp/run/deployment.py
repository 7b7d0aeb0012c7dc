"""What a deployment needs beside the weights, written into every exported ONNX file as metadata.

Output ``i`` of an exported model is the class of ``class_folders[i]`` (the run's folder order), named
``class_names[i]`` (the source model's name for it, or the folder with a fitted head), which was output
``source_outputs[i]`` of the source model (null with a fitted head). ``preprocessing`` says how an image
becomes the input, as the run prepared its references. Values are JSON; keys carry sddpx-tp's prefix
(:func:`sddpx_tp.export.onnx.read_metadata` reads them back without it).
"""

from __future__ import annotations

import json

from sddpx_tp.run.rebuild import run_spec
from sddpx_tp.run.settings import RunSettings


def deployment_metadata(settings: RunSettings) -> dict[str, str]:
    """What a deployment needs beside the weights, as ONNX metadata (JSON values): each output's class in order
    (its folder, its name in the source model, its output there) and the preprocessing the run used."""
    assert settings.resolved is not None
    spec = run_spec(settings)
    fitted = settings.config.head.mode == "fit"
    folders = list(settings.resolved.class_folders)
    names = spec.class_names or []
    outputs = list(settings.resolved.classes)
    class_names = folders if fitted else [names[index] if index < len(names) else folder
                                          for folder, index in zip(folders, outputs, strict=True)]  # fmt: skip
    preprocessing = {"input_size": spec.input_size, "resize_size": spec.resize_size, "mean": list(spec.mean),
                     "std": list(spec.std), "layout": "NCHW, float32, RGB",
                     "steps": "resize the shorter side to resize_size (antialiased), centre-crop input_size, "
                              "scale to [0, 1], subtract mean and divide by std per channel"}  # fmt: skip
    return {"class_folders": json.dumps(folders), "class_names": json.dumps(class_names),
            "source_outputs": json.dumps(None if fitted else outputs),
            "preprocessing": json.dumps(preprocessing)}  # fmt: skip
