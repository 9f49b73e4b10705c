"""Each step's saved output as a plain file in a folder (``safepoint steps export``).

For users who "just want the file": by default each output is written as the
safepoint file the store holds (``step_1.sp``), checked on the way; it loads with
``sp.load("step_1.sp")`` anywhere, without the store and without running code.

``format="pickle"`` (``.pkl``) or ``"joblib"`` (``.joblib``) write what other tools
read, on explicit request only, with a warning: loading a pickle runs code that the
file names, so such files are for the people who made them. The output is loaded
(safely, with the workflow's trusted types) and then pickled.

>>> rows = export_outputs("./store", "model-training", "out/")       # doctest: +SKIP
>>> [r["path"] for r in rows]                                        # doctest: +SKIP
['out/step_1.sp', 'out/step_2.sp', 'out/step_3.sp']
"""

from __future__ import annotations

import contextlib
import os
import shutil
import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..._io import replacing, temp_beside
from ...errors import (
    FilesExistError,
    IntegrityError,
    SafepointError,
    SafepointWarning,
    StepConfigError,
    StepError,
)

if TYPE_CHECKING:
    from ...stores.store import Store

__all__ = ["EXPORT_FORMATS", "PICKLE_WARNING", "FilesExistError", "export_outputs"]

#: format -> file suffix
EXPORT_FORMATS = {"sp": ".sp", "pickle": ".pkl", "joblib": ".joblib"}
PICKLE_WARNING = (
    "pickle and joblib files run code when they are loaded: load them only where you "
    "made them, never from someone else (the .sp files load without running code)"
)


def export_outputs(
    store: Store,
    name: str,
    folder: str | os.PathLike[str],
    version: int | str = 1,
    *,
    format: str = "sp",
    steps: Iterable[str] | None = None,
    trusted: Any = (),
    overwrite: bool = False,
) -> list[dict[str, Any]]:
    """Write the latest saved output of each step of workflow ``name`` into ``folder``.

    Args:
        store: a :class:`safepoint.Store`, its URL or folder.
        name: the workflow's name; ``version`` its version.
        folder: where to write (created if missing); one file per step, named
            after the step (``step_1.sp``).
        format: ``"sp"`` (the stored safepoint file, byte for byte), ``"pickle"``
            or ``"joblib"`` (loaded, then pickled: issues a warning).
        steps: only these steps (default: every step with a saved output).
        trusted: types to trust when loading outputs for a pickle export.
        overwrite: replace existing files (otherwise an existing file is an error
            and nothing is written).

    Returns:
        one dict per file: step, path, format, ref, digest, size.

    Raises:
        StepConfigError: an unknown format or step; FilesExistError (a subclass) when
            a file exists already.
        NotFoundError: the workflow has no saved outputs.
    """
    from ._saved import _SavedView

    if format not in EXPORT_FORMATS:
        raise StepConfigError(
            f"format={format!r} is not one of {', '.join(map(repr, EXPORT_FORMATS))}"
        )
    view = _SavedView(name, store, version)
    view.trusted = trusted
    saved = view.saved_steps()
    if not saved:
        from ...errors import NotFoundError

        raise NotFoundError(
            f"workflow {name!r} v{version} has no saved outputs in {view.store.url!r}; "
            "check the name, the version and the store"
        )
    if steps is not None:
        wanted = list(steps)
        known = [s for s, _ in saved]
        unknown = [s for s in wanted if s not in known]
        if unknown:
            raise StepConfigError(
                f"no saved output for {', '.join(unknown)}; the saved steps are {', '.join(known)}"
            )
        saved = [(s, st) for s, st in saved if s in wanted]
    folder = os.fspath(folder)
    suffix = EXPORT_FORMATS[format]
    targets = [(step, stored, os.path.join(folder, step + suffix)) for step, stored in saved]
    existing = [path for _, _, path in targets if os.path.exists(path)]
    if existing and not overwrite:
        raise FilesExistError(
            f"{', '.join(existing)} already exist(s): pass overwrite=True to replace, or "
            "export into another folder (nothing was written)",
            existing,
        )
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise StepConfigError(f"cannot create the folder {folder!r}: {exc.strerror}") from None
    if format != "sp":
        warnings.warn(SafepointWarning(PICKLE_WARNING), stacklevel=2)
    rows = []
    for step, stored, path in targets:
        model = view._model(step)
        mv = view.store.info(model, stored.version)
        if format == "sp":
            _copy_blob(view.store, mv, path)
        else:
            value = view._loader(step, stored.version)()
            _write_pickle(value, path, format)
        rows.append(
            {
                "step": step,
                "path": path,
                "format": format,
                "ref": mv.ref,
                "digest": mv.digest,
                "size": os.path.getsize(path),
                "type": stored.type or mv.root_type,
            }
        )
    return rows


def _copy_blob(store: Store, mv: Any, path: str) -> None:
    """Copy a version's blob to ``path``, verified before it takes that name."""
    from ...format.reader import problems_against

    tmp = None
    try:
        fd, tmp = temp_beside(path, f".{os.path.basename(path)}.")
        # the descriptor first: it is closed whatever opening the blob raises
        with os.fdopen(fd, "wb") as dst, store.blobs.open(mv.digest) as src:
            shutil.copyfileobj(src, dst, 8 << 20)
        problems = problems_against(tmp, mv.digest)
        if problems:
            raise IntegrityError(f"the blob of {mv.ref} is damaged: " + "; ".join(problems))
        os.replace(tmp, path)
    except OSError as exc:
        _remove(tmp)
        raise StepError(f"cannot write {path!r}: {exc.strerror or exc}") from None
    except SafepointError:
        _remove(tmp)
        raise


def _write_pickle(value: Any, path: str, format: str) -> None:
    if format == "joblib":
        try:
            import joblib
        except ImportError:
            raise StepConfigError(
                "format='joblib' needs joblib: pip install joblib (or use format='pickle')"
            ) from None
    try:
        with replacing(path, f".{os.path.basename(path)}.") as fh:
            if format == "joblib":
                joblib.dump(value, fh)
            else:
                import pickle

                pickle.dump(value, fh, protocol=5)
    except OSError as exc:
        raise StepError(f"cannot write {path!r}: {exc.strerror or exc}") from None


def _remove(path: str | None) -> None:
    if path is None:
        return
    with contextlib.suppress(OSError):
        os.unlink(path)
