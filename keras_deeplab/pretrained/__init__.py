"""Pretrained models: the preset registry, verified downloads, converted once.

A preset name (`registry.MODEL_PRESETS`) or a checkpoint URL becomes a
cached `.keras` file: the checkpoint is downloaded once into `cache_dir()`
(checked against the publisher's SHA-256 where one is published), converted
once without PyTorch (`keras_deeplab.convert`), and the converted model is
kept, so the next use needs no network and no conversion. Public entry
point: `keras_deeplab.from_preset` (in `loading`). Keras-free until a
conversion is due, so `keras-deeplab presets` answers at once.
"""

import difflib
import hashlib
import urllib.parse
from pathlib import Path

from keras_deeplab.convert import ARCHS
from keras_deeplab.pretrained.cache import (
    cached_conversion,
    convert_once,
    converted_path,
)
from keras_deeplab.pretrained.download import (
    DOWNLOADS,
    cache_dir,
    check_sha256,
    download,
    file_sha256,
    mirrored,
)
from keras_deeplab.pretrained.registry import MODEL_PRESETS, Preset
from keras_deeplab.utils.errors import UserInputError

CHECKPOINT_SUFFIXES = (".pth", ".pt")
_URL_SCHEMES = ("http", "https")
# How torch.save files start: a zip archive, or (legacy) pickle protocol 2
# with the magic number as its first object.
_ZIP_MAGIC = b"PK\x03\x04"
_LEGACY_START = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8"

__all__ = [
    "MODEL_PRESETS",
    "Preset",
    "cache_dir",
    "checkpoint_model_file",
    "get_preset",
    "is_preset",
    "is_url",
    "preset_model_file",
    "preset_rows",
    "torch_file_problem",
]


def is_preset(source) -> bool:
    """True for a registered preset name that is not also a local path."""
    text = str(source)
    return text in MODEL_PRESETS and not Path(text).exists()


def is_url(source) -> bool:
    return urllib.parse.urlparse(str(source)).scheme in _URL_SCHEMES


def looks_like_a_name(source) -> bool:
    """No folder, no suffix: meant as a preset name rather than a file."""
    path = Path(str(source))
    return path.name == str(source) and not path.suffix


