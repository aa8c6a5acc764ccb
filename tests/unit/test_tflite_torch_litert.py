"""The TFLite -> torch interpreter against LiteRT itself (mediapipe's InferenceCalculator, XNNPACK).

Each of the six models the torch backend uses gets the same real image (scikit-image's
astronaut at the model's input size; mediapipe's ``ImageToTensorCalculator`` at scale 1 is an
exact affine map of the pixels to the model's float range, so both sides see the same tensor)
and every output must agree to 1e-4 of the output's scale (sparse weights included; measured
1e-6 to 5e-6 of it), except the pose model's unused segmentation logits (5e-4; measured 1.4e-4).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from google.protobuf import text_format
from mediapipe.framework import calculator_pb2
from mediapipe.python import packet_creator, packet_getter
from mediapipe.python._framework_bindings import calculator_graph, image_frame, timestamp
from numpy.typing import NDArray

from services.inference.tflite_torch import TFLiteModule
from services.inference.torch_models import model_dir
from shared.testkit.photos import astronaut

pytestmark = pytest.mark.unit

MODELS = (  # model, input side, float range low end
    ("face_detection/face_detection_short_range.tflite", 128, -1.0),
    ("face_detection/face_detection_full_range_sparse.tflite", 192, -1.0),
    ("face_landmark/face_landmark.tflite", 192, 0.0),
    ("iris_landmark/iris_landmark.tflite", 64, 0.0),
    ("pose_detection/pose_detection.tflite", 224, -1.0),
    ("pose_landmark/pose_landmark_full.tflite", 256, 0.0),
)

GRAPH = """
input_stream: "image"
output_stream: "floats"
node {{ calculator: "ImageToTensorCalculator" input_stream: "IMAGE:image" output_stream: "TENSORS:t"
  options {{ [mediapipe.ImageToTensorCalculatorOptions.ext] {{
    output_tensor_width: {size} output_tensor_height: {size} keep_aspect_ratio: false
    output_tensor_float_range {{ min: {lo} max: 1.0 }} border_mode: BORDER_ZERO }} }} }}
node {{ calculator: "InferenceCalculator" input_stream: "TENSORS:t" output_stream: "TENSORS:o"
  options {{ [mediapipe.InferenceCalculatorOptions.ext] {{ model_path: "{model}" delegate {{ xnnpack {{}} }} }} }} }}
node {{ calculator: "SplitTensorVectorCalculator" input_stream: "o" output_stream: "one"
  options {{ [mediapipe.SplitVectorCalculatorOptions.ext] {{ ranges: {{ begin: {index} end: {end} }} }} }} }}
node {{ calculator: "TensorsToFloatsCalculator" input_stream: "TENSORS:one" output_stream: "FLOATS:floats" }}
"""


def litert(model: str, size: int, lo: float, rgb: NDArray[np.uint8], index: int) -> NDArray[np.float64]:
    """Output ``index`` of ``model`` run by mediapipe's own LiteRT graph on ``rgb`` (size x size)."""
    text = GRAPH.format(size=size, lo=lo, model=model, index=index, end=index + 1)
    graph = calculator_graph.CalculatorGraph(
        graph_config=text_format.Parse(text, calculator_pb2.CalculatorGraphConfig())
    )
    out: list[NDArray[np.float64]] = []
    graph.observe_output_stream("floats", lambda _s, p: out.append(np.array(packet_getter.get_float_list(p))))
    graph.start_run()
    packet = packet_creator.create_image_frame(image_format=image_frame.ImageFormat.SRGB, data=rgb)
    graph.add_packet_to_input_stream("image", packet.at(timestamp.Timestamp(1)))
    graph.close()
    return out[0]


@pytest.mark.parametrize(("name", "size", "lo"), MODELS)
def test_every_output_matches_litert(name: str, size: int, lo: float) -> None:
    rgb = cv2.resize(cv2.cvtColor(astronaut(), cv2.COLOR_BGR2RGB), (size, size), interpolation=cv2.INTER_AREA)
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    path = str(model_dir() / name)
    module = TFLiteModule(path).eval()
    x = torch.from_numpy(rgb).float()[None] * ((1.0 - lo) / 255.0) + lo
    with torch.inference_mode():
        outputs = [o.reshape(-1).numpy() for o in module(x)]
    for index, got in enumerate(outputs):
        ref = litert(path, size, lo, rgb, index)
        assert ref.shape == got.shape, (name, index)
        scale = max(1.0, float(np.abs(ref).max()))
        diff = float(np.abs(ref - got).max())
        print(name, module.output_names[index], f"max |diff| {diff:.2e} of scale {scale:.1f}")
        # pose's segmentation logits (unused here) pass several resizes: 2e-4 of their scale
        bound = 5e-4 if module.output_names[index] == "Identity_2" and "pose_landmark" in name else 1e-4
        assert diff <= bound * scale, (name, index, diff, scale)
