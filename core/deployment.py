"""YAML deployments: a container ID, runtime settings and a spec, in one file.

A deployment is a mapping with these top-level keys::

    name: web                 # the default container ID
    runtime:                  # the global flags, in camelCase
      platform: ptrace        # or kvm
      fileAccess: proxy       # or direct
      overlay: false
      network: none
      debug: false
      strace: false
    bundle: ./busybox         # a bundle folder holding config.json
    # or, instead of bundle:
    spec:                     # an inline OCI spec, config.json's field names
      ociVersion: 1.0.2
      root: {path: rootfs}
      process: {args: [sh], cwd: /}

Paths are relative to the YAML file's folder. Every error carries
``FILE:LINE:COLUMN`` and the field path; unknown keys are errors, with a "did
you mean" when one is close. A flag given on the command line wins over
``runtime:``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import FILE_ACCESS, NETWORKS, RUNTIME_KEYS
from .document import Document, describe, did_you_mean
from .spec import Spec, display_path, load_bundle, parse_spec, show_path

TOP_LEVEL = ("name", "runtime", "bundle", "spec")

#: Container IDs: what runc accepts (``libcontainer`` ``validateID``), which
#: also refuses ``.`` and ``..`` (see :func:`check_container_id`).
CONTAINER_ID = re.compile(r"[\w+.-]+", re.ASCII)


@dataclass
class Deployment:
    """A loaded deployment. ``runtime`` maps Config attribute names to values."""

    file: Path
    spec: Spec
    name: str | None = None
    runtime: dict[str, Any] = field(default_factory=dict)


def check_container_id(name: str) -> str | None:
    """Why ``name`` is not a valid container ID, or None if it is.

    runc's ``validateID``: ASCII letters, digits, ``_``, ``+``, ``-`` and
    ``.``, and not ``.`` or ``..`` (the ID names a folder under ``--root``).
    """
    if not CONTAINER_ID.fullmatch(name) or name in (".", ".."):
        return "a container ID takes letters, digits, '_', '+', '-' and '.' (not '.' or '..')"
    return None


def load_deployment(path: Path, *, platforms: Collection[str] | None = None) -> Deployment:
    """Read the YAML deployment at ``path`` (see the module docstring for its shape).

    Returns a :class:`Deployment`: ``name`` as written (None if absent),
    ``runtime`` as Config attribute names (``file_access``...) for the keys
    given, and the spec, inline (``strict``: fields the runtime spec does not
    define are errors) or read from ``bundle``/config.json. Paths are relative
    to the YAML file's folder.

    Raises ConfigError, exit status 2, as ``FILE:LINE:COL: FIELD: MESSAGE``:
    unknown keys (with a "did you mean"), wrong types, bad values, YAML syntax
    errors and duplicate keys; errors inside a bundle's config.json name that
    file instead. ``platforms``, when given, are the installed platform names
    that ``runtime.platform`` must be one of.
    """
    path = Path(path)
    doc = Document.load_yaml(path, display=display_path(path))
    top = doc.root()
    if doc.data is None:
        raise top.error("the file is empty; a deployment needs 'bundle' or 'spec'")
    top.check_keys(TOP_LEVEL, strict=True)
    base = path.resolve().parent

    name = None
    if (n := top.get("name")) is not None:
        name = n.str()
        if (why := check_container_id(name)) is not None:
            raise n.error(f"{why}, got {describe(name)}")

    runtime: dict[str, Any] = {}
    if (rt := top.get("runtime")) is not None:
        rt.check_keys(tuple(RUNTIME_KEYS), strict=True)
        for key, node in rt.items():
            if node.value is None:
                continue
            attr = RUNTIME_KEYS[key]
            if attr in ("overlay", "debug", "strace"):
                runtime[attr] = node.bool()
                continue
            value = node.str()
            choices: Collection[str] | None = {
                "platform": platforms,
                "file_access": FILE_ACCESS,
                "network": NETWORKS,
            }[attr]
            if choices is not None and value not in choices:
                if attr == "network":
                    raise node.error(
                        f"network {describe(value)} is not supported yet; only 'none' is"
                    )
                raise node.error(
                    f"{describe(value)} is not one of {', '.join(sorted(choices))}"
                    + did_you_mean(value, list(choices))
                )
            runtime[attr] = value

    bundle_node, spec_node = top.get("bundle"), top.get("spec")
    if bundle_node is not None and spec_node is not None:
        raise spec_node.error_at_key("give either 'bundle' or 'spec', not both")
    if bundle_node is None and spec_node is None:
        # A key written with nothing after it (``spec:``) is null.
        for key, what in (("spec", "an inline OCI spec (ociVersion, root, process)"), ("bundle", "a folder")):
            if key in top.mapping():
                raise top.child(key, None).error_at_key(f"is empty; give {what}")
    if bundle_node is not None:
        text = bundle_node.str()
        if not text:
            raise bundle_node.error("must not be empty")
        bundle = base / text
        try:
            os.stat(bundle / "config.json")
        except (FileNotFoundError, NotADirectoryError):
            raise bundle_node.error(
                f"{show_path(bundle)} is not a bundle folder with a config.json"
            ) from None
        except OSError as e:
            raise bundle_node.error(f"cannot use {show_path(bundle)}: {e.strerror or e}") from None
        spec = load_bundle(bundle)
    elif spec_node is not None:
        spec = parse_spec(spec_node, bundle=base, strict=True)
    else:
        raise top.error("a deployment needs 'bundle' (a folder) or 'spec' (an inline OCI spec)")
    return Deployment(file=path, spec=spec, name=name, runtime=runtime)
