"""Federated learning: synthetic federations, FedAvg, and membership inference between learners.

The setting of Gupta et al. (MIDL 2021): learners train a brain-age model with FedAvg, each
holds the community model of every round, trains an attack on its own scans and unseen
scans, and attacks the other learners' scans. Typical use::

    from worker.engine.federated import list_rounds, run_federated_assessment

    result = run_federated_assessment(list_rounds(folder), manifest)
    result.report["federated"]["matrix"]["accuracy"]   # attacker x victim
"""

from .assessment import FederatedAssessmentResult, run_federated_assessment
from .attack import AttacksCancelled, FederatedAttackResult, run_federated_attacks
from .demo import FederatedDemoArtifacts, FederatedDemoOptions, prepare_federated_demo
from .draws import AttackerDraw, check_draw, draw_attacks, federation_labels
from .fedavg import RoundInfo, average_states, list_rounds, round_path, save_rounds, train_fedavg
from .inputs import is_rounds_archive, resolve_rounds, rounds_folder
from .options import SCOPES, FederatedAttackOptions, FederatedAttackSpec, attack_specs
from .rounds import ModelRef, round_features
from .split import (
    AGE_SCHEMES,
    SIZE_SCHEMES,
    FederationSplit,
    learner_names,
    learner_sizes,
    split_federation,
    write_federated_cohort,
)
from .trajectory import TRAJECTORY_SETS, register_trajectory_set, trajectory_matrix

__all__ = [
    "AGE_SCHEMES", "SCOPES", "SIZE_SCHEMES", "TRAJECTORY_SETS",
    "AttackerDraw", "AttacksCancelled", "FederatedAssessmentResult", "FederatedAttackOptions",
    "FederatedAttackResult", "FederatedAttackSpec", "FederatedDemoArtifacts", "FederatedDemoOptions",
    "FederationSplit", "ModelRef", "RoundInfo",
    "attack_specs", "average_states", "check_draw", "draw_attacks", "federation_labels",
    "is_rounds_archive", "learner_names", "learner_sizes", "list_rounds", "prepare_federated_demo",
    "register_trajectory_set", "resolve_rounds", "round_features", "round_path", "rounds_folder",
    "run_federated_assessment", "run_federated_attacks", "save_rounds", "split_federation", "train_fedavg",
    "trajectory_matrix", "write_federated_cohort",
]
