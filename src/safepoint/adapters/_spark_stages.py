"""The reviewed allowlist of Spark ML stages that the Spark adapter lets Spark load.

Spark's readers import and instantiate the class each stage's ``metadata`` names (pyspark by
``__import__``, the JVM by ``Class.forName`` and a reflective ``read()``), so a stage is loaded
only if its metadata names a class listed here. Keys are the class names exactly as Spark
writes them in ``metadata`` ("org.apache.spark.ml...." from the JVM writers, "pyspark.ml...."
from pyspark's own writers of pipelines, searches and one-vs-rest); pyspark maps them to its
wrapper with ``name.replace("org.apache.spark", "pyspark")``, and the checker resolves that
wrapper to check parameter names.

Each entry has a *layout* (what the checker expects in the stage's folder, see
:mod:`safepoint.adapters._spark_check`) and a one-line reason why loading it from data is safe.
``tools/spark_stage_candidates.py`` lists every loadable class of the installed pyspark; a
test fails when one is in neither :data:`STAGES` nor :data:`EXCLUDED`, so that a new pyspark
release is reviewed before its classes load. Nothing from ``pyspark.ml.connect`` is listed:
its readers take a class name from an unchecked ``metadata.json`` and call it, and load
``torch`` / pickle payloads.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EXCLUDED", "LAYOUTS", "STAGES", "Stage"]

#: what a stage folder holds besides ``metadata/`` (checked by ``_spark_check``)
LAYOUTS = (
    "params",  # nothing: every value is a JSON parameter
    "data",  # data/: parquet
    "ensemble",  # data/ and treesMetadata/: parquet; each tree's metadata row is checked too
    "als",  # userFactors/ and itemFactors/: parquet
    "mllib",  # data/: an old-format (spark.mllib) model, data/metadata + data/data parquet
    "pipeline",  # stages/<i>_<uid>/: nested stages named by paramMap.stageUids
    "ovr",  # classifier/: a nested estimator
    "ovr_model",  # classifier/ and model_<i>/ for i < numClasses
    "validator",  # estimator/, evaluator/, epm_* (param values that are stages)
    "cv_model",  # validator + bestModel/ + subModels/fold<f>/<i>/
    "tvs_model",  # validator + bestModel/ + subModels/<i>/
    "rformula",  # data/ + pipelineModel/ (a nested PipelineModel)
)


@dataclass(frozen=True)
class Stage:
    """One allowlisted class: its folder layout and why it is safe to load."""

    layout: str
    reason: str
    #: ``ensemble``: the class every tree's metadata row must name
    tree: str | None = None
    #: ``mllib``: the class the nested old-format model's metadata must name
    mllib: str | None = None
    #: a JVM-only helper with no pyspark wrapper: allowed only where the JVM alone reads it
    #: (inside RFormulaModel's pipeline), with empty parameter maps
    jvm_only: bool = False


_ML = "org.apache.spark.ml."
_P = "params only: JSON numbers, strings and lists"


def _params(what: str) -> Stage:
    return Stage("params", f"{what}; {_P}")


def _data(what: str) -> Stage:
    return Stage("data", f"{what} in parquet (vectors/matrices as Spark's own UDTs); {_P}")


def _est(what: str) -> Stage:
    return Stage("params", f"unfitted {what} (inside a search or one-vs-rest); {_P}")


_C = "classification."
_R = "regression."
_K = "clustering."
_F = "feature."
_E = "evaluation."

STAGES: dict[str, Stage] = {
    # -- composites: every nested stage is checked like the root -----------------------
    _ML + "PipelineModel": Stage("pipeline", "fitted pipeline: its stages are checked"),
    "pyspark.ml.pipeline.PipelineModel": Stage(
        "pipeline", "fitted pipeline (pyspark's writer): its stages are checked"
    ),
    _ML + "Pipeline": Stage("pipeline", "unfitted pipeline inside a search: stages checked"),
    "pyspark.ml.pipeline.Pipeline": Stage(
        "pipeline", "unfitted pipeline (pyspark's writer) inside a search: stages checked"
    ),
    _ML + _C + "OneVsRestModel": Stage(
        "ovr_model", "one model per class plus the estimator: all checked"
    ),
    "pyspark.ml.classification.OneVsRestModel": Stage(
        "ovr_model", "one-vs-rest (pyspark's writer): every nested stage checked"
    ),
    _ML + _C + "OneVsRest": Stage("ovr", "unfitted one-vs-rest: its classifier is checked"),
    "pyspark.ml.classification.OneVsRest": Stage(
        "ovr", "unfitted one-vs-rest (pyspark's writer): its classifier is checked"
    ),
    _ML + "tuning.CrossValidatorModel": Stage(
        "cv_model", "best model, estimator, evaluator, sub-models, grid stages: all checked"
    ),
    "pyspark.ml.tuning.CrossValidatorModel": Stage(
        "cv_model", "cross-validation result (pyspark's writer): every nested stage checked"
    ),
    _ML + "tuning.TrainValidationSplitModel": Stage(
        "tvs_model", "best model, estimator, evaluator, sub-models, grid stages: all checked"
    ),
    "pyspark.ml.tuning.TrainValidationSplitModel": Stage(
        "tvs_model", "train/validation result (pyspark's writer): every nested stage checked"
    ),
    _ML + "tuning.CrossValidator": Stage(
        "validator", "unfitted search: estimator, evaluator, grid stages checked"
    ),
    "pyspark.ml.tuning.CrossValidator": Stage(
        "validator", "unfitted search (pyspark's writer): nested stages checked"
    ),
    _ML + "tuning.TrainValidationSplit": Stage(
        "validator", "unfitted search: estimator, evaluator, grid stages checked"
    ),
    "pyspark.ml.tuning.TrainValidationSplit": Stage(
        "validator", "unfitted search (pyspark's writer): nested stages checked"
    ),
    _ML + _F + "RFormulaModel": Stage(
        "rformula", "resolved formula in parquet plus a nested PipelineModel, checked"
    ),
    _ML + _F + "VectorAttributeRewriter": Stage(
        "data",
        "RFormulaModel's internal stage (JVM only): attribute names in parquet, no params",
        jvm_only=True,
    ),
    _ML + _F + "ColumnPruner": Stage(
        "data",
        "RFormulaModel's internal stage (JVM only): column names in parquet, no params",
        jvm_only=True,
    ),
    # -- classification ----------------------------------------------------------------
    _ML + _C + "LogisticRegressionModel": _data("coefficients and intercepts"),
    _ML + _C + "LinearSVCModel": _data("coefficients and intercept"),
    _ML + _C + "NaiveBayesModel": _data("class priors and conditional probabilities"),
    _ML + _C + "MultilayerPerceptronClassificationModel": _data("layer weights"),
    _ML + _C + "FMClassificationModel": _data("factorization-machine weights"),
    _ML + _C + "DecisionTreeClassificationModel": _data("tree nodes (ids, splits, stats)"),
    _ML + _C + "RandomForestClassificationModel": Stage(
        "ensemble",
        "tree nodes and per-tree metadata rows in parquet, each row checked; " + _P,
        tree=_ML + _C + "DecisionTreeClassificationModel",
    ),
    _ML + _C + "GBTClassificationModel": Stage(
        "ensemble",
        "tree nodes and per-tree metadata rows in parquet, each row checked; " + _P,
        tree=_ML + _R + "DecisionTreeRegressionModel",
    ),
    _ML + _C + "LogisticRegression": _est("logistic regression"),
    _ML + _C + "LinearSVC": _est("linear SVM"),
    _ML + _C + "NaiveBayes": _est("naive Bayes"),
    _ML + _C + "MultilayerPerceptronClassifier": _est("perceptron"),
    _ML + _C + "FMClassifier": _est("factorization machine"),
    _ML + _C + "DecisionTreeClassifier": _est("decision tree"),
    _ML + _C + "RandomForestClassifier": _est("random forest"),
    _ML + _C + "GBTClassifier": _est("gradient-boosted trees"),
    # -- regression --------------------------------------------------------------------
    _ML + _R + "LinearRegressionModel": _data("coefficients and intercept"),
    _ML + _R + "GeneralizedLinearRegressionModel": _data("coefficients and intercept"),
    _ML + _R + "AFTSurvivalRegressionModel": _data("coefficients, intercept and scale"),
    _ML + _R + "IsotonicRegressionModel": _data("boundaries and predictions"),
    _ML + _R + "FMRegressionModel": _data("factorization-machine weights"),
    _ML + _R + "DecisionTreeRegressionModel": _data("tree nodes (ids, splits, stats)"),
    _ML + _R + "RandomForestRegressionModel": Stage(
        "ensemble",
        "tree nodes and per-tree metadata rows in parquet, each row checked; " + _P,
        tree=_ML + _R + "DecisionTreeRegressionModel",
    ),
    _ML + _R + "GBTRegressionModel": Stage(
        "ensemble",
        "tree nodes and per-tree metadata rows in parquet, each row checked; " + _P,
        tree=_ML + _R + "DecisionTreeRegressionModel",
    ),
    _ML + _R + "LinearRegression": _est("linear regression"),
    _ML + _R + "GeneralizedLinearRegression": _est("GLM"),
    _ML + _R + "AFTSurvivalRegression": _est("survival regression"),
    _ML + _R + "IsotonicRegression": _est("isotonic regression"),
    _ML + _R + "FMRegressor": _est("factorization machine"),
    _ML + _R + "DecisionTreeRegressor": _est("decision tree"),
    _ML + _R + "RandomForestRegressor": _est("random forest"),
    _ML + _R + "GBTRegressor": _est("gradient-boosted trees"),
    # -- clustering --------------------------------------------------------------------
    _ML + _K + "KMeansModel": _data("cluster centers"),
    _ML + _K + "GaussianMixtureModel": _data("weights, means and covariances"),
    _ML + _K + "LocalLDAModel": _data("topic matrix and concentrations"),
    _ML + _K + "BisectingKMeansModel": Stage(
        "mllib",
        "cluster tree as an old-format model (its metadata checked) with parquet nodes; " + _P,
        mllib="org.apache.spark.mllib.clustering.BisectingKMeansModel",
    ),
    _ML + _K + "KMeans": _est("k-means"),
    _ML + _K + "GaussianMixture": _est("Gaussian mixture"),
    _ML + _K + "LDA": _est("LDA"),
    _ML + _K + "BisectingKMeans": _est("bisecting k-means"),
    # -- features: fitted models with data ---------------------------------------------
    _ML + _F + "StringIndexerModel": _data("label lists"),
    _ML + _F + "OneHotEncoderModel": _data("category sizes"),
    _ML + _F + "StandardScalerModel": _data("means and standard deviations"),
    _ML + _F + "MinMaxScalerModel": _data("minima and maxima"),
    _ML + _F + "MaxAbsScalerModel": _data("maximum absolute values"),
    _ML + _F + "RobustScalerModel": _data("medians and ranges"),
    _ML + _F + "PCAModel": _data("principal components and explained variance"),
    _ML + _F + "ImputerModel": _data("surrogate values"),
    _ML + _F + "VectorIndexerModel": _data("category maps"),
    _ML + _F + "ChiSqSelectorModel": _data("selected feature indices"),
    _ML + _F + "UnivariateFeatureSelectorModel": _data("selected feature indices"),
    _ML + _F + "VarianceThresholdSelectorModel": _data("selected feature indices"),
    _ML + _F + "IDFModel": _data("IDF weights and document frequencies"),
    _ML + _F + "CountVectorizerModel": _data("vocabulary"),
    _ML + _F + "Word2VecModel": _data("word vectors"),
    _ML + _F + "BucketedRandomProjectionLSHModel": _data("random unit vectors"),
    _ML + _F + "MinHashLSHModel": _data("hash coefficients"),
    _ML + _F + "TargetEncoderModel": _data("per-category statistics"),
    # -- features: transformers and estimators with parameters only --------------------
    _ML + _F + "Binarizer": _params("threshold transformer"),
    _ML + _F + "Bucketizer": _params("split points"),
    _ML + _F + "DCT": _params("discrete cosine transform"),
    _ML + _F + "ElementwiseProduct": _params("scaling vector (JSON vector)"),
    _ML + _F + "FeatureHasher": _params("hashing transformer"),
    _ML + _F + "HashingTF": _params("hashing transformer"),
    _ML + _F + "IndexToString": _params("label list"),
    _ML + _F + "Interaction": _params("column interaction"),
    _ML + _F + "NGram": _params("n-gram transformer"),
    _ML + _F + "Normalizer": _params("p-norm"),
    _ML + _F + "PolynomialExpansion": _params("degree"),
    _ML + _F + "RegexTokenizer": _params("Java regular expression (data, not code)"),
    _ML + _F + "StopWordsRemover": _params("word list and locale"),
    _ML + _F + "Tokenizer": _params("whitespace tokenizer"),
    _ML + _F + "VectorAssembler": _params("column list"),
    _ML + _F + "VectorSizeHint": _params("vector size"),
    _ML + _F + "VectorSlicer": _params("indices and names"),
    _ML + _F + "RFormula": _est("R formula (parsed by Spark's formula grammar, not evaluated)"),
    _ML + _F + "StringIndexer": _est("string indexer"),
    _ML + _F + "OneHotEncoder": _est("one-hot encoder"),
    _ML + _F + "StandardScaler": _est("scaler"),
    _ML + _F + "MinMaxScaler": _est("scaler"),
    _ML + _F + "MaxAbsScaler": _est("scaler"),
    _ML + _F + "RobustScaler": _est("scaler"),
    _ML + _F + "PCA": _est("PCA"),
    _ML + _F + "Imputer": _est("imputer"),
    _ML + _F + "VectorIndexer": _est("vector indexer"),
    _ML + _F + "ChiSqSelector": _est("selector"),
    _ML + _F + "UnivariateFeatureSelector": _est("selector"),
    _ML + _F + "VarianceThresholdSelector": _est("selector"),
    _ML + _F + "IDF": _est("IDF"),
    _ML + _F + "CountVectorizer": _est("count vectorizer"),
    _ML + _F + "Word2Vec": _est("word2vec"),
    _ML + _F + "BucketedRandomProjectionLSH": _est("LSH"),
    _ML + _F + "MinHashLSH": _est("LSH"),
    _ML + _F + "QuantileDiscretizer": _est("quantile discretizer"),
    _ML + _F + "TargetEncoder": _est("target encoder"),
    # -- frequent patterns, recommendation ---------------------------------------------
    _ML + "fpm.FPGrowthModel": _data("frequent itemsets"),
    _ML + "fpm.FPGrowth": _est("FP-growth"),
    _ML + "recommendation.ALSModel": Stage("als", "user and item factor vectors in parquet; " + _P),
    _ML + "recommendation.ALS": _est("ALS"),
    # -- evaluators (inside searches) --------------------------------------------------
    _ML + _E + "BinaryClassificationEvaluator": _params("metric name"),
    _ML + _E + "MulticlassClassificationEvaluator": _params("metric name"),
    _ML + _E + "MultilabelClassificationEvaluator": _params("metric name"),
    _ML + _E + "RankingEvaluator": _params("metric name"),
    _ML + _E + "RegressionEvaluator": _params("metric name"),
    _ML + _E + "ClusteringEvaluator": _params("metric name"),
}

#: loadable classes that are deliberately refused, with the reason (reviewed)
EXCLUDED: dict[str, str] = {
    _ML + _F + "SQLTransformer": (
        "its statement is SQL that transform() runs, and Spark SQL can call JVM methods "
        "(reflect, java_method): code from the file"
    ),
    _ML + _K + "DistributedLDAModel": (
        "holds a GraphX graph in the old spark.mllib format, read by loaders not reviewed "
        "here; store model.toLocal() (a LocalLDAModel) instead"
    ),
    _ML + _K + "PowerIterationClustering": (
        "has no fitted form (assignClusters runs on data): it is never a pipeline stage"
    ),
}
