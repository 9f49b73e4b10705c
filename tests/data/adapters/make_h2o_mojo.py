"""Regenerate h2o_gbm_mojo.sp: a small H2O GBM MOJO (as a safepoint file) whose golden data are
the *cluster's* predictions, so tests can check MOJO scoring without starting a cluster.

    SAFEPOINT_QUIET=1 python tests/data/adapters/make_h2o_mojo.py   # needs h2o and Java
"""

from __future__ import annotations

import os

import h2o
import numpy as np
import pandas as pd
from h2o.estimators import H2OGradientBoostingEstimator

import safepoint as sp
from safepoint.adapters.h2o import H2OMojo


def frame() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    df = pd.DataFrame({"a": rng.normal(size=60).round(3), "b": rng.normal(size=60).round(3)})
    df["y"] = np.where(df["a"] + df["b"] > 0, "yes", "no")
    return df


def main() -> None:
    h2o.init(nthreads=2, max_mem_size="1G", verbose=False)
    h2o.no_progress()
    try:
        df = frame()
        hf = h2o.H2OFrame(df)
        hf["y"] = hf["y"].asfactor()
        gbm = H2OGradientBoostingEstimator(ntrees=5, max_depth=2, seed=1)
        gbm.train(x=["a", "b"], y="y", training_frame=hf)
        cluster = gbm.predict(hf).as_data_frame()
        out = os.path.join(os.path.dirname(__file__), "h2o_gbm_mojo.sp")
        sp.dump(
            {
                "mojo": H2OMojo.from_model(gbm),
                "X": df[["a", "b"]],
                "cluster_predict": cluster["predict"].astype(str).tolist(),
                "cluster_yes": cluster["yes"].to_numpy(),
            },
            out,
            metadata={"h2o": h2o.__version__, "made_by": "make_h2o_mojo.py"},
        )
        print("wrote", out, os.path.getsize(out), "bytes")
    finally:
        h2o.cluster().shutdown()


if __name__ == "__main__":
    main()
