"""Crafted files that try to make a load run code: one test per class of weakness.

Each attack is a file whose every type is trusted (by default, or by a user who
trusts a class or function of their own by name), and each test asserts three
things: a ``SafepointError`` is raised, no code of the payload ran (its canary
file does not exist, no connection reached the listener), and nothing else
broke. The classes of weakness (docs/security.md):

* a gadget type in the trust set (callbacks, ``Bunch`` outside its slots);
* a method of an object built from the file called during the load
  (gradient boosting's initial estimator);
* a state entry that shadows a method;
* a callable instance in a callable slot (``FunctionTransformer(func=...)``);
* objects hashed (set items, dict keys) or extended by the load;
* and, under all of them, the load-time guard: a ``__setstate__`` trusted by name
  that opens a socket, starts a process, runs code it built, writes a file or
  imports an unnamed module is stopped.
"""

from __future__ import annotations

import socket
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gadgets
import numpy as np
import pytest
from spcraft import Crafted

import safepoint as sp


@pytest.fixture(autouse=True)
def canary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "canary"
    monkeypatch.setenv("SAFEPOINT_CANARY", str(path))
    yield path


@pytest.fixture
def listener() -> Iterator[tuple[int, list[bytes]]]:
    """A TCP server on loopback that records every connection it gets."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.2)
    got: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(1)
                try:
                    got.append(conn.recv(100) or b"<connected>")
                except OSError:
                    got.append(b"<connected>")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname()[1], got
    stop.set()
    t.join(2)
    srv.close()


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.RandomState(0)
    X = rng.normal(size=(60, 3))
    return X, (X[:, 0] > 0).astype(int)


def _add_type(c: Crafted, module: str, qualname: str, kind: str) -> int:
    c.manifest["types"].append([module, qualname, kind])
    return len(c.manifest["types"]) - 1


# -- gadget types in the trust set ---------------------------------------------------------
@pytest.mark.parametrize(
    "name",
    [
        "sklearn.callback._scoring_monitor.ScoringMonitor",
        "sklearn.callback._callback_context.CallbackContext",
        "sklearn.callback._transport.ListenerHandle",
        "sklearn.linear_model._glm._newton_solver._LbfgsCallbackBridge",
        "sklearn.utils.parallel._FuncWrapper",
    ],
)
def test_gadget_types_are_not_trusted(name: str, canary: Path, listener: Any) -> None:
    """A file naming a callback class (whose __setstate__ connects to an address from the
    file and unpickles what it receives) is refused before anything is imported."""
    port, got = listener
    from sklearn.preprocessing import StandardScaler

    c = Crafted.from_bytes(sp.dumps(StandardScaler().fit(_data()[0])))
    module, _, qualname = name.rpartition(".")
    c.manifest["types"][c.manifest["root"]["t"]] = [module, qualname, "obj"]
    c.manifest["root"]["s"]["s"]["host"] = "127.0.0.1"
    c.manifest["root"]["s"]["s"]["port"] = port
    with pytest.raises(sp.UntrustedTypesError) as info:
        sp.loads(c.to_bytes())
    assert name in info.value.types
    assert not got and not canary.exists()


def test_bunch_outside_its_slot_is_refused() -> None:
    """A Bunch answers any attribute with what the file put in it: it may only be
    Voting/Stacking's named_estimators_, never stand in for an estimator."""
    from sklearn.ensemble import VotingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.utils import Bunch

    X, y = _data()
    voting = VotingClassifier([("lr", LogisticRegression())]).fit(X, y)
    loaded = sp.loads(sp.dumps(voting))  # its own slot: fine
    assert type(loaded.named_estimators_) is Bunch
    with pytest.raises(sp.FormatError, match="may only appear"):
        sp.loads(sp.dumps({"model": Bunch(predict=1)}))
    # a Bunch in place of a pipeline step (which would impersonate the estimator)
    pipe = Pipeline([("lr", LogisticRegression())]).fit(X, y)
    c = Crafted.from_bytes(sp.dumps([pipe, Bunch(predict_proba=1)]))
    root = c.manifest["root"]
    step = c.deref(root["v"][0])["s"]["s"]["steps"]["v"][0]
    step["v"][1] = root["v"][1]
    root["v"] = [root["v"][0]]
    with pytest.raises(sp.FormatError, match="may only appear"):
        sp.loads(c.to_bytes())
    # the same Bunch in its slot and elsewhere (shared): refused too
    with pytest.raises(sp.FormatError, match=r"shared|may only appear"):
        sp.loads(sp.dumps([voting, voting.named_estimators_]))
    # the caller may lift the restriction by trusting the class by name
    assert sp.loads(sp.dumps({"b": Bunch(a=1)}), trusted=["sklearn.utils._bunch.Bunch"])


