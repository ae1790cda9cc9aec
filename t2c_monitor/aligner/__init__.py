"""The aligner: one affine map from a source encoder's feature space into CLIP image space.

``z -> z @ W + b`` with ``W`` stored as ``(d_in, d_out)`` (the paper writes ``W^T z + b``). The
package is split by what each part does, and this module re-exports the public names, so
``from t2c_monitor.aligner import X`` works for all of them:

- ``model``: the ``Aligner`` (transform, save/load with the identities of the two models whose
  spaces it joins, so it is never applied to features of another encoder) and ``element_variance``;
- ``exact``: ``fit_exact``, ordinary (optionally ridge) least squares solved once from sufficient
  statistics accumulated chunk by chunk in float64, so the pairs never need to fit in memory;
- ``sgd``: ``fit_sgd`` with ``SGDRecipe``, the paper's recipe (Appendix D), the reference baseline;
- ``metrics``: ``evaluate`` / ``evaluate_chunks``, R², cosine and zero-shot accuracies on held-out pairs;
- ``image_pairs`` and ``from_images``: an image folder embedded into paired features, and the fit
  and evaluate workflows of `t2c aligner fit` / `eval` as library functions.

Paired feature files live in ``t2c_monitor.features`` (re-exported here as before).
"""

from t2c_monitor.aligner.exact import fit_exact, iter_chunks
from t2c_monitor.aligner.from_images import (
    EvalResult,
    FitResult,
    SettingError,
    evaluate_aligner,
    fit_aligner,
    fit_on_images,
)
from t2c_monitor.aligner.image_pairs import embed_folder
from t2c_monitor.aligner.metrics import AlignmentMetrics, evaluate, evaluate_chunks
from t2c_monitor.aligner.model import (
    ALIGNER_FORMAT,
    FORMAT,
    FORMAT_VERSION,
    METADATA_FILE,
    REFIT_HINT,
    WEIGHTS_FILE,
    Aligner,
    element_variance,
)
from t2c_monitor.aligner.sgd import SGDRecipe, fit_sgd
from t2c_monitor.features import FeatureFileWriter, PairedFeatures, open_feature_file, save_feature_file

__all__ = [
    "fit_on_images",
    "ALIGNER_FORMAT",
    "FORMAT",
    "FORMAT_VERSION",
    "METADATA_FILE",
    "REFIT_HINT",
    "WEIGHTS_FILE",
    "Aligner",
    "AlignmentMetrics",
    "EvalResult",
    "FeatureFileWriter",
    "FitResult",
    "PairedFeatures",
    "SGDRecipe",
    "SettingError",
    "element_variance",
    "embed_folder",
    "evaluate",
    "evaluate_aligner",
    "evaluate_chunks",
    "fit_aligner",
    "fit_exact",
    "fit_sgd",
    "iter_chunks",
    "open_feature_file",
    "save_feature_file",
]
