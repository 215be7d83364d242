"""How good a model is: the streaming mIoU metrics (`metrics`, also used in
training), per-class scores from a confusion matrix (`scores`), evaluating a
model on a dataset (`evaluate`) and the report files (`report`)."""

from keras_deeplab.utils.lazy import lazy_attributes

_PUBLIC = {
    "evaluate_model": "keras_deeplab.evaluation.evaluate",
    "format_results": "keras_deeplab.evaluation.evaluate",
    "write_report": "keras_deeplab.evaluation.report",
}
__all__ = list(_PUBLIC)
__getattr__ = lazy_attributes(__name__, _PUBLIC)
