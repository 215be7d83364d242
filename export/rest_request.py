"""Build and send TF Serving REST requests to an exported DeepLabV3.

Usage (server started as in export/README.md):
    python export/rest_request.py photo.jpg \
        --url http://localhost:8501/v1/models/deeplab:predict
    python export/rest_request.py photo.jpg --bytes --out masks/  # PNG maps

The payload builders and response decoders live in
`keras_deeplab.export.serving`, where the tests feed them through the
SavedModel signatures the way TF Serving decodes and answers them.
"""

import argparse
import json
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

from keras_deeplab.export.serving import (
    CLASS_IDS_OUTPUT,
    MASK_PNG_OUTPUT,
    bytes_payload,
    decode_mask_pngs,
    decode_response,
    image_payload,
)


def send(payload: dict, url: str, timeout: float = 60.0) -> dict:
    """POSTs a payload to a TF Serving :predict URL and returns the JSON."""
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def class_maps(payload: dict, response: dict) -> np.ndarray:
    """Class ids (B, H, W) from either signature's response."""
    outputs = decode_response(response, payload["signature_name"])
    if MASK_PNG_OUTPUT in outputs:
        return decode_mask_pngs(outputs[MASK_PNG_OUTPUT])
    return outputs[CLASS_IDS_OUTPUT]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", help="JPEG/PNG files")
    parser.add_argument(
        "--url", default="http://localhost:8501/v1/models/deeplab:predict"
    )
    parser.add_argument(
        "--bytes",
        action="store_true",
        help="send encoded files (serve_image_bytes); the answer is PNGs",
    )
    parser.add_argument(
        "--out", default=None, help="folder for <image>_mask.png class maps"
    )
    args = parser.parse_args(argv)
    if args.bytes:
        payload = bytes_payload([Path(p).read_bytes() for p in args.images])
    else:
        payload = image_payload(
            np.stack(
                [np.asarray(Image.open(p).convert("RGB")) for p in args.images]
            )
        )
    maps = class_maps(payload, send(payload, args.url))
    for path, class_ids in zip(args.images, maps, strict=True):
        print(
            f"{path}: class ids {class_ids.shape}, classes present "
            f"{np.unique(class_ids).tolist()}"
        )
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            mask = Path(args.out) / f"{Path(path).stem}_mask.png"
            wide = class_ids.max() > 255  # 16-bit PNG past 256 classes
            Image.fromarray(
                class_ids.astype(np.uint16 if wide else np.uint8)
            ).save(mask)


if __name__ == "__main__":
    main()
