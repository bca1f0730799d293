"""Atomic writes for local paths and blobfile URLs.

Every file a run leaves behind is written under a temporary name and moved into place, so a
crash, a full disk or a kill -9 never leaves a half-written checkpoint, npz or image that a
later step would trust.
"""

import contextlib
import os
import shutil
import tempfile

import blobfile as bf

from .errors import UserError

TMP_PREFIX = ".tmp-"  # files being written; never read, removed when a run restarts


def is_local(path: str) -> bool:
    return "://" not in str(path)


@contextlib.contextmanager
def atomic_path(final_path):
    """Yield a local temporary path; on success it replaces `final_path`, on error it is removed.

    Remote destinations (gs://, az://, ...) are written locally, copied next to the target
    under a temporary name, then renamed, which is as close to atomic as object stores get.
    """
    final_path = str(final_path)
    if is_local(final_path):
        directory = os.path.dirname(os.path.abspath(final_path))
        try:
            os.makedirs(directory, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=os.path.basename(final_path), dir=directory)
        except OSError as e:
            raise UserError(f"{directory}: cannot write here ({e.strerror or e})") from None
        os.close(fd)
    else:
        fd, tmp = tempfile.mkstemp(suffix=os.path.basename(final_path))
        os.close(fd)
    try:
        yield tmp
        if is_local(final_path):
            os.replace(tmp, final_path)
        else:
            remote_tmp = final_path + ".tmp"
            bf.copy(tmp, remote_tmp, overwrite=True)
            bf.rename(remote_tmp, final_path, overwrite=True)
            os.remove(tmp)
    except OSError as e:
        _remove_quietly(tmp)
        raise UserError(f"{final_path}: cannot write ({e.strerror or e})") from None
    except BaseException:
        _remove_quietly(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(final_dir, replace: bool = False):
    """Yield a temporary folder beside `final_dir`; on success it becomes `final_dir`.

    For outputs that are folders of files (exported data sets, images from an npz): a reader
    sees the whole folder or none of it. An existing `final_dir` must be empty unless `replace`,
    in which case it is removed at the swap. Local paths only.
    """
    final_dir = str(final_dir)
    if os.path.exists(final_dir) and not replace and (not os.path.isdir(final_dir) or os.listdir(final_dir)):
        raise UserError(f"{final_dir}: exists and is not empty; remove it or choose another output")
    parent = os.path.dirname(os.path.abspath(final_dir))
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(final_dir)}-", dir=parent)
    except OSError as e:
        raise UserError(f"{final_dir}: cannot write here ({e.strerror or e})") from None
    try:
        yield tmp
        if os.path.isdir(final_dir):
            shutil.rmtree(final_dir) if replace else os.rmdir(final_dir)
        os.replace(tmp, final_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_leftovers(directory) -> int:
    """Delete the temporary files of writes that a kill interrupted (`.tmp-*` in `directory`);
    the number removed. Only for a directory that nothing else is writing to right now."""
    if not is_local(directory) or not os.path.isdir(directory):
        return 0
    names = [n for n in os.listdir(directory) if n.startswith(TMP_PREFIX)]
    for name in names:
        _remove_quietly(os.path.join(directory, name))
    return len(names)


def _remove_quietly(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def write_text(final_path, text: str):
    with atomic_path(final_path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)
