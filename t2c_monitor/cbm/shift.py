"""How a monitor's classes' concept evidence shifted in an audit, through its concept bottleneck model.

For the baseline's vector sample and the window's aligned vectors, the model's standardised concept
similarities ``z``: a class's logit moves by ``W[c] . (mean z_window - mean z_baseline)``, which is a
sum of per-concept parts. For each class the audit reports its predicted share before and after,
its logit shift, and the concepts whose evidence for it moved most (only concepts the class uses:
the head is sparse). "star: +4% of predictions; evidence: more 'star' +0.8, less 'circle' +0.2".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from t2c_monitor.cbm.model import ConceptBottleneck


@dataclass(frozen=True)
class ClassShift:
    name: str
    share_before: float  # of the baseline's images predicted as this class
    share_after: float
    logit_shift: float  # mean logit change
    concepts: list[tuple[str, float]]  # (concept, its part of the logit change), largest magnitude first

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "share_before": self.share_before, "share_after": self.share_after,
                "logit_shift": self.logit_shift, "concepts": [[c, v] for c, v in self.concepts]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClassShift:
        return cls(d["name"], float(d["share_before"]), float(d["share_after"]), float(d["logit_shift"]),
                   [(str(c), float(v)) for c, v in d.get("concepts", [])])


@dataclass(frozen=True)
class EvidenceShift:
    model: str  # where the model is
    classes: list[ClassShift]  # largest change of predicted share first

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "classes": [c.to_dict() for c in self.classes]}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> EvidenceShift | None:
        if not d:
            return None
        return cls(str(d.get("model", "")), [ClassShift.from_dict(c) for c in d.get("classes", [])])


def evidence_shift(model: ConceptBottleneck, baseline: np.ndarray, window: np.ndarray, *, where: str = "",
                   top: int = 5) -> EvidenceShift:
    """Each class's predicted share and concept evidence, window against baseline (see the module doc)."""
    import torch

    zb = model.standardised(torch.tensor(np.array(baseline, dtype=np.float32)))
    zw = model.standardised(torch.tensor(np.array(window, dtype=np.float32)))
    n_classes = len(model.classes)
    before = torch.bincount((zb @ model.weight.T + model.bias).argmax(1), minlength=n_classes).float() / len(zb)
    after = torch.bincount((zw @ model.weight.T + model.bias).argmax(1), minlength=n_classes).float() / len(zw)
    parts = model.weight * (zw.mean(0) - zb.mean(0))[None]  # (C, K)
    classes = []
    for c, name in enumerate(model.classes):
        used = torch.nonzero(model.weight[c]).flatten().tolist()
        ranked = sorted(used, key=lambda k: -abs(float(parts[c, k])))[:top]
        classes.append(ClassShift(name, float(before[c]), float(after[c]), float(parts[c].sum()),
                                  [(model.concept_names[k], float(parts[c, k])) for k in ranked]))
    classes.sort(key=lambda s: -abs(s.share_after - s.share_before))
    return EvidenceShift(where, classes)