def get_preset(name: str) -> Preset:
    """The registry entry, or an error that suggests the closest names."""
    if name in MODEL_PRESETS:
        return MODEL_PRESETS[name]
    close = difflib.get_close_matches(name, MODEL_PRESETS, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise UserInputError(
        f"unknown preset {name!r}.{hint} `keras-deeplab presets` lists them "
        "all."
    )


def url_download_path(url: str) -> Path:
    """Where a (non-preset) URL's file is kept: a folder per URL."""
    name = Path(urllib.parse.urlparse(url).path).name
    folder = hashlib.sha256(url.encode()).hexdigest()[:16]
    return cache_dir() / DOWNLOADS / folder / name


def _downloaded(preset: Preset, sha256=None) -> Path:
    """Where a preset's file is kept: the publisher's under its own name;
    another copy of the same layout (`sha256=` of your own file) in a
    folder named by its hash, so the two never replace each other."""
    if sha256 is None:
        return cache_dir() / DOWNLOADS / preset.file_name
    return cache_dir() / DOWNLOADS / sha256[:16] / preset.file_name


def torch_file_problem(path) -> str | None:
    """What shows `path` is not a torch.save file (e.g. an HTML sign-in
    page saved under the checkpoint's name), or None."""
    with open(path, "rb") as handle:
        start = handle.read(len(_LEGACY_START))
    if start.startswith(_ZIP_MAGIC) or start == _LEGACY_START:
        return None
    shown = start[:12].decode("latin1").encode("unicode_escape").decode()
    return (
        f"not a PyTorch checkpoint (it starts with {shown!r}; a web page or "
        "an error message?)"
    )


def preset_model_file(name: str, *, sha256=None) -> Path:
    """The cached `.keras` file of a preset: downloaded and converted once.

    Registry downloads come from `$KERAS_DEEPLAB_MIRROR/<file name>` when
    that variable is set.

    Args:
        name: str. A registered preset name.
        sha256: str or None. Your own copy of the preset's layout (re-hosted
            or fine-tuned): its SHA-256 replaces the publisher's; the class
            names, stride and metadata stay the preset's. Place the file
            where the error says, or serve it from the mirror.

    Raises:
        UserInputError: for an unknown name; DownloadError (one) when the
            file cannot be fetched whole and verified.
    """
    preset = get_preset(name)
    sha256 = check_sha256(sha256)
    own = sha256 is not None and not (preset.sha256 or "").startswith(sha256)
    expected = sha256 if own else preset.sha256
    stem = f"{preset.name}-{sha256[:12]}" if own else preset.name
    target = converted_path(stem)
    if cached_conversion(target, expected) is not None:
        return target
    checkpoint = download(
        mirrored(preset.url, preset.file_name),
        _downloaded(preset, sha256 if own else None),
        sha256=expected,
        size=None if own else preset.size_bytes,
        check=torch_file_problem,
    )
    return convert_once(
        checkpoint,
        target,
        source_sha256=expected,
        arch=preset.arch,
        output_stride=preset.output_stride,
        class_names=preset.class_names,
    )


def _check_arch(arch, source):
    if arch not in ARCHS:
        raise UserInputError(
            f"arch={arch!r} is not supported for {source}; a checkpoint "
            f"needs its architecture, one of {tuple(ARCHS)}."
        )


def checkpoint_model_file(
    source, *, arch, sha256=None, output_stride=None, class_names=None
) -> Path:
    """The cached `.keras` conversion of a `.pth`/`.pt` file or URL.

    A URL is downloaded once into the cache (in a folder of its own, so two
    servers' `model.pth` never mix); the conversion is cached under the
    file's SHA-256, so a changed file is converted again and an unchanged
    one never is.

    Args:
        source: str or Path. A local checkpoint or an http(s) URL of one.
        arch: str. One of `convert.ARCHS`.
        sha256: str or None. Expected SHA-256 (or a prefix of >= 8 digits).
        output_stride: int or None. Stride of the converted model; None:
            the checkpoint's own (`convert.torchvision.native_output_stride`).
        class_names: tuple of str or None. What the logits mean; None gives
            `class_0`, `class_1`, ...
    """
    _check_arch(arch, source)
    sha256 = check_sha256(sha256)
    if is_url(source):
        name = Path(urllib.parse.urlparse(str(source)).path).name
        if not name:
            raise UserInputError(
                f"URL {source!r} names no file; expected a URL ending in the "
                "checkpoint's file name, e.g. .../model.pth."
            )
        path = download(
            source,
            url_download_path(source),
            sha256=sha256,
            check=torch_file_problem,
        )
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(
                f"checkpoint {str(path)!r} does not exist; expected a .pth "
                "file written by torch.save, a URL or a preset name."
            )
    digest = file_sha256(path)
    if sha256 is not None and not digest.startswith(sha256):
        raise UserInputError(
            f"checkpoint {str(path)!r} has SHA-256 {digest}, but {sha256} "
            "was expected; check the file and the hash."
        )
    stride = output_stride or "native"
    names = "" if class_names is None else "-" + _names_key(class_names)
    target = converted_path(
        f"{path.stem}-{arch}-os{stride}{names}-{digest[:12]}"
    )
    return convert_once(
        path,
        target,
        source_sha256=digest,
        arch=arch,
        output_stride=output_stride,
        class_names=class_names,
    )


def _names_key(class_names) -> str:
    """8 hex digits that tell two class-name lists apart in a file name."""
    text = "\n".join(class_names).encode()
    return hashlib.sha256(text).hexdigest()[:8]


def preset_rows() -> list:
    """One dict per preset for `keras-deeplab presets`."""
    return [
        {
            "name": preset.name,
            "arch": preset.arch,
            "classes": len(preset.class_names),
            "dataset": preset.dataset,
            "metric": f"{preset.metric} ({preset.evaluation})",
            "size_mb": preset.size_mb,
            "cached": converted_path(preset.name).is_file()
            or _downloaded(preset).is_file(),
        }
        for preset in MODEL_PRESETS.values()
    ]
