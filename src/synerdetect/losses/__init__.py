"""The training objectives: optimal transport (Eq. 3-6, ``ot``) and discriminative contrastive learning
(Eq. 7, ``contrastive``)."""
