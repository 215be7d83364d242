"""Build and send TF Serving gRPC PredictRequests to an exported DeepLabV3.

Needs `tensorflow-serving-api`; beside tensorflow-cpu install it with
`pip install --no-deps tensorflow-serving-api grpcio` (its metadata asks for
the full tensorflow wheel).

Usage:
    python export/grpc_request.py photo.jpg --target localhost:8500
"""

import argparse

import numpy as np
import tensorflow as tf
from PIL import Image

from keras_deeplab.export.serving import predict_request


def send(request, target="localhost:8500", timeout=60.0):
    """Calls PredictionService/Predict; returns {output name: ndarray}."""
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(request, timeout=timeout)
    return {
        name: tf.make_ndarray(proto) for name, proto in response.outputs.items()
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", help="JPEG/PNG files, one size")
    parser.add_argument("--target", default="localhost:8500")
    parser.add_argument("--model-name", default="deeplab")
    args = parser.parse_args()
    images = np.stack(
        [np.asarray(Image.open(p).convert("RGB")) for p in args.images]
    )
    outputs = send(
        predict_request(images, model_name=args.model_name), args.target
    )
    print({name: value.shape for name, value in outputs.items()})


if __name__ == "__main__":
    main()
