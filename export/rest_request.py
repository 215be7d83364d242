"""Build and send TF Serving REST requests to an exported DeepLabV3.

Usage (server started as in export/README.md):
    python export/rest_request.py photo.jpg \
        --url http://localhost:8501/v1/models/deeplab:predict
    python export/rest_request.py photo.jpg --bytes  # serve_image_bytes

The payload builders live in `keras_deeplab.export.serving`, where the tests
feed them through the SavedModel signatures the way TF Serving decodes them.
"""

import argparse
import json
import urllib.request

import numpy as np
from PIL import Image

from keras_deeplab.export.serving import bytes_payload, image_payload


def send(payload: dict, url: str, timeout: float = 60.0) -> dict:
    """POSTs a payload to a TF Serving :predict URL and returns the JSON."""
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", help="JPEG/PNG files")
    parser.add_argument(
        "--url", default="http://localhost:8501/v1/models/deeplab:predict"
    )
    parser.add_argument(
        "--bytes",
        action="store_true",
        help="send encoded files (serve_image_bytes)",
    )
    args = parser.parse_args()
    if args.bytes:
        payload = bytes_payload([open(p, "rb").read() for p in args.images])
    else:
        payload = image_payload(
            np.stack(
                [np.asarray(Image.open(p).convert("RGB")) for p in args.images]
            )
        )
    result = send(payload, args.url)
    class_ids = np.asarray(
        result["outputs"]["class_ids"]
        if "class_ids" in result["outputs"]
        else result["outputs"]
    )
    print(
        f"class ids {class_ids.shape}, classes present "
        f"{np.unique(class_ids).tolist()}"
    )


if __name__ == "__main__":
    main()
