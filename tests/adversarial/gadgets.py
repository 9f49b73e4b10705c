"""Payloads for the adversarial suite: classes and functions that leave a canary file
(or open a socket, start a process, ...) when any of their code runs.

They stand for what an attacker would like a load to run. A test *trusts* some of
them by name, as a user might trust a class of their own, and then checks that a
load never calls their methods where safepoint promises it does not (the pure
construction rules), and that the load-time guard stops them where a trusted
``__setstate__`` does run.

The canary's path comes from the ``SAFEPOINT_CANARY`` environment variable, which
each test sets to a file in its own temporary folder.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin


def canary() -> Path:
    return Path(os.environ["SAFEPOINT_CANARY"])


def touch(what: str) -> None:
    with open(canary(), "a", encoding="utf-8") as f:
        f.write(what + "\n")


def canary_function(*args: Any, **kwargs: Any) -> Any:
    """A function an attacker wants called: it writes the canary, then behaves."""
    touch("canary_function")
    return args[0] if args else None


class CallableCanary:
    """An instance that can be called like a function."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        touch("CallableCanary.__call__")
        return args[0] if args else None


class CanaryEstimator(ClassifierMixin, BaseEstimator):
    """An estimator whose prediction methods write the canary (an initial estimator of
    gradient boosting, say)."""

    def fit(self, X: Any, y: Any) -> CanaryEstimator:
        self.classes_ = np.unique(y)
        return self

    def predict_proba(self, X: Any) -> Any:
        touch("CanaryEstimator.predict_proba")
        n = len(self.classes_)
        return np.full((np.asarray(X).shape[0], n), 1.0 / n)

    def predict(self, X: Any) -> Any:
        touch("CanaryEstimator.predict")
        return np.full(np.asarray(X).shape[0], self.classes_[0])


class _Payload:
    """Base of the classes whose __setstate__ does what a payload does."""

    def __init__(self, arg: Any = None) -> None:
        self.arg = arg

    def __getstate__(self) -> dict[str, Any]:
        return {"arg": self.arg}


class SetstateWrites(_Payload):
    def __setstate__(self, state: dict[str, Any]) -> None:
        touch("SetstateWrites.__setstate__")


class SetstateConnects(_Payload):
    def __setstate__(self, state: dict[str, Any]) -> None:
        s = socket.create_connection(("127.0.0.1", int(state["arg"])), timeout=2)
        s.sendall(b"payload")
        s.close()


class SetstateSwallows(_Payload):
    """Catches the guard's refusal and carries on, as a payload might."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        try:
            socket.create_connection(("127.0.0.1", int(state["arg"])), timeout=2).close()
        except Exception:
            pass
        self.__dict__.update(state)


class SetstateRuns(_Payload):
    def __setstate__(self, state: dict[str, Any]) -> None:
        subprocess.run([sys.executable, "-c", f"open({str(canary())!r}, 'a').write('run')"])


class SetstateSystem(_Payload):
    def __setstate__(self, state: dict[str, Any]) -> None:
        os.system(f"touch {canary()}")


class SetstateExecs(_Payload):
    def __setstate__(self, state: dict[str, Any]) -> None:
        exec(f"open({str(canary())!r}, 'a').write('exec')")


class SetstateImports(_Payload):
    def __setstate__(self, state: dict[str, Any]) -> None:
        import importlib

        importlib.import_module("gadget_side_effect")