def test_a_trusted_load_does_not_trust_the_same_types_for_the_next_caller() -> None:
    """The process caches types tables found fully trusted (format/trust.py), keyed by
    the caller's trusted= names: trusting a class once must not trust it afterwards."""
    from fractions import Fraction

    data = sp.dumps({"f": Fraction(1, 3)})
    for _ in range(2):  # the second round meets the cache
        assert sp.loads(data, trusted=["fractions.Fraction"])["f"] == Fraction(1, 3)
        with pytest.raises(sp.UntrustedTypesError, match="Fraction"):
            sp.loads(data)


def test_reviewed_getattr_classes_do_not_impersonate() -> None:
    """MetadataRequest's __getattr__ answers only composite method names (with one of its
    own request objects), and raises AttributeError for any other name."""
    from sklearn.utils._metadata_requests import MetadataRequest, MethodMetadataRequest

    mr = sp.loads(sp.dumps(MetadataRequest(owner="x")))
    for name in ("__call__", "transform_secret", "predict_probas", "read"):
        with pytest.raises(AttributeError):
            getattr(mr, name)
    assert type(mr.fit_transform) is MethodMetadataRequest


# -- no method of a file's object runs during a load ----------------------------------------
def test_gradient_boosting_init_is_not_called_at_load(canary: Path) -> None:
    """The initial estimator's output width is computed from arrays; an initial
    estimator that would have to be run to know it is refused, not run."""
    from sklearn.ensemble import GradientBoostingClassifier

    X, y = _data()
    model = GradientBoostingClassifier(n_estimators=3, init=gadgets.CanaryEstimator()).fit(X, y)
    data = sp.dumps(model)
    canary.unlink()  # fitting ran it, of course
    with pytest.raises(sp.FormatError, match="init_"):
        sp.loads(data, trusted=["gadgets.CanaryEstimator"])
    assert not canary.exists()
    # the default initial estimator and init="zero" load and predict as before
    for init in (None, "zero"):
        for yy in (y, np.arange(60) % 3):
            m = GradientBoostingClassifier(n_estimators=3, init=init).fit(X, yy)
            np.testing.assert_array_equal(
                sp.loads(sp.dumps(m)).predict_proba(X), m.predict_proba(X)
            )


def test_gradient_boosting_init_width_is_checked() -> None:
    """A crafted DummyClassifier with more classes than the trees' columns is refused."""
    from sklearn.ensemble import GradientBoostingClassifier

    X, y = _data()
    c = Crafted.from_bytes(sp.dumps(GradientBoostingClassifier(n_estimators=3).fit(X, y)))
    # a multinomial loss over a binary model's single column
    loss = c.deref(c.manifest["root"]["s"]["s"]["_loss"])
    c.manifest["types"][loss["t"]][1] = "HalfMultinomialLoss"
    with pytest.raises(sp.FormatError, match="gradient boosting"):
        sp.loads(c.to_bytes())


def test_state_cannot_shadow_a_method(canary: Path) -> None:
    """IsotonicRegression.__setstate__ calls self._build_f: a state entry of that name
    (a function trusted by name) would be called instead. Refused."""
    from sklearn.isotonic import IsotonicRegression

    X, y = _data()
    c = Crafted.from_bytes(sp.dumps(IsotonicRegression().fit(X[:, 0], y)))
    t = _add_type(c, "gadgets", "canary_function", "ref")
    c.manifest["root"]["s"]["s"]["_build_f"] = {"@": "ref", "t": t}
    with pytest.raises(sp.FormatError, match="stand in for its methods"):
        sp.loads(c.to_bytes(), trusted=["gadgets.canary_function"])
    assert not canary.exists()
    # a DummyClassifier whose predict_proba is a function of the file's choosing
    from sklearn.dummy import DummyClassifier

    c = Crafted.from_bytes(sp.dumps(DummyClassifier().fit(X, y)))
    t = _add_type(c, "gadgets", "canary_function", "ref")
    c.manifest["root"]["s"]["s"]["predict_proba"] = {"@": "ref", "t": t}
    with pytest.raises(sp.FormatError, match="stand in for its methods"):
        sp.loads(c.to_bytes(), trusted=["gadgets.canary_function"])
    assert not canary.exists()


