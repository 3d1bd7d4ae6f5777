"""The ScaledObject annotations Tidal honours, parsed once into a frozen value.

KEDA reads these with Go's ``strconv.ParseBool``: "1, t, T, TRUE, true, True" are true and
"0, f, F, FALSE, false, False" are false. For ``paused`` (and, by the same safe-side reasoning,
``paused-scale-in`` / ``paused-scale-out``) any other value counts as TRUE: a user who wrote
``paused: "yes"`` wants it paused. ``force-activation`` and ``transfer-hpa-ownership`` only act on
a value that parses as true: forcing replicas up or adopting an HPA on a typo would be unsafe.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from scaler.errors import ConfigError
from scaler.values import parse_bool_or

PAUSED = "autoscaling.keda.sh/paused"
PAUSED_REPLICAS = "autoscaling.keda.sh/paused-replicas"
PAUSED_SCALE_IN = "autoscaling.keda.sh/paused-scale-in"
PAUSED_SCALE_OUT = "autoscaling.keda.sh/paused-scale-out"
FORCE_ACTIVATION = "autoscaling.keda.sh/force-activation"
TRANSFER_HPA_OWNERSHIP = "scaledobject.keda.sh/transfer-hpa-ownership"
HPA_EXCLUDED_LABELS = "scaledobject.keda.sh/hpa-excluded-labels"
HPA_OWNERSHIP_VALIDATION = "validations.keda.sh/hpa-ownership"


def _flag(annotations: Mapping[str, str], key: str, *, invalid_means: bool) -> bool:
    if key not in annotations:
        return False
    return parse_bool_or(annotations[key], invalid=invalid_means)


@dataclass(frozen=True, slots=True)
class Annotations:
    """What the annotations ask for. `paused` is true for paused OR paused-replicas."""

    paused: bool = False
    paused_replicas: int | None = None
    pause_scale_in: bool = False
    pause_scale_out: bool = False
    force_activation: bool = False
    transfer_hpa_ownership: bool = False
    hpa_excluded_labels: frozenset[str] = frozenset()


NO_ANNOTATIONS = Annotations()


def collect_annotations(annotations: Mapping[str, str], problems: list[str]) -> Annotations:
    """Parse; append each problem found to `problems` (used by parse_scaled_object)."""
    paused_replicas: int | None = None
    has_paused_replicas = PAUSED_REPLICAS in annotations
    if has_paused_replicas:
        raw = annotations[PAUSED_REPLICAS].strip()
        try:
            paused_replicas = int(raw, 10)
        except ValueError:
            problems.append(
                f"invalid value {raw!r} for annotation {PAUSED_REPLICAS}: not an integer"
            )
        else:
            if paused_replicas < 0:
                problems.append(
                    f"invalid value {raw!r} for annotation {PAUSED_REPLICAS}: must be >= 0"
                )
                paused_replicas = None
    excluded = frozenset(
        part.strip() for part in annotations.get(HPA_EXCLUDED_LABELS, "").split(",") if part.strip()
    )
    return Annotations(
        # Presence of paused-replicas alone means paused, even if its value is bad: the user
        # clearly asked for the object to stop scaling.
        paused=has_paused_replicas or _flag(annotations, PAUSED, invalid_means=True),
        paused_replicas=paused_replicas,
        pause_scale_in=_flag(annotations, PAUSED_SCALE_IN, invalid_means=True),
        pause_scale_out=_flag(annotations, PAUSED_SCALE_OUT, invalid_means=True),
        force_activation=_flag(annotations, FORCE_ACTIVATION, invalid_means=False),
        transfer_hpa_ownership=_flag(annotations, TRANSFER_HPA_OWNERSHIP, invalid_means=False),
        hpa_excluded_labels=excluded,
    )


def parse_annotations(annotations: Mapping[str, str]) -> Annotations:
    """Parse the annotations; raise ConfigError listing every problem."""
    problems: list[str] = []
    parsed = collect_annotations(annotations, problems)
    if problems:
        raise ConfigError(problems)
    return parsed
