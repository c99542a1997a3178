"""InfoNCE on the mined list and the batch, plus listwise KL distillation to a teacher's soft labels."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn


class InfoNCEDistillLoss(nn.Module):
    """Hard labels and soft labels in one loss:

    ``loss = infonce_weight * MNRL(q; d+, mined d-, in-batch d) + distill_weight * KL(p_teacher || p_student)``

    - MNRL is sentence-transformers' ``MultipleNegativesRankingLoss`` (cosine x ``scale``): the
      positive against the row's mined negatives and every other document of the batch.
    - The KL term is sentence-transformers' ``DistillKLDivLoss`` (on cosines, as MNRL) over the row's own list
      [positive, negative_1..n]: ``p_teacher = softmax(label / teacher_temperature)``,
      ``p_student = softmax(cos / student_temperature)``. ``DistillKLDivLoss`` multiplies by
      ``student_temperature**2`` (Hinton's gradient correction); that factor is divided out here, so at
      ``student_temperature = 1 / scale`` both terms push the cosines with gradients of one size
      (``scale * (p - q)``) and ``distill_weight`` means what it says.

    The soft labels tell the student how much better the positive is than each negative, and which
    negatives are nearly as relevant as the positive (likely false negatives get a large teacher
    probability instead of being pushed away); the hard term keeps the in-batch negatives that a
    listwise KL alone never sees. This is the combination of RocketQAv2 (Ren et al., EMNLP 2021:
    listwise distillation over the mined list) and of TAS-B / GPL-style soft labels (Hofstätter et al.,
    SIGIR 2021; Wang et al., NAACL 2022) with the in-batch contrastive loss, as LG-ANNA and UniME-V2 use a
    stronger model's scores of the mined list as soft targets.

    Args:
        model: the SentenceTransformer student.
        distill_weight: weight of the KL term (0: plain MNRL with hard negatives).
        infonce_weight: weight of the MNRL term (0: listwise KL alone, at MNRL's gradient scale).
        scale: MNRL's inverse temperature (sentence-transformers' default 20).
        teacher_temperature: softmax temperature of the labels (fused z-scores: about 1).
        student_temperature: softmax temperature of the student's cosines (default ``1 / scale``).

    Inputs:
        +-------------------------------------------------+-----------------------------------------------+
        | Texts                                           | Labels                                        |
        +=================================================+===============================================+
        | (anchor, positive, negative_1, ..., negative_n) | teacher scores [s(q, d+), s(q, d-_1), ...]    |
        +-------------------------------------------------+-----------------------------------------------+

    Example::

        hardneg mine --dataset scifact --teacher dense --score-with bm25:stem --out runs/sf
        hardneg train --run runs/sf --out models/sf --loss mnrl-kl --teacher-scores all --distill-weight 1
    """

    def __init__(self, model: Any, distill_weight: float = 1.0, infonce_weight: float = 1.0, scale: float = 20.0,
                 teacher_temperature: float = 1.0, student_temperature: float | None = None):
        super().__init__()
        from sentence_transformers.sentence_transformer import losses
        from sentence_transformers.util import pairwise_cos_sim

        self.model = model
        self.distill_weight, self.infonce_weight = float(distill_weight), float(infonce_weight)
        self.student_temperature = float(student_temperature if student_temperature is not None else 1.0 / scale)
        self.mnrl = losses.MultipleNegativesRankingLoss(model, scale=scale)
        self.kl = losses.DistillKLDivLoss(model, similarity_fct=pairwise_cos_sim,
                                          teacher_temperature=teacher_temperature,
                                          student_temperature=self.student_temperature)
        self.last_terms: dict[str, float] = {}

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        embeddings = [self.model(f)["sentence_embedding"] for f in sentence_features]
        return self.compute_loss_from_embeddings(embeddings, labels)

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor) -> Tensor:
        total = torch.zeros((), device=embeddings[0].device)
        if self.infonce_weight:
            hard = self.mnrl.compute_loss_from_embeddings(embeddings, labels)
            total = total + self.infonce_weight * hard
            self.last_terms["infonce"] = float(hard.detach())
        if self.distill_weight:
            soft = self.kl.compute_loss_from_embeddings(embeddings, labels) / self.student_temperature ** 2
            total = total + self.distill_weight * soft
            self.last_terms["kl"] = float(soft.detach())
        return total

    def get_config_dict(self) -> dict[str, Any]:
        return {"distill_weight": self.distill_weight, "infonce_weight": self.infonce_weight,
                "scale": self.mnrl.scale, "teacher_temperature": self.kl.teacher_temperature,
                "student_temperature": self.student_temperature}