# -- callable slots --------------------------------------------------------------------------
def test_callable_instance_in_a_callable_slot(canary: Path) -> None:
    """A slot scikit-learn calls holds a function trusted by name, never an instance
    (even of a trusted class that can be called)."""
    from sklearn.gaussian_process.kernels import RBF
    from sklearn.metrics import accuracy_score, make_scorer
    from sklearn.preprocessing import FunctionTransformer

    X, _ = _data()
    for func, trusted in (
        (gadgets.CallableCanary(), ["gadgets.CallableCanary"]),
        (RBF(), []),  # trusted by default (a kernel), callable, never a func=
        (make_scorer(accuracy_score), []),  # a scorer: only in scoring slots
    ):
        data = sp.dumps(FunctionTransformer(func=func, validate=False))
        with pytest.raises(sp.FormatError, match="called by the model"):
            sp.loads(data, trusted=trusted)
    assert not canary.exists()
    # a neighbours metric, a kernel of an SVM, a score function
    from sklearn.feature_selection import SelectKBest
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import SVC

    X, y = _data()
    for model in (
        KNeighborsClassifier(metric="euclidean").fit(X, y),
        SVC(kernel="linear").fit(X, y),
        SelectKBest(k=2).fit(X, y),
    ):
        c = Crafted.from_bytes(sp.dumps([model, gadgets.CallableCanary()]))
        root = c.manifest["root"]
        state = c.deref(root["v"][0])["s"]["s"]
        slot = next(k for k in ("metric", "kernel", "score_func") if k in state)
        state[slot] = root["v"][1]
        root["v"] = [root["v"][0]]
        with pytest.raises(sp.FormatError, match="called by the model"):
            sp.loads(c.to_bytes(), trusted=["gadgets.CallableCanary"])
    assert not canary.exists()
    # functions trusted by name, strings and scorers in scoring slots still load
    from sklearn.model_selection import GridSearchCV
    from sklearn.tree import DecisionTreeClassifier

    search = GridSearchCV(
        DecisionTreeClassifier(), {"max_depth": [1, 2]}, scoring=make_scorer(accuracy_score), cv=2
    ).fit(X, y)
    assert sp.loads(sp.dumps(search)).score(X, y) == search.score(X, y)
    ft = FunctionTransformer(func=np.log1p, inverse_func=np.expm1)
    assert sp.loads(sp.dumps(ft)).func is np.log1p


def test_pyfunc_metric_function_is_a_checked_slot(canary: Path) -> None:
    from sklearn.metrics import DistanceMetric

    metric = DistanceMetric.get_metric("pyfunc", func=gadgets.canary_function)
    c = Crafted.from_bytes(sp.dumps([metric, gadgets.CallableCanary()]))
    root = c.manifest["root"]
    c.deref(root["v"][0])["s"]["v"][3] = root["v"][1]
    root["v"] = [root["v"][0]]
    with pytest.raises(sp.FormatError, match="called by the model"):
        sp.loads(c.to_bytes(), trusted=["gadgets.CallableCanary", "gadgets.canary_function"])
    assert not canary.exists()


# -- hashing and extending objects ----------------------------------------------------------
def test_objects_are_never_hashed_or_extended_by_a_load() -> None:
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    # an estimator as a dict key and in a set: hashing it would call its methods
    with pytest.raises(sp.FormatError, match="plain values"):
        sp.loads(sp.dumps({StandardScaler(): 1}))
    with pytest.raises(sp.FormatError, match="plain values"):
        sp.loads(sp.dumps({StandardScaler()}))
    # list items given to a class whose extend is not list's
    c = Crafted.from_bytes(sp.dumps(Pipeline([("s", StandardScaler())])))
    c.manifest["root"]["li"] = {"@": "list", "v": [1]}
    with pytest.raises(sp.FormatError, match="does not take list items"):
        sp.loads(c.to_bytes())
    # plain keys still load
    assert sp.loads(sp.dumps({(1, "a"): 1, np.int64(3): 2, frozenset({1}): 3}))


# -- the load-time guard ------------------------------------------------------------------------
GUARD_CASES = [
    (gadgets.SetstateWrites, "open a file for writing"),
    (gadgets.SetstateConnects, "use the network"),
    (gadgets.SetstateSwallows, "use the network"),
    (gadgets.SetstateRuns, "start a process"),
    (gadgets.SetstateSystem, "start a process"),
    (gadgets.SetstateExecs, "run code it built"),
    (gadgets.SetstateImports, "import a module"),
]


@pytest.mark.parametrize(("cls", "what"), GUARD_CASES, ids=[c.__name__ for c, _ in GUARD_CASES])
def test_the_guard_stops_a_trusted_setstate(
    cls: type, what: str, canary: Path, listener: Any, tmp_path: Path
) -> None:
    """A class the user trusts by name, whose __setstate__ does what a payload does:
    the guard refuses it (even when the payload swallows the refusal)."""
    port, got = listener
    path = tmp_path / "m.sp"
    sp.dump({"x": cls(str(port))}, path)
    name = f"gadgets.{cls.__qualname__}"
    for load in (
        lambda: sp.load(path, trusted=[name]),
        lambda: sp.loads(path.read_bytes(), trusted=[name]),
        lambda: sp.load(path, trusted=[name], mmap=True),
        lambda: sp.load(path, trusted=[name], env="ignore"),
    ):
        with pytest.raises(sp.LoadGuardError, match=what):
            load()
    assert not canary.exists() and not got
    # the guard is gone after the load: the same code runs outside a load
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_the_guard_is_per_context() -> None:
    """Another thread's socket is not refused while a load runs here."""
    from safepoint.format.guard import guarded, is_active

    seen: list[bool] = []
    with guarded("a test load"):
        assert is_active()
        t = threading.Thread(target=lambda: seen.append(is_active()))
        t.start()
        t.join()
    assert seen == [False] and not is_active()
