"""Task-agnostic backdoor attacks for evaluating the scanner (method.md §5).

POR, POR-NER, NeuBA and BToP map trigger words to pre-defined vectors. Never imported by
``lmsan.mining``: the scanner must not know the attack.
"""

from lmsan.attacks.config import AttackConfig, KIND_TARGET, draw_triggers, por2_pvs, random_sign_pvs
from lmsan.attacks.train import ATTACK_FILE, AttackResult, run_attack
from lmsan.attacks.verify import VerifyReport, verify_attack
from lmsan.attacks.zoo import MINILM_ATTACKS, MINILM_POR, STANDARD_ATTACKS, attacked_model, minilm_attack, standard_attack

__all__ = ["AttackConfig", "AttackResult", "MINILM_ATTACKS", "MINILM_POR", "STANDARD_ATTACKS", "attacked_model", "minilm_attack",
           "standard_attack", "ATTACK_FILE", "KIND_TARGET", "VerifyReport", "draw_triggers",
           "por2_pvs", "random_sign_pvs", "run_attack", "verify_attack"]
