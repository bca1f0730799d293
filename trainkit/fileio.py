"""Atomic writes for local paths and blobfile URLs.

Every file a run leaves behind is written under a temporary name and moved into place, so a
crash, a full disk or a kill -9 never leaves a half-written checkpoint, npz or image that a
later step would trust.
"""

import contextlib
import os
import tempfile

import blobfile as bf

from .errors import UserError


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
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(final_path), dir=directory)
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


def _remove_quietly(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def write_text(final_path, text: str):
    with atomic_path(final_path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)
