"""Checkpoint images (issue 7): the folder a checkpoint writes and a restore reads.

The kernel's checkpoint code pauses the sandbox, pickles the kernel, and
hands the blob and the memory file to :func:`write_image`; a restore opens the
folder with :func:`open_image` (header verified: compare its mounts, size the
new memory file), then :meth:`CheckpointImage.load` fills the new memory
file and returns the verified blob to unpickle::

    key = resolve_key(config.root_dir, image_key_file)
    header = new_header(container_id=cid, platform=..., spec_digest=json_digest(spec),
                        mounts=rows, tasks=summary, tmpfs=sizes)
    plugins.before_checkpoint(kernel, header)
    with progress_for() as progress:
        write_image(image_dir, header, cloudpickle.dumps(kernel), memfile, key=key,
                    compression="zstd", progress=progress)

    image = open_image(image_dir, key=key)          # ImageError (exit 2) if bad
    memfile = MemoryFile(size=image.header["memory"]["file_size"])
    with progress_for() as progress:
        blob = image.load(memfile, progress=progress)  # every part verified
    kernel = cloudpickle.loads(blob)

Modules: :mod:`.image` (the format, writing, reading, inspection),
:mod:`.pages` (the memory file's pages), :mod:`.folder` (publishing a folder
atomically), :mod:`.key` (the HMAC key), :mod:`.progress` (bars or a summary).
"""

from ..errors import ImageError
from .image import (
    CHECKPOINT_FILE,
    FORMAT_VERSION,
    PAGES_FILE,
    CheckpointImage,
    Inspection,
    inspect_image,
    json_digest,
    new_header,
    open_image,
    read_header,
    write_image,
)
from .key import KEY_FILE, read_key, resolve_key, root_key
from .progress import Progress, progress_for

__all__ = [
    "CHECKPOINT_FILE",
    "FORMAT_VERSION",
    "KEY_FILE",
    "PAGES_FILE",
    "CheckpointImage",
    "ImageError",
    "Inspection",
    "Progress",
    "inspect_image",
    "json_digest",
    "new_header",
    "open_image",
    "progress_for",
    "read_header",
    "read_key",
    "resolve_key",
    "root_key",
    "write_image",
]
